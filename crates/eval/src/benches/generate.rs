//! `bench generate`: one image generated with the KV cache at each window size, with the time of its early and
//! late decoding steps (a cache that copies itself makes the late ones slower).

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use serde::Serialize;
use token_shuffle_lm::{CfgSchedule, GenerateOptions, LmArchitecture, Sampler};

use super::timing::{at_least_one, median, ms};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// The LM's decoder and vocabulary (random weights).
    pub lm: LmArchitecture,
    /// Side of the code grid.
    pub grid: usize,
    /// Window sizes s; the first is the ratios' base.
    pub windows: Vec<usize>,
    /// Timed images per window size, after one warm-up image.
    pub repeats: usize,
}

/// One window size, measured.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateRow {
    /// Window s.
    pub window: usize,
    /// Decoding steps per image.
    pub steps: usize,
    /// Median time of one image, ms.
    pub image_ms: f64,
    /// Median time of the first tenth of the steps (the first, with the prefill, left out), ms per step.
    pub early_step_ms: Option<f64>,
    /// The same over the last tenth.
    pub late_step_ms: Option<f64>,
    /// The first window size's image time over this one's.
    pub speedup: f64,
}

/// Every window size, measured.
#[derive(Debug, Clone, Serialize)]
pub struct GenerateReport {
    /// In the order of [`GenerateBench::windows`].
    pub rows: Vec<GenerateRow>,
}

impl GenerateBench {
    /// Generates `1 + repeats` images (batch 1, no CFG) at each s.
    ///
    /// # Errors
    /// [`EvalError::Config`] when nothing would be timed; an LM that cannot be built at an s.
    pub fn run<B: Backend>(&self, device: &B::Device) -> Result<GenerateReport, EvalError> {
        at_least_one("repeats", self.repeats)?;
        let options = GenerateOptions {
            cfg_scale: 1.0,
            schedule: CfgSchedule::Constant,
            sampler: Sampler::default(),
            seed: 0,
        };
        let prompt = vec![vec![1, 2, 3, 4, 5, 6, 7, 8]];
        let mut rows: Vec<GenerateRow> = Vec::new();
        for &s in &self.windows {
            let config = self.lm.clone().into_config([self.grid, self.grid], s);
            let model = config.init::<B>(device)?;
            let (mut totals, mut early, mut late) = (Vec::new(), Vec::new(), Vec::new());
            for repetition in 0..=self.repeats {
                let mut marks = Vec::with_capacity(config.windows() + 1);
                let start = Instant::now();
                marks.push(start);
                model.generate(&prompt, &options, device, &mut |_| marks.push(Instant::now()))?;
                if repetition == 0 {
                    continue; // warm-up
                }
                totals.push(start.elapsed());
                // Step i's time is from the end of step i−1; the first (with the prefill) is left out of both.
                let steps: Vec<Duration> = marks.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
                let tenth = (steps.len() / 10).max(1);
                if steps.len() >= 2 * tenth {
                    early.push(steps[..tenth].iter().sum::<Duration>() / tenth as u32);
                    late.push(steps[steps.len() - tenth..].iter().sum::<Duration>() / tenth as u32);
                }
            }
            let image_ms = ms(median(&totals));
            let base = rows.first().map_or(image_ms, |first| first.image_ms);
            let step_ms = |times: &[Duration]| (!times.is_empty()).then(|| ms(median(times)));
            rows.push(GenerateRow {
                window: s,
                steps: config.windows(),
                image_ms,
                early_step_ms: step_ms(&early),
                late_step_ms: step_ms(&late),
                speedup: base / image_ms,
            });
        }
        Ok(GenerateReport { rows })
    }
}

impl GenerateReport {
    /// The table as `bench generate` prints it.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<6} {:>8} {:>12} {:>14} {:>14} {:>11} {:>12}\n",
            "s", "steps", "ms / image", "early ms/step", "late ms/step", "late/early", "× vs s = 1"
        );
        for row in &self.rows {
            let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            let ratio = row.early_step_ms.zip(row.late_step_ms).map(|(e, l)| l / e);
            out += &format!(
                "{:<6} {:>8} {:>12.1} {:>14} {:>14} {:>11} {:>12.2}\n",
                row.window,
                row.steps,
                row.image_ms,
                show(row.early_step_ms),
                show(row.late_step_ms),
                show(ratio),
                row.speedup
            );
        }
        out
    }
}
