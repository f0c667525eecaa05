//! # eval — is it working, and how fast
//!
//! - [`detector`]: a detector for synthetic-scene images that knows no model: colour clustering, connected
//!   components, shape from geometry.
//! - [`compositional`]: GenEval's six categories asked with the scene grammar's held-out prompts, judged by the
//!   detector; and the detector's calibration (ground truth, wrong captions, noise).
//! - [`speed`]: the same LM with s = 1, 2, 4 side by side (training step, generation, peak heap, positions per
//!   image), and the paper's 2.7B shape counted at 512–2048 px.
//! - [`run`]: a trained run evaluated — the benchmark on its generated images, its tokenizer on held-out images.
//! - [`ablation`]: variants of the LM (window, fusion, MLP blocks) trained alike, evaluated, tabled and plotted.
//! - [`memory`]: a counting global allocator for peak heap measurements.
//! - Reconstruction metrics (PSNR, SSIM, codebook usage and perplexity) are `vqgan::{psnr, ssim, CodebookUsage}`,
//!   gathered over a data set by `train::evaluate_reconstruction`.

pub mod ablation;
pub mod compositional;
pub mod detector;
mod error;
pub mod memory;
pub mod run;
pub mod speed;

pub use compositional::{BenchmarkReport, Calibration, CompositionalBenchmark, calibrate, judge};
pub use detector::{Detection, DetectorConfig, detect};
pub use error::EvalError;
pub use ablation::{AblationReport, Variant, run_ablation, variants};
pub use run::{EvalOptions, RunEvaluation, evaluate_run, held_out_images};
pub use speed::{SpeedBench, SpeedReport, count_paper_shape};
