//! # token-shuffle-vqgan — the VQ image tokenizer
//!
//! ```toml
//! [dependencies]
//! token-shuffle-vqgan = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! burn = { version = "=0.21.0", features = ["flex"] }
//! ```
//!
//! A VQGAN in the taming / LlamaGen design turns images into grids of code ids and back; the LM only ever sees
//! codes from this crate.
//!
//! ```text
//! image [B,3,H,W] ─Encoder─▶ [B,z,H/f,W/f] ─1×1─▶ [B,d,H/f,W/f] ─VectorQuantizer─▶ codes [B,H/f,W/f]
//!                                                                   (nearest of K unit vectors by cosine)
//! codes ─codebook─▶ [B,d,H/f,W/f] ─1×1─▶ [B,z,H/f,W/f] ─Decoder─▶ image [B,3,H,W]
//! ```
//!
//! - [`Encoder`] / [`Decoder`]: ResNet blocks (GroupNorm + SiLU), a stride-2 [`Downsample`] / nearest
//!   [`Upsample`] between resolution levels (downsample factor f = 2^(levels − 1)), self-attention ([`AttnBlock`])
//!   at the lowest resolution and in the [`MidBlock`].
//! - [`VectorQuantizer`]: an l2-normalised codebook, straight-through gradients, codebook loss + β·commitment loss
//!   (β = 0.25), optional entropy loss.
//! - Losses ([`VqLossConfig`]): L1 or L2 pixel loss, optional [`PatchDiscriminator`] with hinge loss from a
//!   configurable step, weighted by taming's adaptive weight. There is no perceptual (LPIPS) loss: its VGG weights
//!   cannot be had offline.
//! - Metrics: [`psnr`], [`ssim`], [`CodebookUsage`] (usage and perplexity).
//! - Weights: [`VqModel::save_safetensors`] / [`VqModel::load_safetensors`]; LlamaGen's published checkpoints
//!   through [`llamagen::load_llamagen`].
//!
//! Presets live in `configs/`: `vq-tiny.json` (64×64 images, CPU tests and the demo), `vq8.json` (f = 8,
//! K = 8192, the paper's setting), `llamagen-vq16.json` (LlamaGen's VQ-16). Training is `cargo xtask
//! train-tokenizer` (crates/train).
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use token_shuffle_vqgan::VqModelConfig;
//!
//! let config = VqModelConfig::new(64)
//!     .with_channels(8)
//!     .with_channel_multipliers(vec![1, 2, 2])
//!     .with_res_blocks(1)
//!     .with_z_channels(8)
//!     .with_norm_groups(4);
//! let device = Default::default();
//! let model = config.init::<Flex>(&device).unwrap();
//! let images = Tensor::<Flex, 4>::zeros([2, 3, 32, 32], &device);
//! let codes = model.encode(images).unwrap(); // f = 4
//! assert_eq!(codes.dims(), [2, 8, 8]);
//! assert_eq!(model.decode(codes).dims(), [2, 3, 32, 32]);
//! // Sizes that are not a multiple of f are refused, saying what to do.
//! let err = model.encode(Tensor::zeros([1, 3, 30, 32], &device)).unwrap_err();
//! assert!(err.to_string().contains("multiple of 4"));
//! ```

mod attention;
pub mod conv;
mod decoder;
mod discriminator;
mod encoder;
mod error;
pub mod llamagen;
mod loss;
mod metrics;
mod mid;
mod model;
mod norm;
mod quantizer;
mod resample;
mod resnet;

pub use attention::{AttnBlock, AttnBlockConfig};
pub use decoder::{Decoder, DecoderLevel};
pub use discriminator::{
    DiscriminatorLayer, PatchDiscriminator, PatchDiscriminatorConfig, hinge_discriminator_loss, hinge_generator_loss,
};
pub use encoder::{Encoder, EncoderLevel};
pub use error::VqError;
pub use loss::{GeneratorLoss, Reconstruction, VqLossConfig};
pub use metrics::{CodebookUsage, psnr, ssim};
pub use mid::MidBlock;
pub use model::{VqForward, VqModel, VqModelConfig};
pub use norm::{GroupNorm, GroupNormConfig};
pub use quantizer::{Quantized, VectorQuantizer, VectorQuantizerConfig};
pub use resample::{Downsample, ResampleConfig, Upsample};
pub use resnet::{ResnetBlock, ResnetBlockConfig};
