//! `bench highres`: the mechanics of one high-resolution image — KV-cache generation with CFG at the paper's grid
//! geometry, then the VQ decode — timed per phase with its peak memory.
//!
//! Random-initialised weights: this measures time and memory, not quality (both depend on the shapes only).

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use image::RgbImage;
use serde::Serialize;
use token_shuffle_lm::{CfgSchedule, GenerateOptions, LmArchitecture, Sampler};
use token_shuffle_vqgan::VqModelConfig;

use super::timing::sync;
use crate::EvalError;
use crate::memory::PeakAlloc;
use crate::report::{PALETTE, Panel, Series, line_chart};

/// What to measure.
#[derive(Debug, Clone)]
pub struct HighresBench {
    /// The LM's decoder and text side; its codebook is set to the VQ's.
    pub lm: LmArchitecture,
    /// The VQ whose decoder turns the codes into pixels (its factor f sets the code grid).
    pub vq: VqModelConfig,
    /// Image sides in pixels.
    pub resolutions: Vec<usize>,
    /// Window sizes; each generates one image per resolution.
    pub windows: Vec<usize>,
    /// Guidance scale (half-linear schedule; the batch holds a conditional and an unconditional row).
    pub cfg: f64,
    /// Caption length in text ids.
    pub text_len: usize,
    /// Whether to time the VQ decode too (once per resolution: it does not depend on s).
    pub decode: bool,
}

/// What a running bench reports.
#[derive(Debug, Clone, PartialEq)]
pub enum HighresEvent {
    /// An image begins.
    Generating {
        /// Image side.
        resolution: usize,
        /// Window s.
        window: usize,
        /// Decoding steps it takes.
        steps: usize,
    },
    /// A decoding step finished.
    Step {
        /// Steps done.
        done: usize,
        /// Steps in all.
        total: usize,
        /// Seconds since the image began.
        seconds: f64,
    },
    /// The image is generated.
    Generated,
    /// The VQ decode of a resolution begins.
    Decoding {
        /// Image side.
        resolution: usize,
    },
}

/// One generated image at one (resolution, s).
#[derive(Debug, Clone, Serialize)]
pub struct HighresRow {
    /// Image side.
    pub resolution: usize,
    /// Code grid side.
    pub grid: usize,
    /// Window s.
    pub window: usize,
    /// Decoding steps.
    pub steps: usize,
    /// The prefill with the first step.
    pub prefill: Duration,
    /// Mean step over the first tenth of the later steps.
    pub early: Duration,
    /// The same over the last tenth.
    pub late: Duration,
    /// The whole generation.
    pub generate: Duration,
    /// Peak heap above the start of generation, bytes (CPU backends only).
    pub generate_peak: Option<usize>,
    /// Time per step over the image, (fraction done, ms), for the figure.
    pub curve: Vec<(f64, f64)>,
    /// The VQ decode's time and peak heap (the first window of each resolution only).
    pub decode: Option<(Duration, Option<usize>)>,
}

/// Every image, measured.
#[derive(Debug, Clone, Serialize)]
pub struct HighresReport {
    /// In order of resolution, then window.
    pub rows: Vec<HighresRow>,
}

impl HighresBench {
    /// The LM as measured: the VQ's codebook.
    fn lm(&self) -> LmArchitecture {
        LmArchitecture {
            codebook: self.vq.codebook_size,
            ..self.lm.clone()
        }
    }

    /// Checks the shapes before anything is built.
    ///
    /// # Errors
    /// [`EvalError::Config`] naming the value.
    pub fn check(&self) -> Result<(), EvalError> {
        let fail = |message: String| Err(EvalError::Config(message));
        if self.resolutions.is_empty() || self.windows.is_empty() || self.text_len == 0 {
            return fail("resolutions, windows and text_len need at least one value each".into());
        }
        if !self.cfg.is_finite() || self.cfg < 0.0 {
            return fail(format!("cfg must be a finite number ≥ 0, got {}", self.cfg));
        }
        if self.text_len > self.lm.max_text_len {
            return fail(format!(
                "text_len {} is longer than the LM's max_text_len {}",
                self.text_len, self.lm.max_text_len
            ));
        }
        let f = self.vq.downsample_factor();
        for &resolution in &self.resolutions {
            self.vq
                .check_image_size(resolution, resolution)
                .map_err(|e| EvalError::Config(e.to_string()))?;
            for &s in &self.windows {
                if s == 0 || !(resolution / f).is_multiple_of(s) {
                    return fail(format!(
                        "--window {s} does not divide the {0}×{0} code grid of {resolution} px",
                        resolution / f
                    ));
                }
            }
        }
        Ok(())
    }

    /// Generates one image per (resolution, s), then decodes one per resolution. `heap`, when given, must be the
    /// program's global allocator (a GPU's memory is its driver's and is not counted).
    ///
    /// # Errors
    /// [`Self::check`]'s; a model that cannot be built; a backend failure.
    pub fn run<B: Backend, A>(
        &self,
        device: &B::Device,
        heap: Option<&PeakAlloc<A>>,
        mut on_event: impl FnMut(&HighresEvent),
    ) -> Result<HighresReport, EvalError> {
        self.check()?;
        let lm = self.lm();
        let options = GenerateOptions {
            cfg_scale: self.cfg,
            schedule: CfgSchedule::HalfLinear,
            sampler: Sampler::default(),
            seed: 0,
        };
        let caption: Vec<u32> = (0..self.text_len as u32)
            .map(|i| 1 + i % (lm.text_vocab as u32 - 1))
            .collect();
        let decoder = if self.decode {
            Some(
                self.vq
                    .init::<B>(device)
                    .map_err(|e| EvalError::Config(e.to_string()))?,
            )
        } else {
            None
        };
        let peak_above = |base: Option<usize>| heap.zip(base).map(|(h, base)| h.peak().saturating_sub(base));
        let start_peak = || {
            heap.inspect(|h| h.reset_peak());
            heap.map(|h| h.current())
        };
        let mut rows = Vec::new();
        for &resolution in &self.resolutions {
            let grid = resolution / self.vq.downsample_factor();
            for (i, &s) in self.windows.iter().enumerate() {
                let config = lm.clone().into_config([grid, grid], s);
                let model = config.init::<B>(device)?;
                let steps = config.windows();
                on_event(&HighresEvent::Generating {
                    resolution,
                    window: s,
                    steps,
                });
                let mut marks = Vec::with_capacity(steps + 1);
                let base = start_peak();
                let start = Instant::now();
                marks.push(start);
                let codes = model.generate(std::slice::from_ref(&caption), &options, device, &mut |step| {
                    marks.push(Instant::now());
                    on_event(&HighresEvent::Step {
                        done: step.done,
                        total: step.total,
                        seconds: start.elapsed().as_secs_f64(),
                    });
                })?;
                sync::<B>(device)?;
                let generate = start.elapsed();
                on_event(&HighresEvent::Generated);
                let generate_peak = peak_above(base);
                drop(model);
                let decode = match (&decoder, i) {
                    (Some(vq_model), 0) => {
                        on_event(&HighresEvent::Decoding { resolution });
                        let base = start_peak();
                        let start = Instant::now();
                        let image = vq_model.decode(codes);
                        sync::<B>(device)?;
                        let elapsed = start.elapsed();
                        let peak = peak_above(base);
                        drop(image);
                        Some((elapsed, peak))
                    }
                    _ => None,
                };
                rows.push(HighresRow::from_marks(
                    resolution,
                    grid,
                    s,
                    &marks,
                    generate,
                    generate_peak,
                    decode,
                ));
            }
        }
        Ok(HighresReport { rows })
    }
}

impl HighresRow {
    /// The row of an image whose steps ended at `marks` (the first mark is its start).
    fn from_marks(
        resolution: usize,
        grid: usize,
        window: usize,
        marks: &[Instant],
        generate: Duration,
        generate_peak: Option<usize>,
        decode: Option<(Duration, Option<usize>)>,
    ) -> Self {
        let steps: Vec<Duration> = marks.windows(2).map(|w| w[1] - w[0]).collect();
        let later = &steps[1..];
        let tenth = (later.len() / 10).max(1);
        let mean = |d: &[Duration]| d.iter().sum::<Duration>() / d.len().max(1) as u32;
        let bucket = (later.len() / 200).max(1);
        let curve = later
            .chunks(bucket)
            .enumerate()
            .map(|(j, chunk)| {
                let done = ((j * bucket + chunk.len()) as f64) / later.len() as f64;
                (done, mean(chunk).as_secs_f64() * 1e3)
            })
            .collect();
        Self {
            resolution,
            grid,
            window,
            steps: steps.len(),
            prefill: steps[0],
            early: mean(&later[..tenth.min(later.len())]),
            late: mean(&later[later.len().saturating_sub(tenth)..]),
            generate,
            generate_peak,
            curve,
            decode,
        }
    }
}

fn mib(bytes: Option<usize>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64))
}

impl HighresReport {
    /// The Markdown table.
    pub fn table(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut out = String::from(
            "| px | codes | s | steps | prefill + 1st step ms | early ms/step | late ms/step | generate s | generate \
             peak MiB | VQ decode s | decode peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            let (decode, decode_peak) = match r.decode {
                Some((time, peak)) => (format!("{:.1}", time.as_secs_f64()), mib(peak)),
                None => ("".into(), "".into()),
            };
            out += &format!(
                "| {} | {g}×{g} | {} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {} | {decode} | {decode_peak} |\n",
                r.resolution,
                r.window,
                r.steps,
                ms(r.prefill),
                ms(r.early),
                ms(r.late),
                r.generate.as_secs_f64(),
                mib(r.generate_peak),
                g = r.grid,
            );
        }
        out
    }

    /// Time per step over the image, one line per (resolution, s): how the KV cache's growth shows.
    ///
    /// # Errors
    /// A figure that cannot be drawn.
    pub fn figure(&self, backend: &str) -> Result<RgbImage, EvalError> {
        let series = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: format!("{} px, s = {} ({} steps)", r.resolution, r.window, r.steps),
                points: r.curve.clone(),
                colour: PALETTE[i % PALETTE.len()],
            })
            .collect();
        let panel = Panel {
            title: format!("Generation step time over one image ({backend})"),
            x_label: "fraction of the image generated".into(),
            y_label: "ms per step (log)".into(),
            log_y: true,
            series,
        };
        line_chart(&[panel]).map_err(|e| EvalError::Config(format!("drawing the highres figure: {e}")))
    }
}
