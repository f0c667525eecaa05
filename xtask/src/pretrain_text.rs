//! `cargo xtask pretrain-text`: a text LM trained on the scene grammar's training captions, written as a
//! HuggingFace checkpoint that a run starts from with `lm.init` (the stand-in for a downloaded LLM).

use std::path::PathBuf;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_data::scenes::{SceneCorpus, Split};
use token_shuffle_train::{TextPretrainingConfig, config_file, pretrain_text};

use crate::backend::{BackendKind, BackendTask, run_on};

/// Arguments of `cargo xtask pretrain-text`.
#[derive(Args)]
pub struct PretrainText {
    /// A text-pretraining config (configs/text-tiny.json, configs/text-mini.json); what it leaves out is
    /// text-tiny's.
    #[arg(long)]
    config: PathBuf,
    /// The checkpoint directory to write (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// Captions of the scene grammar's training split to learn from (they never name a held-out pair).
    #[arg(long, default_value_t = 48_000)]
    captions: usize,
    /// Seed of the scenes the captions describe (1: other scenes than a run's, which uses 0).
    #[arg(long, default_value_t = 1)]
    corpus_seed: u64,
    /// Optimisation steps (overrides the config's).
    #[arg(long)]
    steps: Option<usize>,
    /// Backend to train on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl PretrainText {
    pub fn run(self) -> Result<()> {
        let mut config = config_file::load_with_defaults(&self.config, &TextPretrainingConfig::tiny())?;
        if self.steps == Some(0) {
            anyhow::bail!("--steps 0: must be at least 1");
        }
        config.steps = self.steps.unwrap_or(config.steps);
        config.check()?;
        run_on(self.backend, Task { args: self, config })
    }
}

struct Task {
    args: PretrainText,
    config: TextPretrainingConfig,
}

impl BackendTask for Task {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let Task { args, config } = self;
        let captions: Vec<String> = SceneCorpus::new(args.corpus_seed, Split::Train, args.captions)
            .scenes()
            .map(|scene| scene.caption)
            .collect();
        eprintln!(
            "text pretraining on {} captions, {} steps of {}…",
            captions.len(),
            config.steps,
            config.batch_size
        );
        let report = pretrain_text::<Autodiff<B>>(&config, &captions, &args.out, &device, |step| {
            eprintln!(
                "  step {:>5}/{}  text CE {:.4}  lr {:.2e}  {:.0} captions/s",
                step.step, config.steps, step.text_ce, step.learning_rate, step.captions_per_second
            )
        })?;
        println!(
            "{}: a Llama checkpoint of {} text ids; validation text CE {:.3} → {:.3} nats per id in {:.0} s of training. \
             Start a run from it with \"lm\": {{ \"init\": \"{}\" }}",
            args.out.display(),
            report.text_vocab,
            report.valid_ce[0],
            report.valid_ce[1],
            report.seconds,
            args.out.display()
        );
        Ok(())
    }
}
