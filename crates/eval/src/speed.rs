//! The paper's central claim, measured: the same LM with s = 1, 2, 4 side by side in one run.
//!
//! For each window size the bench builds the LM (same decoder, same code grid), then, in every repetition and for
//! every s in turn (interleaved, so that a noisy machine slows all variants alike): one AdamW training step on a
//! batch of random codes and captions, and the generation of one image with the KV cache (no CFG). It reports
//! medians, the peak heap each part held above its starting point (CPU backends; see [`crate::memory`]), the
//! Transformer positions per image, and the analytic FLOPs of [`lm::TokenShuffleLmConfig::count`]. The paper's
//! 2.7B shape is counted (not run) at 512, 1024 and 2048 px.

use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;
use token_shuffle_lm::{CfgSchedule, GenerateOptions, LmArchitecture, Sampler, TokenShuffleLmConfig};

use crate::EvalError;
use crate::benches::timing::{median, sync};
use crate::memory::PeakAlloc;
use crate::report::{PALETTE, Panel, Series, line_chart};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SpeedBench {
    /// The LM, measured over [`Self::grid`] with each of [`Self::windows`].
    pub lm: LmArchitecture,
    /// Side of the code grid.
    pub grid: usize,
    /// Window sizes to compare (the first is the baseline of the ratios).
    pub windows: Vec<usize>,
    /// Images per training step.
    pub batch_size: usize,
    /// Caption length in text ids.
    pub text_len: usize,
    /// Untimed repetitions first (kernel compilation, autotuning, allocator warm-up).
    pub warmup: usize,
    /// Timed repetitions; medians are reported.
    pub repeats: usize,
}

/// One window size, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedRow {
    /// Window s.
    pub window: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Transformer positions per image (N/s² windows).
    pub image_positions: usize,
    /// Transformer positions per training sequence (text + 1 + N/s²).
    pub sequence_len: usize,
    /// Median time of one training step (forward, backward, AdamW), ms.
    pub train_step_ms: f64,
    /// Images per second in training.
    pub train_images_per_s: f64,
    /// Median time to generate one image (batch 1, no CFG), ms.
    pub generate_ms: f64,
    /// Largest heap a training step held above its start, MiB (`None` when not measured).
    pub train_peak_mib: Option<f64>,
    /// Largest heap a generation held above its start, MiB.
    pub generate_peak_mib: Option<f64>,
    /// Analytic training FLOPs per image.
    pub train_flops: f64,
    /// Analytic generation FLOPs per image.
    pub generate_flops: f64,
}

/// The paper's shape at one resolution and window, counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountedRow {
    /// Image side, pixels.
    pub resolution: usize,
    /// Window s.
    pub window: usize,
    /// Image codes per image.
    pub image_codes: usize,
    /// Transformer positions per training sequence.
    pub sequence_len: usize,
    /// Training FLOPs per image.
    pub train_flops: f64,
    /// Generation FLOPs per image (KV cache, no CFG).
    pub generate_flops: f64,
}

/// The bench's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeedReport {
    /// Backend it ran on.
    pub backend: String,
    /// The LM measured (d, layers) and its code grid side.
    pub model: String,
    /// Batch size of the training steps.
    pub batch_size: usize,
    /// Caption length.
    pub text_len: usize,
    /// Timed repetitions.
    pub repeats: usize,
    /// One row per window.
    pub rows: Vec<SpeedRow>,
    /// The paper's shape, counted.
    pub counted: Vec<CountedRow>,
}

/// Counts `paper` at each resolution, with VQ downsampling `downsample`, for each window.
pub fn count_paper_shape(
    paper: &LmArchitecture,
    downsample: usize,
    resolutions: &[usize],
    windows: &[usize],
    text_len: usize,
) -> Result<Vec<CountedRow>, token_shuffle_lm::LmError> {
    resolutions
        .iter()
        .flat_map(|&resolution| windows.iter().map(move |&window| (resolution, window)))
        .map(|(resolution, window)| {
            let config = paper.clone().into_config([resolution / downsample; 2], window);
            let count = config.count(text_len)?;
            Ok(CountedRow {
                resolution,
                window,
                image_codes: count.image_codes,
                sequence_len: count.sequence_len,
                train_flops: count.train_flops,
                generate_flops: count.generate_flops,
            })
        })
        .collect()
}

impl SpeedBench {
    /// Runs the bench on `device`. `heap`, when given, must be the program's global allocator.
    /// `on_progress(repetition, total)` is called after each repetition.
    ///
    /// # Errors
    /// [`EvalError::Config`] for a window that does not divide the grid (or the width), no window, or no
    /// repetition; errors of the LM.
    pub fn run<B: AutodiffBackend, A>(
        &self,
        backend: &str,
        device: &B::Device,
        heap: Option<&PeakAlloc<A>>,
        on_progress: impl FnMut(usize, usize),
    ) -> Result<SpeedReport, EvalError> {
        self.check()?;
        let configs: Vec<TokenShuffleLmConfig> = self
            .windows
            .iter()
            .map(|&window| self.lm.clone().into_config([self.grid; 2], window))
            .collect();
        let timings = self.time::<B, A>(&configs, device, heap, on_progress)?;
        let rows = configs
            .iter()
            .zip(timings)
            .map(|(config, timing)| self.row(config, timing))
            .collect::<Result<_, EvalError>>()?;
        Ok(SpeedReport {
            backend: backend.to_string(),
            model: format!(
                "d = {}, {} layers, {} heads, {g}×{g} codes, K = {}",
                self.lm.decoder.d_model,
                self.lm.decoder.n_layers,
                self.lm.decoder.n_heads,
                self.lm.codebook,
                g = self.grid
            ),
            batch_size: self.batch_size,
            text_len: self.text_len,
            repeats: self.repeats,
            rows,
            counted: Vec::new(),
        })
    }

    fn check(&self) -> Result<(), EvalError> {
        if self.windows.is_empty() || self.repeats == 0 || self.batch_size == 0 {
            return Err(EvalError::Config(
                "the speed bench needs at least one window, one repetition and a batch of 1".into(),
            ));
        }
        if self.text_len > self.lm.max_text_len {
            return Err(EvalError::Config(format!(
                "captions of {} ids are longer than the LM's max_text_len {}",
                self.text_len, self.lm.max_text_len
            )));
        }
        Ok(())
    }

    /// Random codes and captions, the same for every window.
    fn random_batch<B: Backend>(&self, device: &B::Device) -> (Tensor<B, 3, Int>, Vec<Vec<u32>>) {
        let mut rng = token_shuffle_data::rng::SplitMix64::new(1, 0);
        let codes: Vec<i64> = (0..self.batch_size * self.grid * self.grid)
            .map(|_| rng.below(self.lm.codebook) as i64)
            .collect();
        let codes = Tensor::from_data(TensorData::new(codes, [self.batch_size, self.grid, self.grid]), device);
        let texts = (0..self.batch_size)
            .map(|_| {
                (0..self.text_len)
                    .map(|_| rng.below(self.lm.text_vocab) as u32)
                    .collect()
            })
            .collect();
        (codes, texts)
    }

    /// Each window's LM trained one step and generating one image, in turn, every repetition.
    fn time<B: AutodiffBackend, A>(
        &self,
        configs: &[TokenShuffleLmConfig],
        device: &B::Device,
        heap: Option<&PeakAlloc<A>>,
        mut on_progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Timing>, EvalError> {
        let mut models = Vec::with_capacity(configs.len());
        for config in configs {
            B::seed(device, 0);
            let model = config
                .init::<B>(device)
                .map_err(|e| EvalError::Config(format!("s = {}: {e}", config.window)))?;
            models.push(Some(model));
        }
        let mut optimizers: Vec<_> = configs
            .iter()
            .map(|_| AdamWConfig::new().init::<B, token_shuffle_lm::TokenShuffleLm<B>>())
            .collect();
        let (codes, texts) = self.random_batch::<B>(device);
        let options = GenerateOptions {
            cfg_scale: 1.0,
            schedule: CfgSchedule::Constant,
            sampler: Sampler::default(),
            seed: 0,
        };
        let mut timings = vec![Timing::default(); configs.len()];
        let total = self.warmup + self.repeats;
        for repetition in 0..total {
            let timed = repetition >= self.warmup;
            for (i, timing) in timings.iter_mut().enumerate() {
                let train = measured::<B, A>(heap, device, &mut || {
                    let model = models[i].take().expect("the model is put back after each step");
                    let loss = model.loss(model.prompt_ids(&texts, device), codes.clone())?;
                    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
                    models[i] = Some(optimizers[i].step(1e-4, model, grads));
                    Ok(())
                })?;
                let inference = models[i].as_ref().expect("present").valid();
                let generate = measured::<B, A>(heap, device, &mut || {
                    inference.generate(&texts[..1], &options, device, &mut |_| {})?;
                    Ok(())
                })?;
                if timed {
                    timing.add(train, generate);
                }
            }
            on_progress(repetition + 1, total);
        }
        Ok(timings)
    }

    fn row(&self, config: &TokenShuffleLmConfig, timing: Timing) -> Result<SpeedRow, EvalError> {
        let mib = |bytes: Option<usize>| bytes.map(|b| b as f64 / (1 << 20) as f64);
        let count = config.count(self.text_len)?;
        let train = median(&timing.train).as_secs_f64();
        Ok(SpeedRow {
            window: config.window,
            parameters: count.parameters,
            image_positions: config.windows(),
            sequence_len: count.sequence_len,
            train_step_ms: train * 1e3,
            train_images_per_s: self.batch_size as f64 / train,
            generate_ms: median(&timing.generate).as_secs_f64() * 1e3,
            train_peak_mib: mib(timing.train_peak),
            generate_peak_mib: mib(timing.generate_peak),
            train_flops: count.train_flops,
            generate_flops: count.generate_flops,
        })
    }
}

/// One window's timed repetitions and the largest heaps they held.
#[derive(Debug, Clone, Default)]
struct Timing {
    train: Vec<Duration>,
    generate: Vec<Duration>,
    train_peak: Option<usize>,
    generate_peak: Option<usize>,
}

impl Timing {
    fn add(
        &mut self,
        (train, train_peak): (Duration, Option<usize>),
        (generate, generate_peak): (Duration, Option<usize>),
    ) {
        self.train.push(train);
        self.generate.push(generate);
        self.train_peak = self.train_peak.max(train_peak);
        self.generate_peak = self.generate_peak.max(generate_peak);
    }
}

/// The time `work` takes until the backend has finished it, and the peak heap it held above its start when `heap`
/// (the global allocator) is given.
fn measured<B: Backend, A>(
    heap: Option<&PeakAlloc<A>>,
    device: &B::Device,
    work: &mut dyn FnMut() -> Result<(), EvalError>,
) -> Result<(Duration, Option<usize>), EvalError> {
    let start = Instant::now();
    let (result, peak) = match heap {
        Some(heap) => {
            let (result, peak) = heap.peak_during(|| work().and_then(|()| sync::<B>(device)));
            (result, Some(peak))
        }
        None => (work().and_then(|()| sync::<B>(device)), None),
    };
    result?;
    Ok((start.elapsed(), peak))
}

impl SpeedReport {
    /// The bench as a figure: time per training step and per generated image, and peak heap, against s.
    pub fn figure(&self) -> Result<image::RgbImage, EvalError> {
        let report = self;
        let series = |name: &str, value: &dyn Fn(&SpeedRow) -> Option<f64>, colour| Series {
            name: name.into(),
            points: report
                .rows
                .iter()
                .filter_map(|row| Some((row.window as f64, value(row)?)))
                .collect(),
            colour,
        };
        let panels = [
            Panel {
                title: format!("Time on {} ({})", report.backend, report.model),
                x_label: "window s".into(),
                y_label: "milliseconds (log)".into(),
                log_y: true,
                series: vec![
                    series(
                        &format!("training step (batch {})", report.batch_size),
                        &|r| Some(r.train_step_ms),
                        PALETTE[0],
                    ),
                    series("generating one image", &|r| Some(r.generate_ms), PALETTE[1]),
                ],
            },
            Panel {
                title: "Peak heap".into(),
                x_label: "window s".into(),
                y_label: "MiB".into(),
                log_y: false,
                series: vec![
                    series("training step", &|r| r.train_peak_mib, PALETTE[0]),
                    series("generating one image", &|r| r.generate_peak_mib, PALETTE[1]),
                ],
            },
        ];
        line_chart(&panels).map_err(|e| EvalError::Config(format!("drawing the speed figure: {e}")))
    }

    /// The report as Markdown: the measured table with ratios to the first row, then the counted paper shape.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Measured on {}: {}; training batch {}, captions of {} ids, medians of {} interleaved repetitions.\n\n",
            self.backend, self.model, self.batch_size, self.text_len, self.repeats
        );
        out += "| s | positions / image | train step ms | train img/s | × | generate ms / image | × | train peak MiB | generate peak MiB | train GFLOP / image | params |\n";
        out += "|---|---|---|---|---|---|---|---|---|---|---|\n";
        let base = &self.rows[0];
        let peak = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for row in &self.rows {
            out += &format!(
                "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} | {} | {:.3} | {} |\n",
                row.window,
                row.image_positions,
                row.train_step_ms,
                row.train_images_per_s,
                base.train_step_ms / row.train_step_ms,
                row.generate_ms,
                base.generate_ms / row.generate_ms,
                peak(row.train_peak_mib),
                peak(row.generate_peak_mib),
                row.train_flops / 1e9,
                row.parameters
            );
        }
        out += "\n× = speed-up over the first row (time of the first row / time of this row).\n";
        if !self.counted.is_empty() {
            out += "\nThe paper's 2.7B shape, counted analytically (not run):\n\n";
            out += "| resolution | s | image codes | positions | train TFLOP / image | × fewer | generate TFLOP / image | × fewer |\n";
            out += "|---|---|---|---|---|---|---|---|\n";
            for row in &self.counted {
                let base = self
                    .counted
                    .iter()
                    .find(|r| r.resolution == row.resolution)
                    .expect("the row itself at least");
                out += &format!(
                    "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} |\n",
                    row.resolution,
                    row.window,
                    row.image_codes,
                    row.sequence_len,
                    row.train_flops / 1e12,
                    base.train_flops / row.train_flops,
                    row.generate_flops / 1e12,
                    base.generate_flops / row.generate_flops
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_test_support::TestBackend;

    fn tiny() -> LmArchitecture {
        LmArchitecture {
            text_vocab: 64,
            codebook: 16,
            max_text_len: 8,
            ..LmArchitecture::micro()
        }
    }

    #[test]
    fn measures_every_window_with_the_right_sequence_lengths() {
        let bench = SpeedBench {
            lm: tiny(),
            grid: 8,
            windows: vec![1, 2, 4],
            batch_size: 2,
            text_len: 4,
            warmup: 1,
            repeats: 2,
        };
        let mut calls = 0;
        let report = bench
            .run::<Autodiff<TestBackend>, std::alloc::System>("flex", &Default::default(), None, |_, _| calls += 1)
            .unwrap();
        assert_eq!(calls, 3);
        let positions: Vec<usize> = report.rows.iter().map(|r| r.image_positions).collect();
        assert_eq!(positions, [64, 16, 4]);
        assert!(
            report
                .rows
                .iter()
                .all(|r| r.train_step_ms > 0.0 && r.generate_ms > 0.0 && r.train_peak_mib.is_none())
        );
        assert_eq!(report.rows[1].sequence_len, 4 + 1 + 16);
        let markdown = report.markdown();
        assert!(markdown.contains("| 2 | 16 |"), "{markdown}");

        let bad = SpeedBench {
            windows: vec![3],
            ..bench
        };
        let err = bad
            .run::<Autodiff<TestBackend>, std::alloc::System>("flex", &Default::default(), None, |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("s = 3"), "{err}");
    }

    #[test]
    fn the_paper_shape_shrinks_fourfold_per_window_step() {
        let rows = count_paper_shape(&LmArchitecture::paper_2_7b(), 8, &[1024], &[1, 2], 64).unwrap();
        assert_eq!((rows[0].image_codes, rows[1].image_codes), (16384, 16384));
        // The paper's numbers: 1024² at f = 8 is 16,384 codes, 4,096 Transformer positions after s = 2.
        assert_eq!(rows[1].sequence_len, 64 + 1 + 4096);
        assert!(rows[0].train_flops / rows[1].train_flops > 3.5);
    }
}
