//! # eval — is it working, and how fast
//!
//! - [`detector`]: a detector for synthetic-scene images that knows no model: colour clustering, connected
//!   components, shape from geometry.
//! - [`compositional`]: GenEval's six categories asked with the scene grammar's held-out prompts, judged by the
//!   detector; and the detector's calibration (ground truth, wrong captions, noise).

pub mod compositional;
pub mod detector;
mod error;

pub use compositional::{BenchmarkReport, Calibration, CompositionalBenchmark, calibrate, judge};
pub use detector::{Detection, DetectorConfig, detect};
pub use error::EvalError;
