use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::shuffle::check_width;
use crate::{Fusion, ShuffleError, TokenShuffleConfig, WindowFusion};

/// Configuration of [`TokenUnshuffle`], the split after the Transformer.
///
/// Usually the mirror of the model's [`TokenShuffleConfig`]: `TokenUnshuffleConfig::from(&shuffle_config)`.
#[derive(Config, Debug)]
pub struct TokenUnshuffleConfig {
    /// Width d of the Transformer's output tokens, and of the s² tokens each one is split into.
    pub d_model: usize,
    /// Window size s: each token is split into s² tokens. Default: 2. s = 1 is a reshape with no parameters.
    #[config(default = 2)]
    pub window: usize,
    /// Number of residual MLP blocks before the split. Default: 2.
    #[config(default = 2)]
    pub mlp_blocks: usize,
    /// The fusion variant of the matching [`TokenShuffle`](crate::TokenShuffle). [`Fusion::Linear`] uses one d × d
    /// linear layer in place of the MLP blocks; the other two use the MLP blocks. Default: [`Fusion::ResidualMlp`].
    #[config(default = "Fusion::ResidualMlp")]
    pub fusion: Fusion,
    /// Hidden width of the MLP blocks. Default: `None`, meaning `d_model`.
    #[config(default = "None")]
    pub mlp_hidden: Option<usize>,
}

impl From<&TokenShuffleConfig> for TokenUnshuffleConfig {
    fn from(shuffle: &TokenShuffleConfig) -> Self {
        Self {
            d_model: shuffle.d_model,
            window: shuffle.window,
            mlp_blocks: shuffle.mlp_blocks,
            fusion: shuffle.fusion,
            mlp_hidden: shuffle.mlp_hidden,
        }
    }
}

/// Token-unshuffle: splits each Transformer output token back into the s² tokens of a window.
///
/// With `E` a shared d/s² × d linear layer:
///
/// `unshuffle(y)[n, k] = E · split(MLPₖ(…MLP₁(y)))[n, k]`, for the window's k-th token (row-major), `0 ≤ k < s²`.
///
/// An LM head on each of the s² outputs then predicts the s² codes of the next window in parallel.
/// Create it with [`TokenUnshuffleConfig::init`].
#[derive(Module, Debug)]
pub struct TokenUnshuffle<B: Backend> {
    /// Channel mixing before the split; `None` for s = 1.
    fuse: Option<WindowFusion<B>>,
    /// The shared d/s² → d expansion of each split token; `None` for s = 1.
    expand: Option<Linear<B>>,
    window: usize,
    d_model: usize,
}

impl TokenUnshuffleConfig {
    /// Builds the module with freshly initialised weights on `device`.
    ///
    /// # Errors
    /// [`ShuffleError::ZeroWindow`] for s = 0, [`ShuffleError::WidthNotDivisible`] when s² does not divide d.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<TokenUnshuffle<B>, ShuffleError> {
        check_width(self.d_model, self.window)?;
        let s2 = self.window * self.window;
        let (fuse, expand) = if self.window == 1 {
            (None, None)
        } else {
            let fusion = self.fusion.unshuffle_side();
            (
                Some(WindowFusion::new(
                    fusion,
                    self.d_model,
                    self.mlp_blocks,
                    self.mlp_hidden,
                    device,
                )),
                Some(LinearConfig::new(self.d_model / s2, self.d_model).init(device)),
            )
        };
        Ok(TokenUnshuffle {
            fuse,
            expand,
            window: self.window,
            d_model: self.d_model,
        })
    }
}

impl<B: Backend> TokenUnshuffle<B> {
    /// The window size s.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Splits every token into the s² tokens of its window, row-major inside the window.
    ///
    /// Pass the result through `window_split` (after a reshape to `[B, N, s²·d]`) to lay it out as a grid.
    ///
    /// # Shapes
    /// - `tokens`: `[B, N, d]`, Transformer outputs at the N window positions
    /// - output: `[B, N, s², d]`
    ///
    /// # Errors
    /// [`ShuffleError::WidthMismatch`] when the tokens are not `d_model` wide.
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Result<Tensor<B, 4>, ShuffleError> {
        let [batch, windows, d] = tokens.dims();
        if d != self.d_model {
            return Err(ShuffleError::WidthMismatch {
                expected: self.d_model,
                got: d,
            });
        }
        let s2 = self.window * self.window;
        let mixed = match &self.fuse {
            Some(fuse) => fuse.forward(tokens),
            None => tokens,
        };
        let split = mixed.reshape([batch, windows, s2, d / s2]);
        Ok(match &self.expand {
            Some(expand) => crate::on_rows(split, |t| expand.forward(t)),
            None => split,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TokenShuffleConfig, window_merge, window_split};
    use burn::tensor::Distribution;
    use token_shuffle_test_support::{TestAutodiffBackend, TestBackend as B, assert_every_parameter_has_gradient};

    fn tokens(batch: usize, n: usize, d: usize) -> Tensor<B, 3> {
        Tensor::random([batch, n, d], Distribution::Normal(0.0, 1.0), &Default::default())
    }

    #[test]
    fn splits_every_token_into_s_squared_tokens() {
        let device = Default::default();
        for fusion in [Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken] {
            for s in [1, 2, 4] {
                let unshuffle = TokenUnshuffleConfig::new(32)
                    .with_window(s)
                    .with_fusion(fusion)
                    .init::<B>(&device)
                    .unwrap();
                assert_eq!(unshuffle.forward(tokens(2, 6, 32)).unwrap().dims(), [2, 6, s * s, 32]);
            }
        }
    }

    #[test]
    fn window_one_is_the_parameter_free_baseline() {
        let unshuffle = TokenUnshuffleConfig::new(16)
            .with_window(1)
            .init::<B>(&Default::default())
            .unwrap();
        assert_eq!(unshuffle.num_params(), 0);
        let y = tokens(2, 7, 16);
        unshuffle
            .forward(y.clone())
            .unwrap()
            .into_data()
            .assert_eq(&y.reshape([2, 7, 1, 16]).into_data(), true);
    }

    #[test]
    fn mirrors_the_shuffle_config() {
        let shuffle = TokenShuffleConfig::new(64)
            .with_window(4)
            .with_mlp_blocks(3)
            .with_fusion(Fusion::Linear);
        let unshuffle = TokenUnshuffleConfig::from(&shuffle);
        assert_eq!((unshuffle.d_model, unshuffle.window, unshuffle.mlp_blocks), (64, 4, 3));
        assert_eq!(unshuffle.fusion, Fusion::Linear);
    }

    #[test]
    fn output_token_k_depends_only_on_its_channel_group_after_mixing() {
        // With no MLP blocks the unshuffle is split + expand: the k-th output token reads only channels
        // [k·d/s², (k+1)·d/s²) of its input token.
        let device = Default::default();
        let unshuffle = TokenUnshuffleConfig::new(16)
            .with_mlp_blocks(0)
            .init::<B>(&device)
            .unwrap();
        let y = tokens(1, 1, 16);
        let base = unshuffle.forward(y.clone()).unwrap();
        let bumped = y.slice_assign([0..1, 0..1, 8..12], Tensor::ones([1, 1, 4], &device) * 4.0);
        let diff = (unshuffle.forward(bumped).unwrap() - base).abs().sum_dim(3);
        let changed: Vec<bool> = diff
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| *v > 1e-6)
            .collect();
        assert_eq!(changed, vec![false, false, true, false]);
    }

    #[test]
    fn width_errors_are_named() {
        let err = TokenUnshuffleConfig::new(30)
            .with_window(2)
            .init::<B>(&Default::default())
            .unwrap_err();
        assert_eq!(err, ShuffleError::WidthNotDivisible { d_model: 30, window: 2 });
        let unshuffle = TokenUnshuffleConfig::new(16).init::<B>(&Default::default()).unwrap();
        assert_eq!(
            unshuffle.forward(tokens(1, 2, 12)).unwrap_err(),
            ShuffleError::WidthMismatch { expected: 16, got: 12 }
        );
    }

    #[test]
    fn gradients_reach_every_parameter() {
        let device = Default::default();
        for fusion in [Fusion::ResidualMlp, Fusion::Linear] {
            let unshuffle = TokenUnshuffleConfig::new(16)
                .with_fusion(fusion)
                .init::<TestAutodiffBackend>(&device)
                .unwrap();
            let y = Tensor::random([2, 3, 16], Distribution::Normal(0.0, 1.0), &device);
            assert_every_parameter_has_gradient(&unshuffle, unshuffle.forward(y).unwrap().powi_scalar(2).sum());
        }
    }

    #[test]
    fn shuffle_then_unshuffle_returns_to_the_grid_layout() {
        // The full path of the model, minus the Transformer: grid → tokens → per-window tokens → grid.
        let device = Default::default();
        let config = TokenShuffleConfig::new(16);
        let shuffle = config.init::<B>(&device).unwrap();
        let unshuffle = TokenUnshuffleConfig::from(&config).init::<B>(&device).unwrap();
        let x = Tensor::<B, 4>::random([2, 4, 6, 16], Distribution::Normal(0.0, 1.0), &device);
        let per_window = unshuffle.forward(shuffle.forward(x).unwrap()).unwrap();
        assert_eq!(per_window.dims(), [2, 6, 4, 16]);
        let grid = window_split(per_window.clone().reshape([2, 6, 64]), [4, 6], 2).unwrap();
        assert_eq!(grid.dims(), [2, 4, 6, 16]);
        // And the layout agrees with window_merge's order.
        window_merge(grid, 2)
            .unwrap()
            .into_data()
            .assert_eq(&per_window.reshape([2, 6, 64]).into_data(), true);
    }
}
