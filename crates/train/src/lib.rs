//! # train — training loops, generic over the burn backend
//!
//! - [`train_tokenizer`]: the VQ tokenizer of crate `vqgan` on [`TrainingImages`] (synthetic scenes, Twemoji or an
//!   image folder), with [`evaluate_reconstruction`] for PSNR and codebook use. `cargo xtask train-tokenizer` runs
//!   it from the command line.
//!
//! Functions take any `B: AutodiffBackend`; the command line picks `Autodiff<Flex>`, `Autodiff<Wgpu>` or
//! `Autodiff<Cuda>`.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use train::{ImageSource, TokenizerTrainingConfig, TrainingImages, train_tokenizer};
//! use burn::config::Config;
//!
//! let model = vqgan::VqModelConfig::load("configs/vq-tiny.json").unwrap();
//! let config = TokenizerTrainingConfig::new(model).with_steps(500);
//! let images = TrainingImages::load(&ImageSource::Scenes, 64, config.valid_images as usize, config.seed).unwrap();
//! let device = Default::default();
//! let vq = train_tokenizer::<Autodiff<Flex>>(&config, &images, "runs/vq".as_ref(), &device, |event| {
//!     println!("{event:?}");
//! })
//! .unwrap();
//! ```

mod error;
mod images;
mod schedule;
mod tokenizer;

pub use error::TrainError;
pub use images::{ImageSource, TrainingImages};
pub use schedule::WarmupCosine;
pub use tokenizer::{
    ReconstructionReport, TokenizerEvent, TokenizerStep, TokenizerTrainingConfig, evaluate_reconstruction,
    reconstruction_grid, train_tokenizer,
};
