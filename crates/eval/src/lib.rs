//! # token-shuffle-eval — is it working, and how fast
//!
//! ```toml
//! [dependencies]
//! token-shuffle-eval = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! ```
//!
//! - [`detector`]: a detector for synthetic-scene images that knows no model: colour clustering, connected
//!   components, shape from geometry.
//! - [`compositional`]: GenEval's six categories asked with the scene grammar's held-out prompts, judged by the
//!   detector; and the detector's calibration (ground truth, wrong captions, noise).
//! - [`cfg_sweep`]: the benchmark over CFG schedules × scales on a trained run (`cargo xtask cfg`).
//! - [`demo`]: the report of `cargo xtask demo` from its finished run.
//! - [`benches`]: the other benchmarks of `cargo xtask bench` (op, decode, generate, highres, code cache, tokenizer,
//!   matmul, norm), interleaved through one timing helper.
//! - [`report`]: the figures (line charts with labelled axes and legends, bar charts with interval whiskers, a
//!   run's loss curves), drawn with plotters; the train crate draws nothing.
//! - [`speed`]: the same LM with s = 1, 2, 4 side by side (training step, generation, peak heap, positions per
//!   image), and the paper's 2.7B shape counted at 512–2048 px.
//! - [`run`]: a trained run evaluated — the benchmark on its generated images, its tokenizer on held-out images.
//! - [`ablation`]: variants of the LM (window, fusion, MLP blocks) trained alike, evaluated, tabled and plotted.
//! - [`memory`]: a counting global allocator for peak heap measurements.
//! - Reconstruction metrics (PSNR, SSIM, codebook usage and perplexity) are `vqgan::{psnr, ssim, CodebookUsage}`,
//!   gathered over a data set by `train::evaluate_reconstruction`.
//!
//! The benchmark works with any image generator: give [`CompositionalBenchmark::run`] a function from captions to
//! images. Here the "generator" renders the ground truth, which the detector must pass:
//!
//! ```
//! use std::collections::HashMap;
//! use token_shuffle_eval::{CompositionalBenchmark, DetectorConfig, EvalError};
//!
//! let benchmark = CompositionalBenchmark { seed: 0, prompts_per_category: 2, images_per_prompt: 1, seen_pairs: false };
//! let truth: HashMap<String, token_shuffle_data::scenes::Scene> =
//!     benchmark.prompts().into_iter().map(|scene| (scene.caption.clone(), scene)).collect();
//! let generate = |captions: &[String]| -> Result<Vec<image::RgbImage>, EvalError> {
//!     captions.iter().map(|c| Ok(truth[c].render(128)?)).collect()
//! };
//! let report = benchmark.run(&DetectorConfig::default(), 8, generate, |_, _| {})?;
//! assert_eq!(report.overall, 1.0);
//! println!("{}", report.markdown_row("ground truth"));
//! # Ok::<(), EvalError>(())
//! ```
//!
//! From the command line: `cargo xtask eval --run runs/demo`, `cargo xtask bench`, `cargo xtask ablate`,
//! `cargo xtask calibrate-detector` (see the top README).

pub mod ablation;
pub mod benches;
pub mod cfg_sweep;
pub mod compositional;
pub mod demo;
pub mod detector;
mod error;
pub mod memory;
pub mod report;
pub mod run;
pub mod speed;

pub use ablation::{AblationReport, LmBudget, Variant, run_ablation, variants};
pub use cfg_sweep::{CfgPoint, CfgSweep, CfgSweepReport};
pub use compositional::{BenchmarkReport, Calibration, CompositionalBenchmark, calibrate, calibrate_through, judge};
pub use demo::{DemoReport, demo_report};
pub use detector::{Detection, DetectorConfig, detect};
pub use error::EvalError;
pub use run::{EvalOptions, RunEvaluation, benchmark_probe, benchmark_run, evaluate_run, held_out_images};
pub use speed::{SpeedBench, SpeedReport, count_paper_shape};
