use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::{Fusion, ShuffleError, WindowFusion, window_merge};

/// Configuration of [`TokenShuffle`], the merge before the Transformer.
///
/// ```
/// # use token_shuffle::{Fusion, TokenShuffleConfig};
/// let config = TokenShuffleConfig::new(3072).with_window(2).with_fusion(Fusion::ResidualMlp);
/// assert_eq!(config.mlp_blocks, 2);
/// ```
#[derive(Config, Debug)]
pub struct TokenShuffleConfig {
    /// Width d of the image-token embeddings, and of the Transformer tokens the module produces.
    pub d_model: usize,
    /// Window size s: each s×s window of the token grid becomes one token. Default: 2, the paper's choice.
    /// s = 1 is the no-shuffle baseline: the module is then a reshape with no parameters.
    #[config(default = 2)]
    pub window: usize,
    /// Number of residual MLP blocks after the merge. Default: 2 (the paper found 4 and 6 no better).
    #[config(default = 2)]
    pub mlp_blocks: usize,
    /// How a window is fused into one token. Default: [`Fusion::ResidualMlp`], the paper's design.
    #[config(default = "Fusion::ResidualMlp")]
    pub fusion: Fusion,
    /// Hidden width of the MLP blocks. Default: `None`, meaning `d_model`.
    #[config(default = "None")]
    pub mlp_hidden: Option<usize>,
}

/// Token-shuffle: merges each s×s window of image-token embeddings into one token of the same width d.
///
/// For the paper's design ([`Fusion::ResidualMlp`]), with `P` a shared d × d/s² linear layer:
///
/// `shuffle(x) = MLPₖ(…MLP₁(window_merge(P·x, s)))`,
///
/// so the Transformer sees (H/s)·(W/s) image tokens instead of H·W. Create it with [`TokenShuffleConfig::init`].
#[derive(Module, Debug)]
pub struct TokenShuffle<B: Backend> {
    /// The shared d → d/s² compression; `None` when the window is not compressed (s = 1, [`Fusion::LastToken`]).
    compress: Option<Linear<B>>,
    /// The channel mixing of the merged token; `None` for s = 1.
    fuse: Option<WindowFusion<B>>,
    window: usize,
    d_model: usize,
    /// Configuration, not a parameter: it selects the code path in `forward`.
    #[module(skip)]
    fusion: Fusion,
}

/// Checks that d splits into s² equal channel groups.
///
/// # Errors
/// [`ShuffleError::ZeroWindow`] for s = 0, [`ShuffleError::WidthNotDivisible`] when s² does not divide d.
pub fn check_width(d_model: usize, window: usize) -> Result<(), ShuffleError> {
    if window == 0 {
        return Err(ShuffleError::ZeroWindow);
    }
    if !d_model.is_multiple_of(window * window) {
        return Err(ShuffleError::WidthNotDivisible { d_model, window });
    }
    Ok(())
}

impl TokenShuffleConfig {
    /// Builds the module with freshly initialised weights on `device`.
    ///
    /// # Errors
    /// [`ShuffleError::ZeroWindow`] for s = 0, [`ShuffleError::WidthNotDivisible`] when s² does not divide d.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<TokenShuffle<B>, ShuffleError> {
        check_width(self.d_model, self.window)?;
        let s2 = self.window * self.window;
        let (compress, fuse) = if self.window == 1 {
            (None, None)
        } else {
            let compress = self
                .fusion
                .compresses()
                .then(|| LinearConfig::new(self.d_model, self.d_model / s2).init(device));
            let fuse = WindowFusion::new(self.fusion, self.d_model, self.mlp_blocks, self.mlp_hidden, device);
            (compress, Some(fuse))
        };
        Ok(TokenShuffle {
            compress,
            fuse,
            window: self.window,
            d_model: self.d_model,
            fusion: self.fusion,
        })
    }
}

impl<B: Backend> TokenShuffle<B> {
    /// The window size s.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Merges the image-token grid into (H/s)·(W/s) Transformer tokens, in raster order of the windows.
    ///
    /// # Shapes
    /// - `tokens`: `[B, H, W, d]`, the embedded code grid
    /// - output: `[B, (H/s)·(W/s), d]`
    ///
    /// # Errors
    /// [`ShuffleError::WidthMismatch`] when the tokens are not `d_model` wide, [`ShuffleError::GridNotDivisible`]
    /// when s does not divide H and W.
    pub fn forward(&self, tokens: Tensor<B, 4>) -> Result<Tensor<B, 3>, ShuffleError> {
        let [batch, height, width, d] = tokens.dims();
        if d != self.d_model {
            return Err(ShuffleError::WidthMismatch {
                expected: self.d_model,
                got: d,
            });
        }
        let s = self.window;
        let merged = match (&self.compress, self.fusion) {
            (Some(compress), _) => window_merge(crate::on_rows(tokens, |t| compress.forward(t)), s)?,
            (None, Fusion::LastToken) if s > 1 => {
                let windows = (height / s) * (width / s);
                window_merge(tokens, s)?
                    .reshape([batch, windows, s * s, d])
                    .narrow(2, s * s - 1, 1)
                    .reshape([batch, windows, d])
            }
            (None, _) => window_merge(tokens, s)?,
        };
        Ok(match &self.fuse {
            Some(fuse) => fuse.forward(merged),
            None => merged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use token_shuffle_test_support::{TestAutodiffBackend, TestBackend as B, assert_every_parameter_has_gradient};

    fn grid(batch: usize, h: usize, w: usize, d: usize) -> Tensor<B, 4> {
        Tensor::random([batch, h, w, d], Distribution::Normal(0.0, 1.0), &Default::default())
    }

    #[test]
    fn shortens_the_sequence_by_s_squared() {
        let device = Default::default();
        for fusion in [Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken] {
            for s in [1, 2, 4] {
                let shuffle = TokenShuffleConfig::new(32)
                    .with_window(s)
                    .with_fusion(fusion)
                    .init::<B>(&device)
                    .unwrap();
                let out = shuffle.forward(grid(2, 8, 12, 32)).unwrap();
                assert_eq!(out.dims(), [2, 96 / (s * s), 32], "{fusion:?} s={s}");
            }
        }
    }

    #[test]
    fn window_one_is_the_parameter_free_baseline() {
        let shuffle = TokenShuffleConfig::new(16)
            .with_window(1)
            .init::<B>(&Default::default())
            .unwrap();
        assert_eq!(shuffle.num_params(), 0);
        let x = grid(2, 3, 5, 16);
        let out = shuffle.forward(x.clone()).unwrap();
        out.into_data().assert_eq(&x.reshape([2, 15, 16]).into_data(), true);
    }

    #[test]
    fn parameter_count_follows_the_design() {
        let d = 32;
        let device = Default::default();
        let shuffle = TokenShuffleConfig::new(d).init::<B>(&device).unwrap();
        let compress = d * (d / 4) + d / 4;
        let block = 2 * d + 2 * (d * d + d);
        assert_eq!(shuffle.num_params(), compress + 2 * block);
        let linear = TokenShuffleConfig::new(d)
            .with_fusion(Fusion::Linear)
            .init::<B>(&device)
            .unwrap();
        assert_eq!(linear.num_params(), compress + d * d + d);
        let last = TokenShuffleConfig::new(d)
            .with_fusion(Fusion::LastToken)
            .init::<B>(&device)
            .unwrap();
        assert_eq!(last.num_params(), 2 * block);
    }

    #[test]
    fn width_not_divisible_by_s_squared_is_refused() {
        let err = TokenShuffleConfig::new(18)
            .with_window(2)
            .init::<B>(&Default::default())
            .unwrap_err();
        assert_eq!(err, ShuffleError::WidthNotDivisible { d_model: 18, window: 2 });
        assert!(err.to_string().contains("multiple of 4"), "{err}");
        let err = TokenShuffleConfig::new(16)
            .with_window(0)
            .init::<B>(&Default::default())
            .unwrap_err();
        assert_eq!(err, ShuffleError::ZeroWindow);
    }

    #[test]
    fn bad_inputs_are_named() {
        let shuffle = TokenShuffleConfig::new(16).init::<B>(&Default::default()).unwrap();
        assert_eq!(
            shuffle.forward(grid(1, 4, 4, 8)).unwrap_err(),
            ShuffleError::WidthMismatch { expected: 16, got: 8 }
        );
        assert_eq!(
            shuffle.forward(grid(1, 5, 4, 16)).unwrap_err(),
            ShuffleError::GridNotDivisible {
                height: 5,
                width: 4,
                window: 2
            }
        );
    }

    #[test]
    fn each_window_maps_to_its_own_token() {
        // Changing one grid cell changes exactly the merged token of its window.
        let shuffle = TokenShuffleConfig::new(16).init::<B>(&Default::default()).unwrap();
        let x = grid(1, 4, 4, 16);
        let bumped = x.clone().slice_assign(
            [0..1, 2..3, 1..2, 0..16],
            Tensor::ones([1, 1, 1, 16], &Default::default()) * 5.0,
        );
        let diff = (shuffle.forward(bumped).unwrap() - shuffle.forward(x).unwrap())
            .abs()
            .sum_dim(2);
        // Cell (2, 1) lies in window (1, 0), which is merged token 2 of the 2×2 window grid.
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
    fn last_token_fusion_reads_only_the_last_token_of_each_window() {
        let device = Default::default();
        let shuffle = TokenShuffleConfig::new(8)
            .with_fusion(Fusion::LastToken)
            .init::<B>(&device)
            .unwrap();
        let x = grid(1, 2, 2, 8);
        let base = shuffle.forward(x.clone()).unwrap();
        let noise = Tensor::ones([1, 1, 1, 8], &device) * 3.0;
        // Cells (0,0), (0,1), (1,0) are dropped; (1,1) is the window's last token in row-major order.
        for (row, col, matters) in [(0, 0, false), (0, 1, false), (1, 0, false), (1, 1, true)] {
            let bumped = x
                .clone()
                .slice_assign([0..1, row..row + 1, col..col + 1, 0..8], noise.clone());
            let same = shuffle
                .forward(bumped)
                .unwrap()
                .all_close(base.clone(), None, Some(1e-6));
            assert_eq!(same, !matters, "cell ({row},{col})");
        }
    }

    #[test]
    fn linear_fusion_is_affine_and_mlp_fusion_is_not() {
        // f affine ⇔ f(2x) − f(x) = f(x) − f(0).
        let device = Default::default();
        let x = grid(1, 4, 4, 16);
        for (fusion, affine) in [(Fusion::Linear, true), (Fusion::ResidualMlp, false)] {
            let f = TokenShuffleConfig::new(16)
                .with_fusion(fusion)
                .init::<B>(&device)
                .unwrap();
            let y = |t: Tensor<B, 4>| f.forward(t).unwrap();
            let lhs = y(x.clone() * 2.0) - y(x.clone());
            let rhs = y(x.clone()) - y(x.zeros_like());
            assert_eq!(lhs.all_close(rhs, None, Some(1e-4)), affine, "{fusion:?}");
        }
    }

    #[test]
    fn gradients_reach_every_parameter() {
        let device = Default::default();
        for fusion in [Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken] {
            let shuffle = TokenShuffleConfig::new(16)
                .with_fusion(fusion)
                .init::<TestAutodiffBackend>(&device)
                .unwrap();
            let x = Tensor::random([2, 4, 4, 16], Distribution::Normal(0.0, 1.0), &device);
            let loss = shuffle.forward(x).unwrap().powi_scalar(2).sum();
            assert_every_parameter_has_gradient(&shuffle, loss);
        }
    }
}
