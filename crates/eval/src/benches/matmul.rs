//! `bench matmul`: one square matrix product, the backend's raw throughput.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use super::timing::{at_least_one, interleaved, median, ms, sync, synced};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct MatmulBench {
    /// n: the product is `[n, n] × [n, n]` (2·n³ FLOP).
    pub size: usize,
    /// Timed repetitions (after two warm-up ones).
    pub repeats: usize,
}

/// The product, measured.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulReport {
    /// Median time, ms.
    pub median_ms: f64,
    /// FLOP per second, in units of 10¹².
    pub tflop_per_s: f64,
}

impl MatmulBench {
    /// Times the product of two random matrices.
    ///
    /// # Errors
    /// [`EvalError::Config`] when nothing would be timed; a backend failure.
    pub fn run<B: Backend>(&self, device: &B::Device) -> Result<MatmulReport, EvalError> {
        let n = self.size;
        at_least_one("size", n)?;
        at_least_one("repeats", self.repeats)?;
        let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
        sync::<B>(device)?;
        let times = interleaved(1, 2, self.repeats, |_| {
            synced::<B, _>(device, || a.clone().matmul(b.clone()))
        })?;
        let t = median(&times[0]);
        Ok(MatmulReport {
            median_ms: ms(t),
            tflop_per_s: 2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e12,
        })
    }
}
