use thiserror::Error;

/// Why a Token-Shuffle op or module refused its input or its configuration.
///
/// Every variant names the offending numbers and what to change.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShuffleError {
    /// The window size s was 0.
    #[error("window size s must be at least 1 (s = 1 is the no-shuffle baseline), got 0")]
    ZeroWindow,

    /// The token grid cannot be tiled by s×s windows.
    #[error(
        "the {height}×{width} token grid is not divisible by the window size s = {window}: \
         use an image resolution divisible by downsample × s, or a smaller s"
    )]
    GridNotDivisible {
        /// Grid height H (tokens).
        height: usize,
        /// Grid width W (tokens).
        width: usize,
        /// Window size s.
        window: usize,
    },

    /// The model width d cannot be split into s² equal parts.
    #[error(
        "model width d = {d_model} is not divisible by s² = {}: each of the s² tokens of a window \
         is compressed to d/s² channels, so d must be a multiple of {}",
        window * window,
        window * window
    )]
    WidthNotDivisible {
        /// Model width d.
        d_model: usize,
        /// Window size s.
        window: usize,
    },

    /// A tensor's channel width differs from the width the module was built for.
    #[error("expected tokens of width {expected} (the module's d_model), got width {got}")]
    WidthMismatch {
        /// Width the module was configured with.
        expected: usize,
        /// Width of the input.
        got: usize,
    },

    /// The merged sequence does not have (H/s)·(W/s) tokens for the grid it is split back to.
    #[error(
        "cannot split {tokens} merged tokens back into a {height}×{width} grid with window s = {window}: \
         that grid has (H/s)·(W/s) = {expected} windows"
    )]
    TokenCountMismatch {
        /// Number of merged tokens in the input.
        tokens: usize,
        /// Requested grid height H.
        height: usize,
        /// Requested grid width W.
        width: usize,
        /// Window size s.
        window: usize,
        /// (H/s)·(W/s).
        expected: usize,
    },
}
