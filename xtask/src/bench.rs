//! `cargo xtask bench …`: benchmarks that print ratios measured side by side in one run.
//!
//! The benches themselves are library code (`token_shuffle_eval::benches`, `speed`): here are their arguments and
//! their printing.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use token_shuffle_eval::benches;

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
        let shape: [usize; 4] = self
            .shape
            .as_slice()
            .try_into()
            .with_context(|| format!("--shape takes 4 numbers B,H,W,C; got {:?}", self.shape))?;
        let bench = benches::OpBench {
            shape,
            windows: self.windows,
            warmup: self.warmup,
            repeats: self.repeats,
        };
        let report = bench.run::<B>(&device)?;
        println!(
            "bench op: backend {}, x = {shape:?} f32 ({:.0} MiB), {} warm-up + {} timed repetitions",
            backend.name(),
            bench.bytes() as f64 / (1 << 20) as f64,
            bench.warmup,
            bench.repeats
        );
        print!("{}", report.table());
        Ok(())
    }
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
        let bench = benches::DecodeBench {
            resolution: self.resolution,
            repeats: self.repeats,
        };
        let report = bench.run()?;
        println!(
            "bench decode: {} Twemoji PNGs (72×72 RGBA) → {1}×{1} RGB, {2} repetitions",
            report.images, self.resolution, self.repeats
        );
        print!("{}", report.table());
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
        let bench = benches::GenerateBench {
            lm: crate::count::load_lm_config(&self.config)?,
            grid: self.grid,
            windows: self.windows,
            repeats: self.repeats,
        };
        println!(
            "bench generate: backend {}, {} (d = {}, {} layers), {g}×{g} codes, batch 1, no CFG, {} timed images per s",
            backend.name(),
            self.config.display(),
            bench.lm.decoder.d_model,
            bench.lm.decoder.n_layers,
            self.repeats,
            g = self.grid
        );
        print!("{}", bench.run::<B>(&device)?.table());
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
        let model = token_shuffle_vqgan::VqModelConfig::load(&self.config)
            .with_context(|| format!("{}: not a VQ model config", self.config.display()))?;
        println!(
            "bench tokenizer: {} (f = {}, K = {}), backend {}, batch {}, 1 warm-up + {} timed repetitions",
            self.config.display(),
            model.downsample_factor(),
            model.codebook_size,
            backend.name(),
            self.batch,
            self.repeats
        );
        let bench = benches::TokenizerBench {
            model,
            resolutions: self.resolutions,
            batch: self.batch,
            repeats: self.repeats,
        };
        let report = bench.run::<Autodiff<B>>(&device)?;
        if self.json {
            for row in &report.rows {
                println!("{}", serde_json::to_string(row)?);
            }
        }
        print!("{}", report.table());
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
        token_shuffle_data::save_png(&report.figure()?, &stem.with_extension("png"))?;
        eprintln!("wrote {0}.md, {0}.json and {0}.png", stem.display());
        Ok(())
    }
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
        let report = benches::MatmulBench {
            size: n,
            repeats: self.repeats,
        }
        .run::<B>(&device)?;
        println!(
            "bench matmul: backend {}, [{n}, {n}] × [{n}, {n}], 2 warm-up + {} timed: median {:.2} ms, {:.2} TFLOP/s",
            backend.name(),
            self.repeats,
            report.median_ms,
            report.tflop_per_s
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
        let shape: [usize; 4] = self
            .shape
            .as_slice()
            .try_into()
            .with_context(|| format!("--shape takes 4 numbers N,C,H,W; got {:?}", self.shape))?;
        let report = benches::NormBench {
            shape,
            groups: self.groups,
            repeats: self.repeats,
        }
        .run::<B>(&device)?;
        println!(
            "bench norm: backend {}, x = {shape:?} f32, {} groups, 1 warm-up + {} timed repetitions",
            backend.name(),
            self.groups,
            self.repeats
        );
        print!("{}", report.table());
        Ok(())
    }
}
