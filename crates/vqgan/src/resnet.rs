use crate::conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};

use crate::{GroupNorm, GroupNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};

/// GroupNorm as taming and LlamaGen use it (ε = 1e-6, affine).
pub(crate) fn group_norm<B: Backend>(groups: usize, channels: usize, device: &B::Device) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels).init(device)
}

/// A 3×3 convolution that keeps the spatial size.
pub(crate) fn conv3x3<B: Backend>(channels_in: usize, channels_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A 1×1 convolution (a per-pixel linear map).
pub(crate) fn conv1x1<B: Backend>(channels_in: usize, channels_out: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([channels_in, channels_out], [1, 1]).init(device)
}

/// Configuration of a [`ResnetBlock`].
#[derive(Config, Debug)]
pub struct ResnetBlockConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels; a 1×1 shortcut convolution is added when they differ from the input's.
    pub channels_out: usize,
    /// GroupNorm groups; must divide both channel counts. Default: 32 (LlamaGen).
    #[config(default = 32)]
    pub norm_groups: usize,
}

/// The taming / LlamaGen residual block: `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
///
/// Field names follow LlamaGen's `ResnetBlock` so that its checkpoints load key for key.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    nin_shortcut: Option<Conv2d<B>>,
}

impl ResnetBlockConfig {
    /// Builds the block on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResnetBlock<B> {
        ResnetBlock {
            norm1: group_norm(self.norm_groups, self.channels_in, device),
            conv1: conv3x3(self.channels_in, self.channels_out, device),
            norm2: group_norm(self.norm_groups, self.channels_out, device),
            conv2: conv3x3(self.channels_out, self.channels_out, device),
            nin_shortcut: (self.channels_in != self.channels_out)
                .then(|| conv1x1(self.channels_in, self.channels_out, device)),
        }
    }
}

impl<B: Backend> ResnetBlock<B> {
    /// # Shapes
    /// - input `[batch, channels_in, height, width]`
    /// - output `[batch, channels_out, height, width]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = conv2d(&self.conv1, silu(self.norm1.forward(x.clone())));
        let h = conv2d(&self.conv2, silu(self.norm2.forward(h)));
        let shortcut = match &self.nin_shortcut {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        shortcut + h
    }
}

/// Runs residual blocks in turn, each followed by its attention block where the level has them (the lowest
/// resolution level of the encoder and the decoder).
pub(crate) fn residual_stack<B: Backend>(
    res: &[ResnetBlock<B>],
    attn: &[crate::AttnBlock<B>],
    mut h: Tensor<B, 4>,
) -> Tensor<B, 4> {
    for (i, block) in res.iter().enumerate() {
        h = block.forward(h);
        if let Some(attn) = attn.get(i) {
            h = attn.forward(h);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn a_block_with_new_width_gets_a_shortcut_and_keeps_the_spatial_size() {
        let device = Default::default();
        let same = ResnetBlockConfig::new(8, 8)
            .with_norm_groups(4)
            .init::<TestBackend>(&device);
        let wider = ResnetBlockConfig::new(8, 16)
            .with_norm_groups(4)
            .init::<TestBackend>(&device);
        assert!(same.nin_shortcut.is_none());
        assert!(wider.nin_shortcut.is_some());
        let x = Tensor::<TestBackend, 4>::ones([2, 8, 5, 3], &device);
        assert_eq!(wider.forward(x).dims(), [2, 16, 5, 3]);
    }
}
