//! `cargo xtask export-hf`: a trained run's LM as a HuggingFace checkpoint that transformers loads.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_lm::{HfReference, export_hf};
use token_shuffle_train::TrainedRun;

use crate::backend::{BackendKind, BackendTask, run_on};

/// Arguments of `cargo xtask export-hf`.
#[derive(Args)]
pub struct ExportHf {
    /// A finished run directory.
    #[arg(long)]
    run: PathBuf,
    /// The checkpoint directory to write (new or empty).
    #[arg(long)]
    out: PathBuf,
    /// The caption whose ids (with an image's begin token and a few codes) go into `reference.safetensors`, for
    /// `scripts/hf_export_check.py`.
    #[arg(long, default_value = "a red circle to the left of a blue square")]
    prompt: String,
}

impl ExportHf {
    pub fn run(self) -> Result<()> {
        run_on(BackendKind::Flex, self)
    }
}

impl BackendTask for ExportHf {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let run = TrainedRun::<B>::load(&self.run, &device)?;
        let stages = run.config.lm.stages.len();
        let config = run
            .config
            .lm
            .stage_lm(stages - 1, run.config.tokenizer.model.downsample_factor());
        let tensors = export_hf(&run.lm, &config, &self.out)?;
        run.text.save(&self.out.join("tokenizer.json"))?;
        let vocab = config.vocab();
        let mut ids: Vec<i64> = vocab
            .prompt(&run.text.encode(&self.prompt)?)
            .into_iter()
            .map(i64::from)
            .collect();
        ids.extend((0..4).map(|code| i64::from(vocab.image_id(code % config.architecture.codebook as u32))));
        HfReference::of_model(&run.lm, &ids, &device)?.write(&self.out.join("reference.safetensors"))?;
        println!(
            "{} → {}: config.json, model.safetensors ({tensors} tensors, vocabulary {}), tokenizer.json, \
             reference.safetensors{}",
            self.run.display(),
            self.out.display(),
            vocab.size(),
            if config.window > 1 {
                ", token_shuffle.safetensors (s > 1: the shuffle runs outside)"
            } else {
                ""
            }
        );
        Ok(())
    }
}
