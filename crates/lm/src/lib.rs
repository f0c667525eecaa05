//! # lm — the multimodal LLM with Token-Shuffle
//!
//! The model of the paper: one Llama-style decoder over one vocabulary of text tokens and image codes, with the
//! `token-shuffle` crate's `TokenShuffle` / `TokenUnshuffle` around it so that each image position predicts the s²
//! codes of the next window.
//!
//! Built so far:
//! - [`VocabLayout`]: text ids, special tokens and image codes in one table, laid out in one place.
//! - [`CfgSchedule`] and [`guide`]: classifier-free guidance with the paper's schedules (half-linear by default).
//! - [`Sampler`]: temperature, top-k and top-p sampling, seeded and reproducible.
//! - [`CausalSelfAttention`] with a preallocated [`KvCache`]: rotary positions, grouped KV heads, burn's fused
//!   attention op.
//! - [`Decoder`]: the Llama-style stack (pre-norm RMSNorm, attention, SwiGLU MLP) with per-layer KV caches.
//!
//! Still to come (see the LM issue): the Token-Shuffle
//! wiring and losses, KV-cache generation, presets, and the parameter/FLOP counter.

mod attention;
mod cfg;
mod count;
mod decoder;
mod model;
mod sampling;
mod vocab;

pub use attention::{CausalSelfAttention, CausalSelfAttentionConfig, KvCache};
pub use cfg::{CfgSchedule, drop_prompts, guide};
pub use count::ModelCount;
pub use decoder::{Decoder, DecoderCache, DecoderConfig, DecoderLayer};
pub use model::{GenerateOptions, LmLoss, TokenShuffleLm, TokenShuffleLmConfig};
pub use sampling::{Sampler, seeded_rng};
pub use vocab::VocabLayout;
