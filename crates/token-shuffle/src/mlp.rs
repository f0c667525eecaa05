use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, activation::gelu, backend::Backend};

/// Configuration of a [`ResidualMlp`] block.
///
/// The paper fixes neither the width nor the activation of its fusion MLPs. We use a pre-norm block,
/// `x + W₂·GELU(W₁·LayerNorm(x))`, with a hidden width equal to the model width by default: the block
/// then costs 2·d² parameters, and two of them on each side of the Transformer (the paper's default) stay
/// small next to a decoder layer (~12·d²).
#[derive(Config, Debug)]
pub struct ResidualMlpConfig {
    /// Width of the tokens the block reads and writes.
    pub d_model: usize,
    /// Hidden width. Default: `None`, meaning `d_model`.
    #[config(default = "None")]
    pub d_hidden: Option<usize>,
}

/// A residual MLP block: `x + W₂·GELU(W₁·LayerNorm(x))`.
///
/// Fuses the s² channel groups of a merged token (before the Transformer) or mixes them before splitting
/// (after it). Create it with [`ResidualMlpConfig::init`].
#[derive(Module, Debug)]
pub struct ResidualMlp<B: Backend> {
    norm: LayerNorm<B>,
    expand: Linear<B>,
    project: Linear<B>,
}

impl ResidualMlpConfig {
    /// Builds the block with freshly initialised weights on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualMlp<B> {
        let hidden = self.d_hidden.unwrap_or(self.d_model);
        ResidualMlp {
            norm: LayerNormConfig::new(self.d_model).init(device),
            expand: LinearConfig::new(self.d_model, hidden).init(device),
            project: LinearConfig::new(hidden, self.d_model).init(device),
        }
    }
}

impl<B: Backend> ResidualMlp<B> {
    /// Applies the block to every token.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - output: `[..., d_model]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::on_rows(x, |x| {
            let update = self
                .project
                .forward(gelu(self.expand.forward(self.norm.forward(x.clone()))));
            x + update
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend as B;

    #[test]
    fn zero_output_projection_makes_the_block_an_identity() {
        let device = Default::default();
        let mut block = ResidualMlpConfig::new(8).init::<B>(&device);
        block.project.weight = block.project.weight.map(|w| w.zeros_like());
        block.project.bias = block.project.bias.map(|b| b.map(|b| b.zeros_like()));
        let x = Tensor::<B, 3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        block.forward(x.clone()).into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn hidden_width_defaults_to_model_width() {
        let device = Default::default();
        let block = ResidualMlpConfig::new(8).init::<B>(&device);
        // LayerNorm 2·8, expand 8·8 + 8, project 8·8 + 8.
        assert_eq!(block.num_params(), 16 + 72 + 72);
        let wide = ResidualMlpConfig::new(8).with_d_hidden(Some(32)).init::<B>(&device);
        assert_eq!(wide.num_params(), 16 + (8 * 32 + 32) + (32 * 8 + 8));
        let x = Tensor::<B, 2>::random([3, 8], Distribution::Default, &device);
        let y = wide.forward(x.clone());
        assert_eq!(y.dims(), [3, 8]);
        // The block is not an identity at initialisation: it really mixes channels.
        assert!(!y.all_close(x, None, Some(1e-3)));
    }
}
