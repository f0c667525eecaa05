//! # train — training loops, generic over the burn backend
//!
//! - [`train_tokenizer`]: the VQ tokenizer of crate `vqgan` on [`TrainingImages`] (synthetic scenes, Twemoji or an
//!   image folder), with [`evaluate_reconstruction`] for PSNR and codebook use. `cargo xtask train-tokenizer` runs
//!   it from the command line.
//! - [`train_lm`]: the Token-Shuffle LM of crate `lm` on cached codes, in [`Stage`]s (resolution, window s, steps,
//!   learning rate), with [`Checkpoints`] every N steps, exact resume, and a named error on a NaN loss.
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

mod checkpoint;
mod error;
mod images;
mod lm;
mod pipeline;
pub mod report;
mod schedule;
mod tokenizer;

pub use checkpoint::{CheckpointState, Checkpoints};
pub use error::TrainError;
pub use lm::{LmData, LmEvent, LmStep, LmTrainingConfig, LmValidation, Stage, evaluate_lm, train_lm};
pub use images::{ImageSource, TrainingImages};
pub use pipeline::{PipelineEvent, RunConfig, TrainedRun, run_dir, run_pipeline};
pub use schedule::WarmupCosine;
pub use tokenizer::{
    ReconstructionReport, TokenizerEvent, TokenizerStep, TokenizerTrainingConfig, evaluate_reconstruction,
    reconstruction_grid, train_tokenizer,
};

#[cfg(test)]
pub(crate) mod tests {
    /// The backend's random generator is shared by the whole process (and burn initialises weights lazily, at
    /// first use): tests that train take turns, so that a run seeded the same draws the same weights.
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        SEEDED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
