//! `cargo xtask bench highres`: the mechanics of one high-resolution image — KV-cache generation with CFG at the
//! paper's grid geometry, then the VQ decode — timed per phase with its peak memory.
//!
//! Random-initialised weights: this measures time and memory, not quality (both depend on the shapes only).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::config::Config;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_eval::report::{PALETTE, Panel, Series, line_chart};
use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
use token_shuffle_vqgan::VqModelConfig;

use crate::backend::{BackendKind, BackendTask};

/// Arguments of `cargo xtask bench highres`.
#[derive(Args)]
pub struct HighresBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: BackendKind,
    /// LM preset whose decoder is used; its codebook is replaced by the VQ's.
    #[arg(long, default_value = "configs/lm-tiny.json")]
    config: PathBuf,
    /// VQ preset whose decoder turns the codes into pixels (and whose factor f sets the code grid).
    #[arg(long, default_value = "configs/llamagen-vq16.json")]
    vq: PathBuf,
    /// Image sides in pixels; the code grid is resolution / f per side.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048")]
    resolution: Vec<usize>,
    /// Window sizes s; each generates one image.
    #[arg(long, value_delimiter = ',', default_value = "2")]
    window: Vec<usize>,
    /// Classifier-free guidance scale (half-linear schedule); the batch holds a conditional and an unconditional
    /// row, as in real generation.
    #[arg(long, default_value_t = 3.0)]
    cfg: f64,
    /// Caption length in text ids.
    #[arg(long, default_value_t = 16)]
    text_len: usize,
    /// Skip the VQ decode (to time generation alone).
    #[arg(long)]
    no_decode: bool,
    /// Where the report (`highres-<backend>.md`) and the figure of the step times go.
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
}

/// One generated image at one (resolution, s).
struct Row {
    resolution: usize,
    grid: usize,
    window: usize,
    steps: usize,
    prefill: Duration,
    early: Duration,
    late: Duration,
    generate: Duration,
    generate_peak: Option<usize>,
    /// Time per step over the image, (fraction done, ms), for the figure.
    curve: Vec<(f64, f64)>,
    decode: Option<(Duration, Option<usize>)>,
}

impl BackendTask for HighresBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let vq =
            VqModelConfig::load(&self.vq).with_context(|| format!("{}: not a VQ model config", self.vq.display()))?;
        let mut lm = crate::count::load_lm_config(&self.config)?;
        lm.codebook = vq.codebook_size;
        let f = vq.downsample_factor();
        if self.resolution.is_empty() || self.window.is_empty() || self.text_len == 0 {
            bail!("--resolution, --window and --text-len need at least one value each");
        }
        if !self.cfg.is_finite() || self.cfg < 0.0 {
            bail!("--cfg must be a finite number ≥ 0, got {}", self.cfg);
        }
        if self.text_len > lm.max_text_len {
            bail!(
                "--text-len {} is longer than {}'s max_text_len {}",
                self.text_len,
                self.config.display(),
                lm.max_text_len
            );
        }
        for &resolution in &self.resolution {
            vq.check_image_size(resolution, resolution)?;
            for &s in &self.window {
                if s == 0 || !(resolution / f).is_multiple_of(s) {
                    bail!(
                        "--window {s} does not divide the {0}×{0} code grid of {resolution} px",
                        resolution / f
                    );
                }
            }
        }
        // Heap counts measure what a CPU backend allocates; a GPU's memory is the driver's (scripts/gpu-check.sh
        // reads it from nvidia-smi).
        let heap = (backend == BackendKind::Flex).then_some(&crate::HEAP);
        let header = format!(
            "bench highres: backend {}, LM {} (d = {}, {} layers) with K = {} codes, VQ decoder {} (f = {f}), \
             one image, batch 1 with CFG {} (half-linear: 2 rows), captions of {} ids, top-k 1000; \
             random weights",
            backend.name(),
            self.config.display(),
            lm.decoder.d_model,
            lm.decoder.n_layers,
            lm.codebook,
            self.vq.display(),
            self.cfg,
            self.text_len,
        );
        eprintln!("{header}");
        let options = GenerateOptions {
            cfg_scale: self.cfg,
            schedule: CfgSchedule::HalfLinear,
            sampler: Sampler::default(),
            seed: 0,
        };
        let caption: Vec<u32> = (0..self.text_len as u32)
            .map(|i| 1 + i % (lm.text_vocab as u32 - 1))
            .collect();
        let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"));
        let decoder = if self.no_decode {
            None
        } else {
            Some(vq.init::<B>(&device)?)
        };
        let mut rows = Vec::new();
        for &resolution in &self.resolution {
            let grid = resolution / f;
            for (i, &s) in self.window.iter().enumerate() {
                let config = lm.clone().into_config([grid, grid], s);
                let model = config.init::<B>(&device).map_err(|e| anyhow::anyhow!("s = {s}: {e}"))?;
                let steps = config.windows();
                eprintln!("  {resolution} px, {grid}×{grid} codes, s = {s}: generating ({steps} steps)");
                let mut progress = crate::run::Bar::default();
                progress.start(&format!("{resolution} px, s = {s}"), steps);
                let tenth = (steps / 10).max(1);
                let mut marks = Vec::with_capacity(steps + 1);
                heap.inspect(|h| h.reset_peak());
                let base = heap.map(|h| h.current());
                let start = Instant::now();
                marks.push(start);
                let codes = model.generate(std::slice::from_ref(&caption), &options, &device, &mut |step| {
                    marks.push(Instant::now());
                    progress.update(step.done, None);
                    if step.done % tenth == 0 {
                        let seconds = start.elapsed().as_secs_f64();
                        progress.line(&format!("    {}/{} steps, {seconds:.0} s", step.done, step.total));
                    }
                })?;
                sync()?;
                let generate = start.elapsed();
                progress.finish();
                let generate_peak = heap.zip(base).map(|(h, base)| h.peak().saturating_sub(base));
                drop(model);
                let steps_times: Vec<Duration> = marks.windows(2).map(|w| w[1] - w[0]).collect();
                let later = &steps_times[1..];
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
                // One decode per resolution: it does not depend on s.
                let decode = match (&decoder, i) {
                    (Some(vq_model), 0) => {
                        eprintln!("  {resolution} px: VQ decode of the {grid}×{grid} codes");
                        heap.inspect(|h| h.reset_peak());
                        let base = heap.map(|h| h.current());
                        let start = Instant::now();
                        let image = vq_model.decode(codes);
                        sync()?;
                        let elapsed = start.elapsed();
                        let peak = heap.zip(base).map(|(h, base)| h.peak().saturating_sub(base));
                        drop(image);
                        Some((elapsed, peak))
                    }
                    _ => None,
                };
                rows.push(Row {
                    resolution,
                    grid,
                    window: s,
                    steps,
                    prefill: steps_times[0],
                    early: mean(&later[..tenth.min(later.len())]),
                    late: mean(&later[later.len().saturating_sub(tenth)..]),
                    generate,
                    generate_peak,
                    curve,
                    decode,
                });
            }
        }
        let markdown = format!("{header}\n\n{}", table(&rows));
        println!("{markdown}");
        std::fs::create_dir_all(&self.out).with_context(|| format!("creating {}", self.out.display()))?;
        let stem = self.out.join(format!("highres-{}", backend.name()));
        std::fs::write(stem.with_extension("md"), &markdown)
            .with_context(|| format!("writing {}", stem.with_extension("md").display()))?;
        token_shuffle_data::save_png(&figure(&rows, backend)?, &stem.with_extension("png"))?;
        eprintln!("wrote {0}.md and {0}.png", stem.display());
        Ok(())
    }
}

fn mib(bytes: Option<usize>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64))
}

fn table(rows: &[Row]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::from(
        "| px | codes | s | steps | prefill + 1st step ms | early ms/step | late ms/step | generate s | generate peak MiB \
         | VQ decode s | decode peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
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
fn figure(rows: &[Row], backend: BackendKind) -> Result<image::RgbImage> {
    let series = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: format!("{} px, s = {} ({} steps)", r.resolution, r.window, r.steps),
            points: r.curve.clone(),
            colour: PALETTE[i % PALETTE.len()],
        })
        .collect();
    let panel = Panel {
        title: format!("Generation step time over one image ({})", backend.name()),
        x_label: "fraction of the image generated".into(),
        y_label: "ms per step (log)".into(),
        log_y: true,
        series,
    };
    line_chart(&[panel]).map_err(anyhow::Error::msg)
}
