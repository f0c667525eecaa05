use crate::conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};

use crate::GroupNorm;
use crate::resnet::{conv1x1, group_norm};

/// Configuration of an [`AttnBlock`].
#[derive(Config, Debug)]
pub struct AttnBlockConfig {
    /// Channels C.
    pub channels: usize,
    /// GroupNorm groups. Default: 32 (LlamaGen).
    #[config(default = 32)]
    pub norm_groups: usize,
}

/// Single-head self-attention over all pixels of a feature map, with a residual connection (taming's `AttnBlock`).
///
/// q, k, v and the output projection are 1×1 convolutions, named as in LlamaGen.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    norm: GroupNorm<B>,
    q: Conv2d<B>,
    k: Conv2d<B>,
    v: Conv2d<B>,
    proj_out: Conv2d<B>,
}

impl AttnBlockConfig {
    /// Builds the block on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AttnBlock<B> {
        AttnBlock {
            norm: group_norm(self.norm_groups, self.channels, device),
            q: conv1x1(self.channels, self.channels, device),
            k: conv1x1(self.channels, self.channels, device),
            v: conv1x1(self.channels, self.channels, device),
            proj_out: conv1x1(self.channels, self.channels, device),
        }
    }
}

impl<B: Backend> AttnBlock<B> {
    /// # Shapes
    /// - input and output `[batch, channels, height, width]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, channels, height, width] = x.dims();
        let h = self.norm.forward(x.clone());
        // [B, C, H, W] -> [B, 1 head, H·W, C]: each pixel is a query/key/value of width C.
        let as_sequence = |t: Tensor<B, 4>| t.reshape([batch, 1, channels, height * width]).swap_dims(2, 3);
        let q = as_sequence(conv2d(&self.q, h.clone()));
        let k = as_sequence(conv2d(&self.k, h.clone()));
        let v = as_sequence(conv2d(&self.v, h));
        let options = AttentionModuleOptions {
            scale: Some((channels as f64).powf(-0.5)),
            softcap: None,
            is_causal: false,
        };
        let out = attention(q, k, v, None, None, options);
        let out = out.swap_dims(2, 3).reshape([batch, channels, height, width]);
        x + conv2d(&self.proj_out, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend;

    /// LlamaGen's attention written out with matmuls; the fused kernel must agree with it.
    #[test]
    fn matches_attention_written_out() {
        let device = Default::default();
        let block = AttnBlockConfig::new(8).with_norm_groups(2).init::<TestBackend>(&device);
        let x = Tensor::<TestBackend, 4>::random([2, 8, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let h = block.norm.forward(x.clone());
        let flat = |t: Tensor<TestBackend, 4>| t.reshape([2, 8, 12]);
        let (q, k, v) = (
            flat(block.q.forward(h.clone())),
            flat(block.k.forward(h.clone())),
            flat(block.v.forward(h)),
        );
        let weights = burn::tensor::activation::softmax(q.swap_dims(1, 2).matmul(k) / 8f32.sqrt(), 2);
        let out = v.matmul(weights.swap_dims(1, 2)).reshape([2, 8, 3, 4]);
        let expected = x.clone() + block.proj_out.forward(out);
        block
            .forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }
}
