//! `cargo xtask bench …`: benchmarks that print ratios measured side by side in one run.
//!
//! Machines here are shared and noisy, so every benchmark interleaves the variants it compares inside each
//! repetition and reports medians and ratios, never a lone absolute time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use clap::{Args, Subcommand};
use token_shuffle::{window_merge, window_split};

use crate::backend::{BackendKind, BackendTask, run_on};

/// Arguments of `cargo xtask bench`: without a subcommand, the LM at s = 1, 2, 4 side by side.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    which: Option<Bench>,
    #[command(flatten)]
    lm: LmBench,
}

impl BenchCommand {
    pub fn run(self) -> Result<()> {
        self.which.unwrap_or(Bench::Lm(self.lm)).run()
    }
}

#[derive(Subcommand)]
pub enum Bench {
    /// The default: the same LM with s = 1, 2, 4 — training step, generation per image, peak heap, Transformer
    /// positions — and the paper's 2.7B shape counted at 512, 1024, 2048 px. Writes runs/bench/lm-<backend>.{md,json}.
    Lm(LmBench),
    /// `window_merge` + `window_split` round trip against a plain copy of the same tensor.
    Op(OpBench),
    /// Decoding and resizing every Twemoji image, on all cores (rayon) against one thread.
    Decode(DecodeBench),
    /// KV-cache generation of one image with the same LM at s = 1, 2, 4: time per image and per step.
    Generate(GenerateBench),
    /// VQ tokenizer encode and decode throughput (images/s) at several resolutions.
    Tokenizer(TokenizerBench),
    /// Broadcast adds in 4-D and 2-D, and burn's GroupNorm against vqgan's, on one activation tensor.
    Norm(NormBench),
    /// One high-resolution image (default 1024 and 2048 px at the paper's f = 16 geometry): KV-cache generation
    /// with CFG, then the VQ decode, timed per phase with peak memory. Writes runs/bench/highres-<backend>.{md,png}.
    Highres(crate::highres::HighresBench),
    /// One n×n×n matrix product in the backend's float type: the achieved TFLOP/s the other benches are read
    /// against (what the hardware and the backend's matmul reach at best).
    Matmul(MatmulBench),
    /// A synthetic code cache of up to a million 64×64 grids as shard files: time to build and open, time per
    /// training batch read, and the memory both need (independent of the data set's size). Writes
    /// runs/bench/code-cache.md.
    CodeCache(crate::cache_bench::CodeCacheBench),
}

impl Bench {
    pub fn run(self) -> Result<()> {
        match self {
            Bench::Lm(lm) => {
                let backend = lm.backend;
                run_on(backend, lm)
            }
            Bench::Op(op) => {
                let backend = op.backend;
                run_on(backend, op)
            }
            Bench::Decode(decode) => decode.run(),
            Bench::Generate(generate) => {
                let backend = generate.backend;
                run_on(backend, generate)
            }
            Bench::Tokenizer(tokenizer) => {
                let backend = tokenizer.backend;
                run_on(backend, tokenizer)
            }
            Bench::Norm(norm) => {
                let backend = norm.backend;
                run_on(backend, norm)
            }
            Bench::Highres(highres) => {
                let backend = highres.backend;
                run_on(backend, highres)
            }
            Bench::Matmul(matmul) => {
                let backend = matmul.backend;
                run_on(backend, matmul)
            }
            Bench::CodeCache(cache) => cache.run(),
        }
    }
}

/// Arguments of `cargo xtask bench op`.
#[derive(Args)]
pub struct OpBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// Token grid [B, H, W, C], f32.
    #[arg(long, value_delimiter = ',', default_value = "8,128,128,256")]
    shape: Vec<usize>,
    /// Window sizes s to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    windows: Vec<usize>,
    /// Timed repetitions (after the warm-up ones); medians are reported.
    #[arg(long, default_value_t = 15)]
    repeats: usize,
    /// Untimed repetitions first (kernel compilation, allocator warm-up).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

impl BackendTask for OpBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let [batch, height, width, channels]: [usize; 4] = self
            .shape
            .as_slice()
            .try_into()
            .with_context(|| format!("--shape takes 4 numbers B,H,W,C; got {:?}", self.shape))?;
        for &s in &self.windows {
            if s == 0 || height % s != 0 || width % s != 0 {
                bail!("--windows: s = {s} does not divide the {height}×{width} grid");
            }
        }
        if self.repeats == 0 {
            bail!("--repeats must be at least 1");
        }
        let x = Tensor::<B, 4>::random(
            [batch, height, width, channels],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let bytes = (batch * height * width * channels * 4) as f64;
        println!(
            "bench op: backend {}, x = [{batch}, {height}, {width}, {channels}] f32 ({:.0} MiB), {} warm-up + {} timed repetitions",
            backend.name(),
            bytes / (1 << 20) as f64,
            self.warmup,
            self.repeats
        );

        let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"));
        // The plain copy: one read and one write of every element (x stays alive, so the output is a new buffer).
        let copy = || -> Result<Duration> {
            let start = Instant::now();
            let y = x.clone().add_scalar(0.0);
            sync()?;
            let elapsed = start.elapsed();
            drop(y);
            Ok(elapsed)
        };
        let round_trip = |s: usize| -> Result<Duration> {
            let start = Instant::now();
            let y = window_split(window_merge(x.clone(), s)?, [height, width], s)?;
            sync()?;
            let elapsed = start.elapsed();
            drop(y);
            Ok(elapsed)
        };

        let mut copy_times = Vec::new();
        let mut trip_times = vec![Vec::new(); self.windows.len()];
        for repetition in 0..self.warmup + self.repeats {
            let timed = repetition >= self.warmup;
            let t = copy()?;
            if timed {
                copy_times.push(t);
            }
            for (i, &s) in self.windows.iter().enumerate() {
                let t = round_trip(s)?;
                if timed {
                    trip_times[i].push(t);
                }
            }
        }

        let copy_median = median(&mut copy_times);
        println!("{:<28} {:>10} {:>10} {:>14}", "op", "median ms", "GB/s", "× plain copy");
        let row = |name: &str, t: Duration, traffic: f64| {
            let bandwidth = if traffic > 0.0 {
                format!("{:.1}", traffic / t.as_secs_f64() / 1e9)
            } else {
                "-".into()
            };
            println!(
                "{name:<28} {:>10.2} {bandwidth:>10} {:>14.2}",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() / copy_median.as_secs_f64()
            );
        };
        row("plain copy (x + 0)", copy_median, 2.0 * bytes);
        for (&s, times) in self.windows.iter().zip(&mut trip_times) {
            // Each of merge and split reads and writes the tensor once; with s = 1 both are reshapes (no copy).
            let traffic = if s == 1 { 0.0 } else { 4.0 * bytes };
            row(&format!("merge + split, s = {s}"), median(times), traffic);
        }
        Ok(())
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Arguments of `cargo xtask bench decode`.
#[derive(Args)]
pub struct DecodeBench {
    /// Output resolution in pixels.
    #[arg(long, default_value_t = 64)]
    resolution: u32,
    /// Timed repetitions of each variant (interleaved); medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

impl DecodeBench {
    fn run(self) -> Result<()> {
        if self.repeats == 0 {
            bail!("--repeats must be at least 1");
        }
        let threads = rayon::current_num_threads();
        let single = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        let load = || -> Result<(Duration, usize)> {
            let start = Instant::now();
            let (train, valid, report) = token_shuffle_data::twemoji::load_twemoji(self.resolution, 0.05)?;
            anyhow::ensure!(report.skipped.is_empty(), "{}", report.summary());
            Ok((start.elapsed(), train.len() + valid.len()))
        };
        let (_, images) = load()?; // warm-up: page in the embedded PNGs
        println!(
            "bench decode: {images} Twemoji PNGs (72×72 RGBA) → {0}×{0} RGB, {1} repetitions",
            self.resolution, self.repeats
        );
        let (mut parallel, mut serial) = (Vec::new(), Vec::new());
        for _ in 0..self.repeats {
            parallel.push(load()?.0);
            serial.push(single.install(load)?.0);
        }
        let (parallel, serial) = (median(&mut parallel), median(&mut serial));
        println!("{:<24} {:>10} {:>10}", "variant", "median ms", "images/s");
        for (name, t) in [
            ("1 thread".to_string(), serial),
            (format!("rayon, {threads} threads"), parallel),
        ] {
            println!(
                "{name:<24} {:>10.1} {:>10.0}",
                t.as_secs_f64() * 1e3,
                images as f64 / t.as_secs_f64()
            );
        }
        println!("speed-up: {:.2}×", serial.as_secs_f64() / parallel.as_secs_f64());
        Ok(())
    }
}

/// Arguments of `cargo xtask bench generate`.
#[derive(Args)]
pub struct GenerateBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// LM preset whose decoder and vocabulary are used.
    #[arg(long, default_value = "configs/lm-tiny.json")]
    config: std::path::PathBuf,
    /// Side of the code grid (the target is measured at 32×32 codes).
    #[arg(long, default_value_t = 32)]
    grid: usize,
    /// Window sizes s to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    windows: Vec<usize>,
    /// Timed images per window size, after one warm-up image; medians are reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

impl BackendTask for GenerateBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
        let preset = crate::count::load_lm_config(&self.config)?;
        if self.repeats == 0 {
            bail!("--repeats must be at least 1");
        }
        let options = GenerateOptions {
            cfg_scale: 1.0,
            schedule: CfgSchedule::Constant,
            sampler: Sampler::default(),
            seed: 0,
        };
        let prompt = vec![vec![1, 2, 3, 4, 5, 6, 7, 8]];
        println!(
            "bench generate: backend {}, {} (d = {}, {} layers), {g}×{g} codes, batch 1, no CFG, {} timed images per s",
            backend.name(),
            self.config.display(),
            preset.decoder.d_model,
            preset.decoder.n_layers,
            self.repeats,
            g = self.grid
        );
        println!(
            "{:<6} {:>8} {:>12} {:>14} {:>14} {:>11} {:>12}",
            "s", "steps", "ms / image", "early ms/step", "late ms/step", "late/early", "× vs s = 1"
        );
        let mut baseline = None;
        for &s in &self.windows {
            let config = preset.clone().into_config([self.grid, self.grid], s);
            let model = config.init::<B>(&device).map_err(|e| anyhow::anyhow!("s = {s}: {e}"))?;
            let mut totals = Vec::new();
            let (mut early, mut late) = (Vec::new(), Vec::new());
            for repetition in 0..=self.repeats {
                let mut marks = Vec::with_capacity(config.windows() + 1);
                let start = Instant::now();
                marks.push(start);
                model.generate(&prompt, &options, &device, &mut |_| marks.push(Instant::now()))?;
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
            let total = median(&mut totals);
            let baseline = *baseline.get_or_insert(total);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let (early, late) = if early.is_empty() {
                (None, None)
            } else {
                (Some(median(&mut early)), Some(median(&mut late)))
            };
            println!(
                "{s:<6} {:>8} {:>12.1} {:>14} {:>14} {:>11} {:>12.2}",
                config.windows(),
                ms(total),
                early.map_or("-".into(), |d| format!("{:.2}", ms(d))),
                late.map_or("-".into(), |d| format!("{:.2}", ms(d))),
                early
                    .zip(late)
                    .map_or("-".into(), |(e, l)| format!("{:.2}", l.as_secs_f64() / e.as_secs_f64())),
                baseline.as_secs_f64() / total.as_secs_f64()
            );
        }
        Ok(())
    }
}

/// Arguments of `cargo xtask bench tokenizer`.
#[derive(Args)]
pub struct TokenizerBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// VQ model preset (throughput does not depend on the weights; random ones are used).
    #[arg(long, default_value = "configs/vq-tiny.json")]
    config: std::path::PathBuf,
    /// Image sides to measure, in pixels.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    resolutions: Vec<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed repetitions (after one warm-up); medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Also print one JSON line per resolution (for bench/peers/compare_vq.py).
    #[arg(long)]
    json: bool,
}

impl BackendTask for TokenizerBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        use burn::config::Config;
        use burn::module::{AutodiffModule, Module};
        use burn::optim::Optimizer;
        let config = token_shuffle_vqgan::VqModelConfig::load(&self.config)
            .with_context(|| format!("{}: not a VQ model config", self.config.display()))?;
        let mut model = config.init::<Autodiff<B>>(&device)?;
        let mut optimizer =
            burn::optim::AdamWConfig::new().init::<Autodiff<B>, token_shuffle_vqgan::VqModel<Autodiff<B>>>();
        // The generator loss alone (L2 + codebook + commitment, the model's entropy weight): no GAN.
        let loss_config = token_shuffle_vqgan::VqLossConfig::new();
        if self.repeats == 0 || self.batch == 0 {
            bail!("--repeats and --batch must be at least 1");
        }
        println!(
            "bench tokenizer: {} (f = {}, K = {}), backend {}, batch {}, 1 warm-up + {} timed repetitions",
            self.config.display(),
            model.downsample_factor(),
            model.codebook_size(),
            backend.name(),
            self.batch,
            self.repeats
        );
        println!(
            "{:>10} {:>14} {:>14} {:>14} {:>18}",
            "resolution", "train img/s", "encode img/s", "decode img/s", "encode+decode img/s"
        );
        for &resolution in &self.resolutions {
            config.check_image_size(resolution, resolution)?;
            let images = Tensor::<Autodiff<B>, 4>::random(
                [self.batch, 3, resolution, resolution],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            );
            let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"));
            let (mut train_times, mut encode_times, mut decode_times) = (Vec::new(), Vec::new(), Vec::new());
            for repetition in 0..=self.repeats {
                let start = Instant::now();
                let forward = model.forward(images.clone())?;
                let loss = loss_config.generator(&model, None, images.clone(), &forward, 0);
                let grads = burn::optim::GradientsParams::from_grads(loss.total.backward(), &model);
                model = optimizer.step(1e-4, model, grads);
                sync()?;
                let trained = Instant::now();
                let inference = model.valid();
                let codes = inference.encode(images.clone().inner())?;
                sync()?;
                let encoded = Instant::now();
                let decoded = inference.decode(codes);
                sync()?;
                drop(decoded);
                if repetition > 0 {
                    train_times.push(trained - start);
                    encode_times.push(encoded - trained);
                    decode_times.push(encoded.elapsed());
                }
            }
            let rate = |t: Duration| self.batch as f64 / t.as_secs_f64();
            let ms = |times: &[Duration]| times.iter().map(|t| t.as_secs_f64() * 1e3).collect::<Vec<_>>();
            if self.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "resolution": resolution,
                        "parameters": model.num_params(),
                        "train_ms": ms(&train_times),
                        "encode_ms": ms(&encode_times),
                        "decode_ms": ms(&decode_times),
                    })
                );
            }
            let (train, encode, decode) = (
                median(&mut train_times),
                median(&mut encode_times),
                median(&mut decode_times),
            );
            println!(
                "{resolution:>10} {:>14.1} {:>14.1} {:>14.1} {:>18.1}",
                rate(train),
                rate(encode),
                rate(decode),
                rate(encode + decode)
            );
        }
        Ok(())
    }
}

/// Arguments of `cargo xtask bench` / `cargo xtask bench lm`.
#[derive(Args)]
pub struct LmBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// LM preset whose decoder and vocabulary are measured, or a HuggingFace checkpoint directory (its shape,
    /// with 8192 image codes; the weights are not read).
    #[arg(long, default_value = "configs/lm-tiny.json")]
    config: PathBuf,
    /// Side of the code grid (16: 64 px images through vq-tiny).
    #[arg(long, default_value_t = 16)]
    grid: usize,
    /// Window sizes s to compare; the first is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    windows: Vec<usize>,
    /// Images per training step.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Caption length in text ids.
    #[arg(long, default_value_t = 16)]
    text_len: usize,
    /// Untimed repetitions first (GPU backends compile and autotune kernels then; give them several).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed repetitions; medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The paper's shape, counted analytically (not run).
    #[arg(long, default_value = "configs/lm-2.7b.json")]
    paper_config: PathBuf,
    /// VQ downsample factor for the counted paper shape (the paper's token counts use 8).
    #[arg(long, default_value_t = 8)]
    paper_downsample: usize,
    /// Where the Markdown table and the JSON go.
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
}

impl BackendTask for LmBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let bench = token_shuffle_eval::SpeedBench {
            lm: crate::count::load_lm_config(&self.config)?,
            grid: self.grid,
            windows: self.windows.clone(),
            batch_size: self.batch_size,
            text_len: self.text_len,
            warmup: self.warmup,
            repeats: self.repeats,
        };
        let paper = crate::count::load_lm_config(&self.paper_config)?;
        // Heap counts measure what a CPU backend allocates; a GPU's memory is the driver's.
        let heap = (backend == BackendKind::Flex).then_some(&crate::HEAP);
        eprintln!(
            "bench lm: {} at {g}×{g} codes, s = {:?}, batch {}, {} warm-up + {} timed repetitions on {}",
            self.config.display(),
            self.windows,
            self.batch_size,
            self.warmup,
            self.repeats,
            backend.name(),
            g = self.grid
        );
        let mut report = bench.run::<Autodiff<B>, _>(backend.name(), &device, heap, |done, total| {
            eprintln!("  repetition {done}/{total}")
        })?;
        report.counted =
            token_shuffle_eval::count_paper_shape(&paper, self.paper_downsample, &[512, 1024, 2048], &[1, 2, 4], 64)?;
        let markdown = format!(
            "{}\nThe paper's shape is {} (captions of 64 ids, VQ downsample {}).\n",
            report.markdown(),
            self.paper_config.display(),
            self.paper_downsample
        );
        println!("{markdown}");
        std::fs::create_dir_all(&self.out).with_context(|| format!("creating {}", self.out.display()))?;
        let stem = self.out.join(format!("lm-{}", backend.name()));
        std::fs::write(stem.with_extension("md"), &markdown)?;
        std::fs::write(stem.with_extension("json"), serde_json::to_string_pretty(&report)?)?;
        token_shuffle_data::save_png(&speed_figure(&report)?, &stem.with_extension("png"))?;
        eprintln!("wrote {0}.md, {0}.json and {0}.png", stem.display());
        Ok(())
    }
}

/// The speed bench as a figure: time per training step and per generated image, and peak heap, against s.
fn speed_figure(report: &token_shuffle_eval::SpeedReport) -> Result<image::RgbImage> {
    use token_shuffle_eval::report::{PALETTE, Panel, Series, line_chart};
    let series = |name: &str, value: &dyn Fn(&token_shuffle_eval::speed::SpeedRow) -> Option<f64>, colour| Series {
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
    line_chart(&panels).map_err(anyhow::Error::msg)
}

/// Arguments of `cargo xtask bench matmul`.
#[derive(Args)]
pub struct MatmulBench {
    /// Backend to run on (`cuda-bf16` for bf16 tensor cores).
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// n: the product is [n, n] × [n, n] (2·n³ FLOP). The GPU check uses 8192.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Timed repetitions (after two warm-up ones); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

impl BackendTask for MatmulBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let n = self.size;
        if n == 0 || self.repeats == 0 {
            bail!("--size and --repeats must be at least 1");
        }
        let a = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), &device);
        let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"));
        sync()?;
        let mut times = Vec::new();
        for repetition in 0..2 + self.repeats {
            let start = Instant::now();
            let c = a.clone().matmul(b.clone());
            sync()?;
            if repetition >= 2 {
                times.push(start.elapsed());
            }
            drop(c);
        }
        let t = median(&mut times);
        let flop = 2.0 * (n as f64).powi(3);
        println!(
            "bench matmul: backend {}, [{n}, {n}] × [{n}, {n}], 2 warm-up + {} timed: median {:.2} ms, {:.2} TFLOP/s",
            backend.name(),
            self.repeats,
            t.as_secs_f64() * 1e3,
            flop / t.as_secs_f64() / 1e12
        );
        Ok(())
    }
}

/// Arguments of `cargo xtask bench norm`.
#[derive(Args)]
pub struct NormBench {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendKind,
    /// Activation [N, C, H, W], f32.
    #[arg(long, value_delimiter = ',', default_value = "8,64,64,64")]
    shape: Vec<usize>,
    /// Groups of the GroupNorms.
    #[arg(long, default_value_t = 32)]
    groups: usize,
    /// Timed repetitions (after one warm-up); medians are reported.
    #[arg(long, default_value_t = 9)]
    repeats: usize,
}

impl BackendTask for NormBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let [n, c, h, w]: [usize; 4] = self
            .shape
            .as_slice()
            .try_into()
            .with_context(|| format!("--shape takes 4 numbers N,C,H,W; got {:?}", self.shape))?;
        if self.groups == 0 || c % self.groups != 0 || self.repeats == 0 {
            bail!("--groups must divide the {c} channels, and --repeats must be at least 1");
        }
        let x = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let same = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let channel = Tensor::<B, 1>::random([c], Distribution::Normal(0.0, 1.0), &device);
        let per_row = Tensor::<B, 2>::random([n * c, 1], Distribution::Normal(0.0, 1.0), &device);
        let ours = token_shuffle_vqgan::GroupNormConfig::new(self.groups, c).init::<B>(&device);
        let burns = burn::nn::GroupNormConfig::new(self.groups, c)
            .with_epsilon(1e-6)
            .init::<B>(&device);
        let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("backend sync failed: {e:?}"));
        type Case<'a, B> = (&'static str, Box<dyn Fn() -> Tensor<B, 4> + 'a>);
        let cases: Vec<Case<B>> = vec![
            ("x + y (same shape)", Box::new(|| x.clone() + same.clone())),
            (
                "x + b, b [1,C,1,1] (4-D broadcast)",
                Box::new(|| x.clone() + channel.clone().reshape([1, c, 1, 1])),
            ),
            (
                "x + b as [N·C, H·W] + [N·C, 1] (2-D)",
                Box::new(|| (x.clone().reshape([n * c, h * w]) + per_row.clone()).reshape([n, c, h, w])),
            ),
            ("burn::nn::GroupNorm", Box::new(|| burns.forward(x.clone()))),
            ("token_shuffle_vqgan::GroupNorm", Box::new(|| ours.forward(x.clone()))),
        ];
        let mut times = vec![Vec::new(); cases.len()];
        for repetition in 0..=self.repeats {
            for (i, (_, case)) in cases.iter().enumerate() {
                let start = Instant::now();
                let y = case();
                sync()?;
                let elapsed = start.elapsed();
                drop(y);
                if repetition > 0 {
                    times[i].push(elapsed);
                }
            }
        }
        println!(
            "bench norm: backend {}, x = [{n}, {c}, {h}, {w}] f32, {} groups, 1 warm-up + {} timed repetitions",
            backend.name(),
            self.groups,
            self.repeats
        );
        let base = median(&mut times[0]);
        println!("{:<40} {:>10} {:>16}", "operation", "median ms", "× same-shape add");
        for ((name, _), t) in cases.iter().zip(&mut times) {
            let t = median(t);
            println!(
                "{name:<40} {:>10.2} {:>16.2}",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() / base.as_secs_f64()
            );
        }
        Ok(())
    }
}
