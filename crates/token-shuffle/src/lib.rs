//! # token-shuffle
//!
//! ```toml
//! [dependencies]
//! token-shuffle = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! burn = { version = "=0.21.0", features = ["flex"] }
//! ```
//!
//! The operation at the heart of Token-Shuffle (Ma et al., 2025): an autoregressive multimodal LLM embeds each
//! VQ image code in its wide hidden size d, which is redundant for ~8-dimensional codes. So before the
//! Transformer, each s×s window of image tokens is merged into **one** token of width d, and after it each
//! output token is split back into s² tokens. The Transformer then sees s² times fewer image tokens
//! (s = 2: 4× fewer, about 4× fewer training FLOPs and generation steps), and the LM head predicts the s² codes
//! of the next window in parallel.
//!
//! ## Shapes
//! ```text
//! codes [B, H, W] ─embed─▶ [B, H, W, d] ─TokenShuffle(s)─▶ [B, (H/s)·(W/s), d] ─Transformer─▶ [B, N, d]
//!                                                 ─TokenUnshuffle(s)─▶ [B, N, s², d] ─LM head─▶ logits of s² codes
//! ```
//!
//! ## Formula
//! With `P` (d → d/s²) and `E` (d/s² → d) linear layers shared by every position of a window:
//!
//! - shuffle: `x' = MLPₖ(…MLP₁(window_merge(P·x, s)))`, where [`window_merge`] concatenates the s² compressed tokens
//!   of a window along channels (windows in raster order, tokens row-major inside a window);
//! - unshuffle: `y'[n, k] = E · split(MLPₖ(…MLP₁(y)))[n, k]` for `0 ≤ k < s²`;
//! - each MLP is the residual block `x + W₂·GELU(W₁·LayerNorm(x))` ([`ResidualMlp`]).
//!
//! [`window_merge`] and [`window_split`] are the pure index shuffles (exact inverses of each other, for any tensor
//! kind); [`TokenShuffle`] and [`TokenUnshuffle`] are the learnable modules. s = 1 is the no-shuffle baseline: both
//! modules are then reshapes without parameters. The paper's ablations are one config field away
//! ([`Fusion::Linear`], [`Fusion::LastToken`], `mlp_blocks`).
//!
//! ## Example
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use token_shuffle::{TokenShuffleConfig, TokenUnshuffleConfig};
//!
//! let device = Default::default();
//! let config = TokenShuffleConfig::new(64).with_window(2); // d = 64, s = 2, two MLP blocks
//! let shuffle = config.init::<Flex>(&device)?;
//! let unshuffle = TokenUnshuffleConfig::from(&config).init::<Flex>(&device)?;
//!
//! // A batch of 2 embedded 8×8 code grids: 64 image tokens each…
//! let image_tokens = Tensor::<Flex, 4>::random([2, 8, 8, 64], Distribution::Normal(0.0, 1.0), &device);
//! // …become 16 Transformer tokens each,
//! let merged = shuffle.forward(image_tokens)?;
//! assert_eq!(merged.dims(), [2, 16, 64]);
//! // and each Transformer output is split back into the 4 tokens of its window.
//! let per_window = unshuffle.forward(merged)?;
//! assert_eq!(per_window.dims(), [2, 16, 4, 64]);
//! # Ok::<(), token_shuffle::ShuffleError>(())
//! ```
//!
//! ## Decisions the paper leaves open
//! - MLP: pre-norm residual block, GELU, hidden width d (configurable with `mlp_hidden`).
//! - The compress and expand layers are shared by every position of a window (the paper says shared).
//! - Order inside a window: row-major, so token k of a window is cell (k / s, k mod s).
//! - [`Fusion::LastToken`] keeps the window's last (bottom-right) token at full width and compresses nothing.

mod error;
mod fusion;
mod mlp;
mod rows;
mod shuffle;
mod unshuffle;
mod window;

pub use error::ShuffleError;
pub use fusion::{Fusion, WindowFusion};
pub use mlp::{ResidualMlp, ResidualMlpConfig};
pub use rows::on_rows;
pub use shuffle::{TokenShuffle, TokenShuffleConfig, check_width};
pub use unshuffle::{TokenUnshuffle, TokenUnshuffleConfig};
pub use window::{check_grid, window_merge, window_split};
