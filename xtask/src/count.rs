//! `cargo xtask count`: parameters, sequence length and FLOPs of an LM preset at a resolution.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use token_shuffle_lm::LmArchitecture;

/// Arguments of `cargo xtask count`.
#[derive(Args)]
pub struct Count {
    /// LM preset (JSON), e.g. configs/lm-2.7b.json, or a HuggingFace checkpoint directory (Llama, Qwen2,
    /// Mistral), whose decoder is then extended with `--codebook` image codes.
    #[arg(long)]
    config: PathBuf,
    /// Image codes (the VQ codebook): overrides the preset's; for a checkpoint directory, default 8192 (the
    /// paper's codebook).
    #[arg(long)]
    codebook: Option<usize>,
    /// Image resolution in pixels.
    #[arg(long, default_value_t = 1024)]
    resolution: usize,
    /// VQ downsample factor.
    #[arg(long, default_value_t = 8)]
    downsample: usize,
    /// Token-Shuffle window s.
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Caption length in text ids.
    #[arg(long, default_value_t = 64)]
    text_len: usize,
}

impl Count {
    pub fn run(self) -> Result<()> {
        let resolution = self.resolution;
        if self.downsample == 0 || !resolution.is_multiple_of(self.downsample) {
            bail!(
                "--resolution {resolution} is not divisible by --downsample {}",
                self.downsample
            );
        }
        let mut architecture = load_lm_config(&self.config)?;
        architecture.codebook = self.codebook.unwrap_or(architecture.codebook);
        let config = architecture.into_config([resolution / self.downsample; 2], self.window);
        let s = config.window;
        config.check()?;
        let count = config.count(self.text_len)?;
        let baseline = config.clone().with_window(1).count(self.text_len)?;
        println!(
            "{} at {}×{} codes, s = {s}, text of {} ids",
            self.config.display(),
            config.grid[0],
            config.grid[1],
            self.text_len
        );
        println!("parameters                {:>16}", group(count.parameters));
        println!("image codes per image     {:>16}", group(count.image_codes));
        println!(
            "transformer positions     {:>16}   (s = 1: {})",
            group(count.sequence_len),
            group(baseline.sequence_len)
        );
        println!(
            "training FLOPs / image    {:>16.3e}   (s = 1: {:.3e}, {:.2}× more)",
            count.train_flops,
            baseline.train_flops,
            baseline.train_flops / count.train_flops
        );
        println!(
            "generation FLOPs / image  {:>16.3e}   (s = 1: {:.3e}, {:.2}× more); {} AR steps (s = 1: {})",
            count.generate_flops,
            baseline.generate_flops,
            baseline.generate_flops / count.generate_flops,
            config.windows(),
            baseline.image_codes
        );
        Ok(())
    }
}

/// Reads an LM preset (JSON; fields it does not give are lm-tiny's), naming the file and the field at fault; or,
/// for a directory, the shape of a HuggingFace checkpoint's LM extended with the paper's 8192 image codes (the
/// weights are not read).
pub fn load_lm_config(path: &Path) -> Result<LmArchitecture> {
    if path.is_dir() {
        return Ok(token_shuffle_lm::HfConfig::read(path)?.architecture(8192, 64));
    }
    Ok(token_shuffle_train::config_file::load_with_defaults(
        path,
        &LmArchitecture::tiny(),
    )?)
}

fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
