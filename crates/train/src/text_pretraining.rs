//! Text pretraining: a Llama-shaped language model trained by next-token prediction on caption text, written as a
//! HuggingFace checkpoint (`config.json`, `model.safetensors`, `tokenizer.json`) that a run starts from through
//! `lm.init`, by the same path as a downloaded LLM. No real LLM can be fetched on the machines this project is
//! measured on; this is the pretrained model we can make, to measure what starting from one buys.
//!
//! The sequences are `[bos] caption [eos]` in the LM's vocabulary layout (a BPE trained on the captions, then our
//! specials), so the checkpoint's `bos_token_id` is our `bos` and a run that loads it begins its prompts with it.

use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use serde::Serialize;
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_lm::{DecoderConfig, LmArchitecture, TextHead, TokenShuffleLm, TokenShuffleLmConfig, VocabLayout};

use crate::images::EpochOrder;
use crate::{TrainError, WarmupCosine};

/// A text-pretraining run.
#[derive(Config, Debug)]
pub struct TextPretrainingConfig {
    /// The decoder: give the T2I run's, so that the two arms of an ablation have the same shape.
    pub decoder: DecoderConfig,
    /// Largest id count of the BPE trained on the captions (at least 256). Default: 512.
    #[config(default = 512)]
    pub text_vocab_size: usize,
    /// Longest caption in ids; longer ones are cut. Default: 32.
    #[config(default = 32)]
    pub max_len: usize,
    /// Optimisation steps. Default: 2000.
    #[config(default = 2000)]
    pub steps: usize,
    /// Captions per step. Default: 64.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Peak learning rate (warm-up, then cosine decay to a tenth). Default: 1e-3.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Warm-up steps. Default: 100.
    #[config(default = 100)]
    pub warmup_steps: usize,
    /// AdamW weight decay. Default: 0.01.
    #[config(default = 0.01)]
    pub weight_decay: f32,
    /// Log the loss every this many steps. Default: 100.
    #[config(default = 100)]
    pub log_every: usize,
    /// Seed of the weights and the caption order. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
}

/// A logged step of text pretraining.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TextStep {
    /// Step (counting from 1).
    pub step: usize,
    /// Training cross-entropy (nats per id), this step's batch.
    pub text_ce: f32,
    /// Learning rate of this step.
    pub learning_rate: f64,
    /// Captions per second since the last log line.
    pub captions_per_second: f32,
}

/// What a finished text pretraining wrote and measured (also `pretraining.json` in the checkpoint).
#[derive(Debug, Clone, Serialize)]
pub struct TextPretrainingReport {
    /// The config it ran.
    pub config: serde_json::Value,
    /// Training and validation captions.
    pub captions: [usize; 2],
    /// Ids of the trained BPE.
    pub text_vocab: usize,
    /// Validation cross-entropy before training and after (nats per id).
    pub valid_ce: [f32; 2],
    /// Seconds of training (tokenizer and export not included).
    pub seconds: f64,
}

impl TextPretrainingConfig {
    /// `configs/text-tiny.json`: lm-tiny's decoder (the demo's LM), 2,000 steps of 64 captions.
    pub fn tiny() -> Self {
        Self::new(LmArchitecture::tiny().decoder)
    }

    /// `configs/text-mini.json`: lm-mini's decoder (run-small's LM), 3,000 steps of 64 captions.
    pub fn mini() -> Self {
        Self::new(LmArchitecture::mini().decoder).with_steps(3000)
    }

    /// Checks the counts and rates before anything runs.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field.
    pub fn check(&self) -> Result<(), TrainError> {
        let section = crate::bounds::Section("text pretraining");
        for (field, value) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("max_len", self.max_len),
            ("log_every", self.log_every),
        ] {
            section.at_least_one(field, value)?;
        }
        section.positive("learning_rate", self.learning_rate)?;
        section.non_negative("weight_decay", f64::from(self.weight_decay))?;
        if self.text_vocab_size < 256 {
            return Err(TrainError::Config(format!(
                "text pretraining: text_vocab_size = {} is below 256: the byte-level BPE needs an id for every byte",
                self.text_vocab_size
            )));
        }
        Ok(())
    }

    /// The model of a tokenizer of `text_vocab` ids: an untied text head (what an exported checkpoint needs), no
    /// image (one code, one window).
    pub fn lm(&self, text_vocab: usize) -> TokenShuffleLmConfig {
        LmArchitecture::new(text_vocab, 1, self.max_len, self.decoder.clone())
            .with_text_head(TextHead::Linear)
            .into_config([1, 1], 1)
    }
}

/// `[bos] ids… [eos]` of each caption, cut to `max_len` ids.
fn sequences(
    tokenizer: &TextTokenizer,
    vocab: VocabLayout,
    captions: &[String],
    max_len: usize,
) -> Result<Vec<Vec<u32>>, TrainError> {
    captions
        .iter()
        .map(|caption| {
            let mut ids = vec![vocab.bos()];
            ids.extend(tokenizer.encode(caption)?.into_iter().take(max_len));
            ids.push(vocab.eos());
            Ok(ids)
        })
        .collect()
}

/// A right-padded batch `[B, longest]`.
fn batch<B: Backend>(rows: &[&Vec<u32>], pad: u32, device: &B::Device) -> Tensor<B, 2, Int> {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(2);
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| {
            r.iter()
                .map(|&id| id as i64)
                .chain(std::iter::repeat_n(pad as i64, longest - r.len()))
        })
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows.len(), longest]), device)
}

/// Mean cross-entropy per id over `sequences`, in batches.
fn evaluate<B: Backend>(lm: &TokenShuffleLm<B>, sequences: &[Vec<u32>], batch_size: usize, device: &B::Device) -> f32 {
    let pad = lm.vocab().pad();
    let (mut sum, mut ids) = (0.0f64, 0usize);
    for rows in sequences.chunks(batch_size.max(1)) {
        let rows: Vec<&Vec<u32>> = rows.iter().collect();
        let targets: usize = rows.iter().map(|r| r.len() - 1).sum();
        let ce: f32 = lm.text_sequence_ce(batch::<B>(&rows, pad, device)).into_scalar().elem();
        sum += f64::from(ce) * targets as f64;
        ids += targets;
    }
    (sum / ids.max(1) as f64) as f32
}

/// Trains a text LM of `config` on `captions` (the last twentieth held out for validation) and writes it to `out`
/// (new or empty) as a HuggingFace checkpoint with its tokenizer and `pretraining.json`.
///
/// # Errors
/// [`TrainError::Config`] for a bad config, fewer than 20 captions or an `out` that holds files (checked before
/// training); [`TrainError::NonFiniteLoss`] for a NaN loss; [`TrainError::Lm`] / [`TrainError::Data`] from the
/// export.
pub fn pretrain_text<B: AutodiffBackend>(
    config: &TextPretrainingConfig,
    captions: &[String],
    out: &Path,
    device: &B::Device,
    mut on_step: impl FnMut(&TextStep),
) -> Result<TextPretrainingReport, TrainError> {
    config.check()?;
    if std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(TrainError::Config(format!(
            "{} holds files already: give a new or empty directory for the checkpoint",
            out.display()
        )));
    }
    if captions.len() < 20 {
        return Err(TrainError::Config(format!(
            "{} captions: text pretraining needs at least 20 (a twentieth is held out)",
            captions.len()
        )));
    }
    let (train, valid) = captions.split_at(captions.len() - captions.len() / 20);
    let tokenizer = TextTokenizer::train(train.iter().map(String::as_str), config.text_vocab_size)?;
    let lm_config = config.lm(tokenizer.vocab_size());
    let vocab = lm_config.vocab();
    let train_ids = sequences(&tokenizer, vocab, train, config.max_len)?;
    let valid_ids = sequences(&tokenizer, vocab, valid, config.max_len)?;
    B::seed(device, config.seed);
    let mut lm = lm_config.init::<B>(device)?;
    let before = evaluate(&lm.valid(), &valid_ids, config.batch_size, device);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, TokenShuffleLm<B>>();
    let schedule = WarmupCosine {
        peak: config.learning_rate,
        warmup_steps: config.warmup_steps.min(config.steps / 2),
        total_steps: config.steps,
        final_ratio: 0.1,
    };
    let mut order = EpochOrder::default();
    let started = Instant::now();
    let mut since_log = (Instant::now(), 0usize);
    for step in 0..config.steps {
        // Each epoch in its own seeded order, as the LM's training reads its samples.
        let positions = step * config.batch_size..(step + 1) * config.batch_size;
        let rows: Vec<&Vec<u32>> = order
            .indices(train_ids.len(), config.seed, positions)
            .into_iter()
            .map(|i| &train_ids[i])
            .collect();
        let loss = lm.text_sequence_ce(batch::<B>(&rows, vocab.pad(), device));
        let text_ce: f32 = loss.clone().into_scalar().elem();
        if !text_ce.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                part: "text cross-entropy",
                value: text_ce,
            });
        }
        let learning_rate = schedule.at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &lm);
        lm = optimizer.step(learning_rate, lm, grads);
        since_log.1 += config.batch_size;
        if (step + 1) % config.log_every == 0 || step + 1 == config.steps {
            on_step(&TextStep {
                step: step + 1,
                text_ce,
                learning_rate,
                captions_per_second: since_log.1 as f32 / since_log.0.elapsed().as_secs_f32(),
            });
            since_log = (Instant::now(), 0);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let lm = lm.valid();
    let after = evaluate(&lm, &valid_ids, config.batch_size, device);
    token_shuffle_lm::export_hf_text(&lm, &lm_config, out)?;
    tokenizer.save(&out.join("tokenizer.json"))?;
    let report = TextPretrainingReport {
        config: serde_json::to_value(config).expect("the config serialises"),
        captions: [train.len(), valid.len()],
        text_vocab: tokenizer.vocab_size(),
        valid_ce: [before, after],
        seconds,
    };
    let path = out.join("pretraining.json");
    let json = serde_json::to_vec_pretty(&report).expect("the report serialises");
    token_shuffle_data::write_atomically(&path, &json)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_data::scenes::{SceneCorpus, Split};
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn the_files_in_configs_are_the_presets() {
        for (file, preset) in [
            (
                include_str!("../../../configs/text-tiny.json"),
                TextPretrainingConfig::tiny(),
            ),
            (
                include_str!("../../../configs/text-mini.json"),
                TextPretrainingConfig::mini(),
            ),
        ] {
            let read: TextPretrainingConfig = serde_json::from_str(file).unwrap();
            assert_eq!(read.to_string(), preset.to_string());
        }
    }

    #[test]
    fn a_text_pretrained_checkpoint_learns_the_captions_and_loads_as_a_run_s_start() {
        let _turn = crate::tests::one_at_a_time();
        let captions: Vec<String> = SceneCorpus::new(0, Split::Train, 400)
            .scenes()
            .map(|s| s.caption)
            .collect();
        let config = TextPretrainingConfig::new(DecoderConfig::new(32, 1, 2, 64))
            .with_text_vocab_size(300)
            .with_steps(60)
            .with_batch_size(16)
            .with_warmup_steps(5)
            .with_learning_rate(3e-3)
            .with_log_every(20);
        let out = tempfile::tempdir().unwrap();
        let device = Default::default();
        let mut steps = Vec::new();
        let report =
            pretrain_text::<Autodiff<TestBackend>>(&config, &captions, out.path(), &device, |s| steps.push(s.clone()))
                .unwrap();
        assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [20, 40, 60]);
        assert!(report.valid_ce[1] < report.valid_ce[0] - 1.0, "{:?}", report.valid_ce);

        // The checkpoint is one a run starts from: its config, its tokenizer, its text logits.
        let pretrained = crate::Pretrained::open(out.path()).unwrap();
        assert_eq!(
            pretrained.hf.vocab_size,
            report.text_vocab + 5,
            "text ids and our specials"
        );
        assert_eq!(pretrained.hf.bos, Some(report.text_vocab as u32));
        let lm_config = pretrained.hf.architecture(4, config.max_len).into_config([2, 2], 1);
        let loaded = token_shuffle_lm::load_hf::<TestBackend>(&pretrained.hf, &lm_config, &device).unwrap();
        // Its validation captions, in the ids the pretraining used (its bos and eos are the checkpoint's).
        let valid = &captions[captions.len() - captions.len() / 20..];
        let ids = sequences(&pretrained.tokenizer, VocabLayout::new(report.text_vocab, 1), valid, 32).unwrap();
        let ce = evaluate(&loaded, &ids, 8, &device);
        // Not equal: the loaded head has five more (new, mean-initialised) classes to spread probability over.
        assert!(
            (ce - report.valid_ce[1]).abs() < 0.5,
            "the loaded model is the trained one: {ce} vs {:?}",
            report.valid_ce
        );
        let err = pretrain_text::<Autodiff<TestBackend>>(&config, &captions, out.path(), &device, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds files already"), "{err}");
    }
}
