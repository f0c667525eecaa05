//! `bench op`: window merge + split of a token grid against a plain copy of the same tensor.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;
use token_shuffle::{window_merge, window_split};

use std::time::{Duration, Instant};

use super::timing::{at_least_one, interleaved, median, ms, sync, synced};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct OpBench {
    /// Token grid `[B, H, W, C]`, f32.
    pub shape: [usize; 4],
    /// Window sizes s.
    pub windows: Vec<usize>,
    /// Untimed rounds first.
    pub warmup: usize,
    /// Timed rounds; medians are reported.
    pub repeats: usize,
}

/// One timed operation.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// What it is.
    pub name: String,
    /// Median time, ms.
    pub median_ms: f64,
    /// Memory traffic per second, GB/s (`None` where the op moves nothing: s = 1 is two reshapes).
    pub gb_per_s: Option<f64>,
    /// Time over the plain copy's.
    pub vs_copy: f64,
}

/// The op against a plain copy.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// The copy, then merge + split per window size.
    pub rows: Vec<OpRow>,
}

impl OpBench {
    /// Size of the tensor in bytes.
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }

    /// Times, each round: a plain copy (`x + 0`, one read and one write of every element), then merge + split at
    /// every s.
    ///
    /// # Errors
    /// [`EvalError::Config`] when an s does not divide the grid or nothing would be timed.
    pub fn run<B: Backend>(&self, device: &B::Device) -> Result<OpReport, EvalError> {
        let [_, height, width, _] = self.shape;
        for &s in &self.windows {
            if s == 0 || !height.is_multiple_of(s) || !width.is_multiple_of(s) {
                return Err(EvalError::Config(format!(
                    "windows: s = {s} does not divide the {height}×{width} grid"
                )));
            }
        }
        at_least_one("repeats", self.repeats)?;
        let x = Tensor::<B, 4>::random(self.shape, Distribution::Normal(0.0, 1.0), device);
        let times = interleaved(1 + self.windows.len(), self.warmup, self.repeats, |case| match case {
            0 => synced::<B, _>(device, || x.clone().add_scalar(0.0)),
            i => {
                let s = self.windows[i - 1];
                let shuffle = |e: token_shuffle::ShuffleError| EvalError::Config(format!("s = {s}: {e}"));
                let start = Instant::now();
                let y =
                    window_split(window_merge(x.clone(), s).map_err(shuffle)?, [height, width], s).map_err(shuffle)?;
                sync::<B>(device)?;
                let elapsed = start.elapsed();
                drop(y);
                Ok(elapsed)
            }
        })?;
        let bytes = self.bytes() as f64;
        let copy = median(&times[0]);
        let row = |name: String, t: Duration, traffic: f64| OpRow {
            name,
            median_ms: ms(t),
            gb_per_s: (traffic > 0.0).then(|| traffic / t.as_secs_f64() / 1e9),
            vs_copy: t.as_secs_f64() / copy.as_secs_f64(),
        };
        let mut rows = vec![row("plain copy (x + 0)".into(), copy, 2.0 * bytes)];
        for (&s, times) in self.windows.iter().zip(&times[1..]) {
            // Each of merge and split reads and writes the tensor once; with s = 1 both are reshapes (no copy).
            let traffic = if s == 1 { 0.0 } else { 4.0 * bytes };
            rows.push(row(format!("merge + split, s = {s}"), median(times), traffic));
        }
        Ok(OpReport { rows })
    }
}

impl OpReport {
    /// The table as `bench op` prints it.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<28} {:>10} {:>10} {:>14}\n",
            "op", "median ms", "GB/s", "× plain copy"
        );
        for row in &self.rows {
            let bandwidth = row.gb_per_s.map_or("-".into(), |g| format!("{g:.1}"));
            out += &format!(
                "{:<28} {:>10.2} {bandwidth:>10} {:>14.2}\n",
                row.name, row.median_ms, row.vs_copy
            );
        }
        out
    }
}
