//! `cargo xtask bench highres`: the arguments and printing of `token_shuffle_eval::benches::highres` (one
//! high-resolution image, generation with CFG and the VQ decode, timed per phase with its peak memory).

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::config::Config;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_eval::benches::{self, HighresEvent};
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

impl BackendTask for HighresBench {
    type Output = ();

    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let vq =
            VqModelConfig::load(&self.vq).with_context(|| format!("{}: not a VQ model config", self.vq.display()))?;
        let bench = benches::HighresBench {
            lm: crate::count::load_lm_config(&self.config)?,
            vq,
            resolutions: self.resolution,
            windows: self.window,
            cfg: self.cfg,
            text_len: self.text_len,
            decode: !self.no_decode,
        };
        bench.check()?;
        let header = format!(
            "bench highres: backend {}, LM {} (d = {}, {} layers) with K = {} codes, VQ decoder {} (f = {}), \
             one image, batch 1 with CFG {} (half-linear: 2 rows), captions of {} ids, top-k 1000; \
             random weights",
            backend.name(),
            self.config.display(),
            bench.lm.decoder.d_model,
            bench.lm.decoder.n_layers,
            bench.vq.codebook_size,
            self.vq.display(),
            bench.vq.downsample_factor(),
            self.cfg,
            self.text_len,
        );
        eprintln!("{header}");
        // Heap counts measure what a CPU backend allocates; a GPU's memory is the driver's (scripts/gpu-check.sh
        // reads it from nvidia-smi).
        let heap = (backend == BackendKind::Flex).then_some(&crate::HEAP);
        let mut progress = crate::run::Bar::default();
        let report = bench.run::<B, _>(&device, heap, |event| match *event {
            HighresEvent::Generating {
                resolution,
                window,
                steps,
            } => {
                eprintln!("  {resolution} px, s = {window}: generating ({steps} steps)");
                progress.start(&format!("{resolution} px, s = {window}"), steps);
            }
            HighresEvent::Step { done, total, seconds } => {
                progress.update(done, None);
                if done.is_multiple_of((total / 10).max(1)) {
                    progress.line(&format!("    {done}/{total} steps, {seconds:.0} s"));
                }
            }
            HighresEvent::Generated => progress.finish(),
            HighresEvent::Decoding { resolution } => eprintln!("  {resolution} px: VQ decode"),
        })?;
        let markdown = format!("{header}\n\n{}", report.table());
        println!("{markdown}");
        std::fs::create_dir_all(&self.out).with_context(|| format!("creating {}", self.out.display()))?;
        let stem = self.out.join(format!("highres-{}", backend.name()));
        std::fs::write(stem.with_extension("md"), &markdown)
            .with_context(|| format!("writing {}", stem.with_extension("md").display()))?;
        token_shuffle_data::save_png(&report.figure(backend.name())?, &stem.with_extension("png"))?;
        eprintln!("wrote {0}.md and {0}.png", stem.display());
        Ok(())
    }
}
