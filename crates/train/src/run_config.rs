//! The run config: everything a `cargo xtask train` run does, in one file, with its presets and its reader.

use std::path::Path;

use burn::config::Config;
use token_shuffle_lm::LmArchitecture;
use token_shuffle_vqgan::VqModelConfig;

use crate::config_file::{migrate_run, parse_with_defaults};
use crate::{DataSource, LmTrainingConfig, Stage, TokenizerTrainingConfig, TrainError};

/// Everything a `cargo xtask train` run does, in one file.
#[derive(Config, Debug)]
pub struct RunConfig {
    /// Images: `"scenes"`, `"twemoji"`, `{"folder": "<dir>"}` (images with captions) or
    /// `{"shards": "<pattern>"}` (webdataset shards); a plain path string, as older configs wrote it, is read too
    /// ([`DataSource`]).
    pub data: DataSource,
    /// Scenes encoded for LM training (scenes are endless; loaded corpora use all their training images).
    /// Default: 4000.
    #[config(default = 4000)]
    pub lm_images: usize,
    /// Largest id count of the text BPE (at least 256; not used with `lm.init`, whose tokenizer the run takes).
    /// Default: 512.
    #[config(default = 512)]
    pub text_vocab_size: usize,
    /// For a folder of images: train the LM on images without a caption (with an empty one) instead of refusing
    /// the folder, naming the first. Default: false.
    #[config(default = false)]
    pub allow_uncaptioned: bool,
    /// Tokenizer training.
    pub tokenizer: TokenizerTrainingConfig,
    /// LM training (its `model.text_vocab` must cover `text_vocab_size`, its `model.codebook` the tokenizer's K).
    pub lm: LmTrainingConfig,
}

impl RunConfig {
    /// The demo (`cargo xtask demo`, `configs/run-demo.json`): vq-tiny with a codebook entropy loss (weight
    /// 0.01, which keeps every code in use) trained 620 steps, 16,000 scenes encoded, and lm-tiny trained 3,000
    /// steps of 16 at s = 2, on 64 px scenes; the recipe of the results issue's hand-run (docs/BENCHMARKS.md).
    pub fn demo() -> Self {
        let tokenizer = TokenizerTrainingConfig::new(VqModelConfig::tiny().with_entropy_loss_weight(0.01))
            .with_resolution(64)
            .with_batch_size(8)
            .with_steps(620)
            .with_learning_rate(0.002)
            .with_warmup_steps(50)
            .with_valid_every(100)
            .with_valid_images(128)
            .with_log_every(20);
        let lm = LmTrainingConfig::new(LmArchitecture::tiny(), vec![Stage::new(64, 2, 3000, 0.002)])
            .with_batch_size(16)
            .with_warmup_steps(50)
            .with_valid_every(500)
            .with_checkpoint_every(500)
            .with_benchmark_every(500)
            .with_log_every(100);
        Self::new(DataSource::Scenes, tokenizer, lm).with_lm_images(16000)
    }

    /// `configs/run-small.json`, the ≤ 2 h recipe on 2 cores: the demo's tokenizer trained 1,500 steps, 48,000
    /// scenes, and lm-mini (d = 256, 6 layers; ~5.6M parameters) at s = 2 for 4,500 steps × 32 (lr 1e-3, warm-up
    /// 200), all checkpoints of the run kept and the benchmark taken every 500 steps, so its score over training
    /// can be read off.
    pub fn small() -> Self {
        let demo = Self::demo();
        let tokenizer = demo.tokenizer.with_steps(1500).with_valid_every(250).with_log_every(50);
        let lm = LmTrainingConfig::new(LmArchitecture::mini(), vec![Stage::new(64, 2, 4500, 0.001)])
            .with_batch_size(32)
            .with_warmup_steps(200)
            .with_valid_every(500)
            .with_checkpoint_every(500)
            .with_keep_checkpoints(10)
            .with_benchmark_every(500)
            .with_log_every(50);
        Self::new(DataSource::Scenes, tokenizer, lm).with_lm_images(48000)
    }

    /// The tiniest whole run (`configs/run-tiny.json`): vq-micro and lm-micro, 2 steps each, on 32 px scenes.
    /// Tests and smoke runs.
    pub fn tiny() -> Self {
        let tokenizer = TokenizerTrainingConfig::new(VqModelConfig::micro())
            .with_resolution(32)
            .with_batch_size(4)
            .with_steps(2)
            .with_learning_rate(0.002)
            .with_warmup_steps(1)
            .with_valid_every(2)
            .with_valid_images(4)
            .with_log_every(1);
        let lm = LmTrainingConfig::new(LmArchitecture::micro(), vec![Stage::new(32, 2, 2, 0.001)])
            .with_batch_size(4)
            .with_warmup_steps(1)
            .with_valid_every(2)
            .with_checkpoint_every(2)
            .with_log_every(1);
        Self::new(DataSource::Scenes, tokenizer, lm)
            .with_lm_images(12)
            .with_text_vocab_size(256)
    }

    /// Reads a run config file: its fields over [`demo`](Self::demo)'s (a file may give only what it changes),
    /// unknown fields refused by path. With `lm.init`, the LM fields the checkpoint decides and the file leaves
    /// out are read from the checkpoint's `config.json` ([`crate::fill_from_checkpoint`]). Run directories written before the LM's `grid`, `window` and
    /// `decoder.max_seq_len` left the format (and with the LM under `lm.lm`) still load.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file and the field, or [`TrainError::Io`].
    pub fn load_file(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|why| TrainError::Config(format!("{}: {why}", path.display())))
    }

    /// [`load_file`](Self::load_file) for a string.
    ///
    /// # Errors
    /// A message naming the field at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut given: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        migrate_run(&mut given);
        crate::fill_from_checkpoint(&mut given)?;
        parse_with_defaults(&given.to_string(), &Self::demo(), |_| {})
    }

    /// Checks, before anything is written, that every stage can be built and that the parts fit together.
    ///
    /// # Errors
    /// [`TrainError::Config`] (or the tokenizer's [`TrainError::Vq`]) naming the field and the fix.
    pub fn check(&self) -> Result<(), TrainError> {
        self.tokenizer.check()?;
        self.lm.check()?;
        let fail = |m: String| Err(TrainError::Config(m));
        let model = &self.lm.model;
        if model.codebook != self.tokenizer.model.codebook_size {
            return fail(format!(
                "lm.model.codebook = {} but the tokenizer has {} codes (tokenizer.model.codebook_size); make them equal",
                model.codebook, self.tokenizer.model.codebook_size
            ));
        }
        // With a pretrained checkpoint its tokenizer is the run's (checked against it when the run starts).
        if self.lm.init.is_none() && model.text_vocab < self.text_vocab_size {
            return fail(format!(
                "lm.model.text_vocab = {} is below text_vocab_size = {}; raise it",
                model.text_vocab, self.text_vocab_size
            ));
        }
        if self.lm.init.is_none() && self.text_vocab_size < 256 {
            return fail(format!(
                "text_vocab_size = {} is below 256: the byte-level BPE needs an id for every byte",
                self.text_vocab_size
            ));
        }
        if self.lm_images == 0 {
            return fail("lm_images is 0: encode at least one image for the LM".into());
        }
        let factor = self.tokenizer.model.downsample_factor();
        for (i, stage) in self.lm.stages.iter().enumerate() {
            let stage_error = |e: &dyn std::fmt::Display| TrainError::Config(format!("stage {i}: {e}"));
            self.tokenizer
                .model
                .check_image_size(stage.resolution, stage.resolution)
                .map_err(|e| stage_error(&e))?;
            let lm = self.lm.stage_lm(i, factor);
            let grid = lm.grid[0];
            lm.check().map_err(|e| {
                stage_error(&format!(
                    "{} px through the tokenizer's downsample {factor} is a {grid}×{grid} grid: {e}",
                    stage.resolution
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_in_configs_are_the_rust_presets_and_every_field_is_read() {
        for (file, preset) in [
            (include_str!("../../../configs/run-demo.json"), RunConfig::demo()),
            (include_str!("../../../configs/run-small.json"), RunConfig::small()),
            (include_str!("../../../configs/run-tiny.json"), RunConfig::tiny()),
        ] {
            // Parsed over the defaults, an unknown (unread) field is an error; read alone, a missing one is.
            let over_defaults = RunConfig::parse(file).unwrap();
            let alone: RunConfig = serde_json::from_str(file).unwrap();
            let expected = serde_json::to_value(&preset).unwrap();
            assert_eq!(serde_json::to_value(&over_defaults).unwrap(), expected);
            assert_eq!(serde_json::to_value(&alone).unwrap(), expected);
            preset.check().unwrap();
        }
    }

    #[test]
    fn every_stage_size_is_checked_before_anything_runs() {
        let mut config = RunConfig::tiny();
        config.lm.model.decoder.n_heads = 3;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("decoder.n_heads 3"), "{err}");
        let mut config = RunConfig::tiny();
        config.lm_images = 0;
        assert!(config.check().unwrap_err().to_string().contains("lm_images is 0"));
        let mut config = RunConfig::tiny();
        config.text_vocab_size = 10;
        assert!(config.check().unwrap_err().to_string().contains("text_vocab_size = 10"));
    }
}
