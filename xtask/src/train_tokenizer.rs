//! `cargo xtask train-tokenizer`: train a VQ tokenizer on scenes, Twemoji or an image folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_train::{
    ImageSource, TokenizerEvent, TokenizerTrainingConfig, TrainingImages, config_file, train_tokenizer,
};
use token_shuffle_vqgan::VqModelConfig;

use crate::backend::{BackendKind, BackendTask, run_on};

/// Arguments of `cargo xtask train-tokenizer`.
#[derive(Args)]
pub struct TrainTokenizer {
    /// A VQ model preset (e.g. configs/vq-tiny.json) or a full tokenizer training config (a `config.json` written
    /// by an earlier run); the flags below override its training settings.
    #[arg(long)]
    config: PathBuf,
    /// Training images: `scenes`, `twemoji`, or a folder of PNG/JPEG/WebP images.
    #[arg(long, default_value = "scenes")]
    data: String,
    /// Run directory (default: runs/tokenizer-<config name>-<data>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Optimisation steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Images per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Image side in pixels.
    #[arg(long)]
    resolution: Option<usize>,
    /// Validate (and save weights) every this many steps.
    #[arg(long)]
    valid_every: Option<usize>,
    /// Seed of the weights and the data order.
    #[arg(long)]
    seed: Option<u64>,
    /// Backend to train on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl TrainTokenizer {
    pub fn run(self) -> Result<()> {
        let source: ImageSource = self.data.parse().map_err(anyhow::Error::msg)?;
        // A file with a `model` is a whole tokenizer training config; otherwise it is a VQ model preset. Fields a
        // file does not give are vq-tiny's (and the training defaults).
        let text =
            std::fs::read_to_string(&self.config).with_context(|| format!("reading {}", self.config.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", self.config.display()))?;
        if json.get("tokenizer").is_some() && json.get("lm").is_some() {
            anyhow::bail!(
                "{} is a run config (it has `tokenizer` and `lm` sections): train it with `cargo xtask train --config \
                 {}`, or give train-tokenizer a VQ preset such as configs/vq-tiny.json",
                self.config.display(),
                self.config.display()
            );
        }
        // Flags are checked as flags, before they are mixed into the config.
        for (flag, value) in [
            ("--steps", self.steps),
            ("--batch-size", self.batch_size),
            ("--resolution", self.resolution),
            ("--valid-every", self.valid_every),
        ] {
            if value == Some(0) {
                anyhow::bail!("{flag} 0: must be at least 1");
            }
        }
        let defaults = TokenizerTrainingConfig::new(VqModelConfig::tiny());
        let mut config = if json.get("model").is_some() {
            config_file::load_with_defaults(&self.config, &defaults)?
        } else {
            TokenizerTrainingConfig::new(config_file::load_with_defaults(&self.config, &defaults.model)?)
        };
        config.steps = self.steps.unwrap_or(config.steps);
        config.batch_size = self.batch_size.unwrap_or(config.batch_size);
        config.learning_rate = self.lr.unwrap_or(config.learning_rate);
        config.resolution = self.resolution.unwrap_or(config.resolution);
        config.valid_every = self.valid_every.unwrap_or(config.valid_every);
        config.seed = self.seed.unwrap_or(config.seed);
        config.check()?;
        let name = self
            .config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data_name = match &source {
            ImageSource::Folder(path) => path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            other => other.to_string(),
        };
        let out = self
            .out
            .unwrap_or_else(|| PathBuf::from(format!("runs/tokenizer-{name}-{data_name}")));
        token_shuffle_train::check_tokenizer_out(&out, &config)?;
        run_on(self.backend, Task { config, source, out })
    }
}

struct Task {
    config: TokenizerTrainingConfig,
    source: ImageSource,
    out: PathBuf,
}

impl BackendTask for Task {
    type Output = ();
    fn run<B: Backend>(self, backend: BackendKind, device: B::Device) -> Result<()> {
        let Task { config, source, out } = self;
        eprintln!("loading {source} at {} px…", config.resolution);
        let hold = token_shuffle_train::images_to_hold(config.steps, config.batch_size, config.valid_images);
        let images = TrainingImages::load_at_most(
            &source,
            config.resolution as u32,
            config.valid_images,
            config.seed,
            hold,
        )?;
        if let Some(report) = &images.report {
            eprintln!("{}", report.summary());
        }
        if let Some(total) = images.sampled_from {
            eprintln!(
                "holding a seeded sample of about {hold} of the shards' {total} samples ({} steps × {})",
                config.steps, config.batch_size
            );
        }
        eprintln!(
            "training {} steps × {} images on {} → {}",
            config.steps,
            config.batch_size,
            backend.name(),
            out.display()
        );
        let started = std::time::Instant::now();
        train_tokenizer::<Autodiff<B>>(&config, &images, &out, &device, |event| match event {
            TokenizerEvent::Resumed { step } => eprintln!("resumed from the checkpoint after step {step}"),
            TokenizerEvent::SkippedCheckpoint { path, why } => {
                eprintln!("skipping checkpoint {}: {why}", path.display())
            }
            TokenizerEvent::Step(s) => eprintln!(
                "step {:>6}/{}  rec {:.5}  codebook {:.5}  commit {:.5}{}  lr {:.2e}  {:.1} img/s  [{:.0} s]",
                s.step,
                config.steps,
                s.reconstruction,
                s.codebook,
                s.commitment,
                s.gan
                    .map(|g| format!("  gan {g:.4}  disc {:.4}", s.discriminator.unwrap_or(0.0)))
                    .unwrap_or_default(),
                s.learning_rate,
                s.images_per_second,
                started.elapsed().as_secs_f32()
            ),
            TokenizerEvent::Validation(v) => {
                eprintln!("valid  step {:>6}  {}  ({} images)", v.step, v.summary(), v.images)
            }
        })?;
        eprintln!(
            "done in {:.1} min: {} (weights), {} (originals over reconstructions)",
            started.elapsed().as_secs_f32() / 60.0,
            out.join("model.safetensors").display(),
            out.join("reconstructions.png").display()
        );
        Ok(())
    }
}
