//! # token-shuffle-train — training loops, generic over the burn backend
//!
//! ```toml
//! [dependencies]
//! token-shuffle-train = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! burn = { version = "=0.21.0", features = ["flex", "autodiff"] }
//! ```
//!
//! - [`train_tokenizer`]: the VQ tokenizer of crate `vqgan` on [`TrainingImages`] (synthetic scenes, Twemoji or an
//!   image folder), with [`evaluate_reconstruction`] for PSNR and codebook use. `cargo xtask train-tokenizer` runs
//!   it from the command line.
//! - [`train_lm`]: the Token-Shuffle LM of crate `lm` on cached codes, in [`Stage`]s (resolution, window s, steps,
//!   learning rate), with [`Checkpoints`] every N steps, exact resume, and a named error on a NaN loss.
//!
//! - [`run_pipeline`]: a whole [`RunConfig`] — tokenizer, text BPE, code caches, LM — skipping the steps whose
//!   outputs are up to date; [`TrainedRun`] loads a finished run and generates images from prompts.
//!
//! Functions take any `B: AutodiffBackend`; the command line picks `Autodiff<Flex>`, `Autodiff<Wgpu>` or
//! `Autodiff<Cuda>`.
//!
//! ## Why not burn-train's `Learner`
//! The loops here are our own (`lm/trainer.rs`: start or resume, then per step `enter_stage`, `step`,
//! `after_step`; `tokenizer.rs`: a `TokenizerState` stepped the same way) instead of burn-train 0.21's `Learner`, for three
//! requirements it does not meet as is: checkpoints every N *steps* with a resume that reproduces the uninterrupted
//! run bit for bit (burn-train checkpoints per epoch and its data loaders do not restart mid-epoch in the same
//! order); the tokenizer's two optimizers (generator and PatchGAN discriminator, alternating, with taming's
//! adaptive weight); and a stop with the step and the loss part named on a NaN loss. Not depending on burn-train
//! also keeps its terminal UI out of every build. Progress is reported through callbacks (one event per logged
//! step, validation and checkpoint); `cargo xtask` prints them as plain lines. Several GPUs are not supported yet.
//!
//! ## Reproducibility
//! Data order and prompt dropout depend only on the seed and the step. Weights are initialised from the backend's
//! random generator, which is seeded per stage; burn's generator is process-wide and initialises lazily (at first
//! use), so two trainings running at the same time in one process do not reproduce each other (the tests take
//! turns for that reason).
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use token_shuffle_train::{ImageSource, TokenizerTrainingConfig, TrainingImages, train_tokenizer};
//! use burn::config::Config;
//!
//! let model = token_shuffle_vqgan::VqModelConfig::load("configs/vq-tiny.json").unwrap();
//! let config = TokenizerTrainingConfig::new(model).with_steps(500);
//! let images = TrainingImages::load(&ImageSource::Scenes, 64, config.valid_images as usize, config.seed).unwrap();
//! let device = Default::default();
//! let vq = train_tokenizer::<Autodiff<Flex>>(&config, &images, "runs/vq".as_ref(), &device, |event| {
//!     println!("{event:?}");
//! })
//! .unwrap();
//! ```

mod bounds;
mod checkpoint;
pub mod config_file;
mod encoding;
mod error;
mod events;
mod images;
mod lm;
mod lock;
mod pipeline;
mod pretrained;
mod run_config;
mod schedule;
mod shards;
pub mod stage;
mod text_pretraining;
mod tokenizer;
mod trained_run;
mod weights;

pub use checkpoint::{CheckpointState, Checkpoints};
pub use error::TrainError;
pub use events::PipelineEvent;
pub use images::{DataSource, ImageSource, TrainingImages, images_to_hold};
pub use lm::{
    LOGGING_ONLY_LM_FIELDS, LmData, LmEvent, LmProbe, LmStep, LmTrainingConfig, LmValidation, Parallel, ProbeResult,
    Stage, evaluate_lm, train_lm, train_lm_probed,
};
pub use lock::RunLock;
pub use pipeline::{PipelineSteps, RunProbe, run_dir, run_pipeline, run_pipeline_probed};
pub use pretrained::{Pretrained, architecture_fields, fill_from_checkpoint};
pub use run_config::RunConfig;
pub use schedule::WarmupCosine;
pub use shards::{ShardSlice, check_shard_codes, encode_shards};
pub use text_pretraining::{TextPretrainingConfig, TextPretrainingReport, TextStep, pretrain_text};
pub use tokenizer::{
    ReconstructionReport, TokenizerEvent, TokenizerStep, TokenizerTrainingConfig, check_tokenizer_out,
    evaluate_reconstruction, reconstruct, reconstruction_grid, train_tokenizer,
};
pub use trained_run::TrainedRun;

#[cfg(test)]
pub(crate) mod tests {
    /// The backend's random generator is shared by the whole process (and burn initialises weights lazily, at
    /// first use): tests that train take turns, so that a run seeded the same draws the same weights.
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        SEEDED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
