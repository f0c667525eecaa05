//! # token-shuffle-lm — the multimodal LLM with Token-Shuffle
//!
//! ```toml
//! [dependencies]
//! token-shuffle-lm = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! burn = { version = "=0.21.0", features = ["flex"] }
//! ```
//!
//! The model of the paper: one Llama-style decoder over one vocabulary of text tokens and image codes
//! ([`VocabLayout`]), with the `token-shuffle` crate's `TokenShuffle` / `TokenUnshuffle` around it, so that each
//! image position predicts the s² codes of the **next** window ([`TokenShuffleLm`]). No text encoder: the prompt
//! is plain tokens in the same sequence.
//!
//! - [`LmArchitecture`]: what a preset or run file says about the LM (presets `tiny`, `small`, `paper_2_7b`);
//!   [`LmArchitecture::into_config`] adds the image geometry (code grid, window s) into a [`TokenShuffleLmConfig`].
//! - [`TokenShuffleLm`]: embedding → Token-Shuffle → [`Decoder`] → Token-Unshuffle → image head; loss parts
//!   ([`LmLoss`]: image cross-entropy, z-loss, optional text loss); KV-cache generation with scheduled CFG.
//! - [`Decoder`]: pre-norm RMSNorm, [`CausalSelfAttention`] (RoPE over the shortened sequence, grouped KV heads,
//!   burn's fused attention, a preallocated [`KvCache`]) and a SwiGLU MLP.
//! - [`CfgSchedule`], [`guide`] and [`drop_prompts`]: classifier-free guidance, its schedules (half-linear by
//!   default) and the prompt dropout that trains it.
//! - [`Sampler`]: temperature, top-k and top-p, seeded and reproducible.
//! - [`TokenShuffleLmConfig::count`]: parameters, sequence length and FLOPs, analytically (`cargo xtask count`).
//!
//! ## Example
//! ```
//! use burn::backend::Flex;
//! use token_shuffle_lm::{CfgSchedule, DecoderConfig, GenerateOptions, LmArchitecture, Sampler};
//!
//! let device = Default::default();
//! // 100 text ids, a 64-code VQ, captions of up to 16 ids, d = 32, 2 layers, 4 heads, SwiGLU 64…
//! let architecture = LmArchitecture::new(100, 64, 16, DecoderConfig::new(32, 2, 4, 64));
//! // …over 8×8 code grids with s = 2: 16 windows per image.
//! let config = architecture.into_config([8, 8], 2);
//! let model = config.init::<Flex>(&device)?;
//! assert_eq!(config.sequence_len(3), 3 + 1 + 16);
//!
//! let prompts = vec![vec![5, 6, 7]];
//! let options = GenerateOptions { cfg_scale: 7.5, schedule: CfgSchedule::HalfLinear, sampler: Sampler::default(), seed: 1 };
//! let codes = model.generate(&prompts, &options, &device, &mut |_| {})?;
//! assert_eq!(codes.dims(), [1, 8, 8]); // ready for the VQ decoder
//! # Ok::<(), token_shuffle_lm::LmError>(())
//! ```
//!
//! ## Decisions the paper leaves open
//! - Positions: RoPE over the shortened sequence (one position per window), as the paper suggests (docs/PAPER.md).
//! - Sequence: `[bos] text [boi] w₀ … w_{N−2}`; the outputs at `boi` and `w₀ … w_{N−2}` predict windows `0 … N−1`,
//!   so the last window is never an input in training.
//! - Prompts of different lengths are left-padded with `pad`, and an attention bias hides the pads, so a prompt's
//!   logits do not depend on what it is batched with (tested).
//! - The optional text loss uses the embedding table as its output layer, scaled by 1/√d.
//! - z-loss weight 1e-4; prompt dropout 10%.

mod architecture;
mod attention;
mod cfg;
mod count;
mod decoder;
mod hf;
mod hf_export;
mod model;
mod rope;
mod sampling;
mod vocab;

pub use architecture::{LmArchitecture, TextHead};
pub use attention::{CausalSelfAttention, CausalSelfAttentionConfig, KvCache};
pub use cfg::{CfgSchedule, MAX_CFG_SCALE, check_cfg_scale, drop_prompts, guide};
pub use count::ModelCount;
pub use decoder::{Decoder, DecoderCache, DecoderConfig, DecoderLayer};
pub use hf::{HF_ARCHITECTURES, HfConfig, HfReference, load_hf};
pub use hf_export::{export_hf, export_hf_text};
pub use model::{GenerateOptions, GenerateStep, LmError, LmLoss, TokenShuffleLm, TokenShuffleLmConfig};
pub use rope::RopeScaling;
pub use sampling::{Sampler, seeded_rng};
pub use vocab::VocabLayout;
