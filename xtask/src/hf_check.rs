//! `cargo xtask hf-check`: load a HuggingFace checkpoint directory as the LM's initialisation and, with a
//! reference file, compare our logits with the reference implementation's.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Args;
use token_shuffle_lm::{HfConfig, HfReference, load_hf};

use crate::backend::{BackendKind, BackendTask, run_on};

/// Arguments of `cargo xtask hf-check`.
#[derive(Args)]
pub struct HfCheck {
    /// A checkpoint directory: config.json, model.safetensors (or shards with model.safetensors.index.json).
    #[arg(long)]
    model: PathBuf,
    /// A safetensors file with `ids` (int64, [1, T]) and `logits` (f32, [1, T, vocab]) of the checkpoint as the
    /// reference implementation computes them (scripts/hf_fixtures.py writes one per fixture).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Image codes the vocabulary is extended with (only the text logits are compared).
    #[arg(long, default_value_t = 16)]
    codebook: usize,
    /// Backend to load on.
    #[arg(long, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
}

impl HfCheck {
    pub fn run(self) -> Result<()> {
        let hf = HfConfig::read(&self.model)?;
        let reference = self.reference.as_deref().map(HfReference::read).transpose()?;
        let d = &hf.decoder;
        println!(
            "{}: {} layers, d = {}, {} heads ({} key/value) of {}, MLP {}, {} ids, {} head, rope θ = {}{}",
            hf.architecture,
            d.n_layers,
            d.d_model,
            d.n_heads,
            d.n_kv_heads.unwrap_or(d.n_heads),
            d.head_width(),
            d.mlp_hidden,
            hf.vocab_size,
            if hf.tied { "tied" } else { "untied" },
            d.rope_theta,
            d.rope_scaling.map(|s| format!(", scaling {s:?}")).unwrap_or_default()
        );
        let parameters = hf.parameters();
        println!(
            "parameters {parameters} ({:.1} MiB as f32, allocated next)",
            parameters as f64 * 4.0 / (1 << 20) as f64
        );
        run_on(
            self.backend,
            Task {
                hf,
                reference,
                codebook: self.codebook,
            },
        )
    }
}

struct Task {
    hf: HfConfig,
    reference: Option<HfReference>,
    codebook: usize,
}

impl BackendTask for Task {
    type Output = ();
    fn run<B: Backend>(self, _: BackendKind, device: B::Device) -> Result<()> {
        let Task {
            hf,
            reference,
            codebook,
        } = self;
        // Enough rotary positions for the reference text (the LM adds one per image window; one here).
        let text_len = reference.as_ref().map_or(64, |r| r.ids.len());
        let config = hf.architecture(codebook, text_len).into_config([1, 1], 1);
        let model = load_hf::<B>(&hf, &config, &device)?;
        println!(
            "loaded from {} ({} parameters with {codebook} image codes and our special tokens added)",
            hf.dir.display(),
            burn::module::Module::num_params(&model)
        );
        if let Some(reference) = reference {
            let delta = reference.max_difference(&model, &device)?;
            println!(
                "compared with {} ({} ids × {} logits)",
                reference.path.display(),
                reference.ids.len(),
                reference.vocab
            );
            println!("max |Δ| = {delta:e}");
        }
        Ok(())
    }
}
