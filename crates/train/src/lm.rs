//! Training the Token-Shuffle LM on cached codes: stages (resolution, window s, steps, learning rate), AdamW with
//! warm-up + cosine learning rate per stage, gradient accumulation and clipping, validation, checkpoints every N
//! steps and exact resume, and a stop with a named error on a NaN loss.

use std::collections::BTreeMap;
use std::path::Path;

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::Serialize;
use token_shuffle_data::codes::Codes;
use token_shuffle_lm::{LmArchitecture, TokenShuffleLm, TokenShuffleLmConfig};

use crate::TrainError;

mod batches;
mod collective;
mod gradients;
mod optimizers;
mod trainer;

use batches::read_samples;
use trainer::LmTrainer;
#[cfg(test)]
use trainer::carry_over;

/// One stage of the curriculum.
#[derive(Config, Debug, PartialEq)]
pub struct Stage {
    /// Image resolution in pixels (its code cache must be given to [`train_lm`]).
    pub resolution: usize,
    /// Token-Shuffle window s.
    pub window: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// Peak learning rate (warm-up and cosine decay restart at each stage).
    pub learning_rate: f64,
}

/// Everything that defines an LM training run. The LM's code grid and window come from each stage
/// ([`stage_lm`](Self::stage_lm)).
///
/// What carries over from one stage to the next: the embedding table, the decoder and the image head, always;
/// the Token-Shuffle and Token-Unshuffle layers only when s stays the same (their shapes depend on s, so a new s
/// starts them fresh). The optimizer state restarts with each stage.
#[derive(Config, Debug)]
pub struct LmTrainingConfig {
    /// The LM's architecture (an LM preset). With [`init`](Self::init), the decoder, the text vocabulary, the
    /// text head and the prompt's first id are the checkpoint's (a run config may leave them out).
    pub model: LmArchitecture,
    /// Where the weights start: `None` (the default) draws them from [`seed`](Self::seed); a HuggingFace
    /// checkpoint directory (Llama, Qwen2, Mistral: `config.json`, safetensors, `tokenizer.json`) gives the decoder,
    /// the text embedding and the text head ([`token_shuffle_lm::load_hf`]); the image rows, the image head and
    /// the Token-Shuffle modules start fresh from the seed.
    #[config(default = "None")]
    pub init: Option<std::path::PathBuf>,
    /// Learning rate of the pretrained parameters (the decoder and an untied text head) as a multiple of the
    /// stage's; 0 freezes them. The embedding table always trains at the stage's rate (it holds the new image
    /// rows). Used with [`init`](Self::init). Default: 1.
    #[config(default = 1.0)]
    pub pretrained_learning_rate_scale: f64,
    /// The curriculum, in order.
    pub stages: Vec<Stage>,
    /// Samples per micro-batch. Default: 16.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one step. Default: 1.
    #[config(default = 1)]
    pub gradient_accumulation: usize,
    /// Warm-up steps at the start of each stage. Default: 50.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// Final learning rate of a stage as a fraction of its peak. Default: 0.1.
    #[config(default = 0.1)]
    pub final_learning_rate_ratio: f64,
    /// AdamW weight decay. Default: 0.01.
    #[config(default = 0.01)]
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this l2 norm (burn clips per tensor). Default: 1.
    #[config(default = "Some(1.0)")]
    pub gradient_clip_norm: Option<f32>,
    /// Validate every this many steps (and at the end of each stage). Default: 100.
    #[config(default = 100)]
    pub valid_every: usize,
    /// Write a checkpoint every this many steps (and at the end of each stage). Default: 100.
    #[config(default = 100)]
    pub checkpoint_every: usize,
    /// Checkpoints kept (at least 1: resuming needs one). Default: 2.
    #[config(default = 2)]
    pub keep_checkpoints: usize,
    /// Measure the LM with the caller's probe (the compositional benchmark on a few validation-seed prompts, when
    /// `cargo xtask train` runs it) every this many steps and at the end; 0 never does. Logged to `metrics.jsonl`
    /// as `{"benchmark": …}`, so a run shows its score over training, not only its loss. Default: 0.
    #[config(default = 0)]
    pub benchmark_every: usize,
    /// Log training losses every this many steps. Default: 10.
    #[config(default = 10)]
    pub log_every: usize,
    /// Seed of the weights, the data order and the prompt dropout. Default: 0.
    #[config(default = 0)]
    pub seed: u64,
}

/// The LM fields that change only what a run logs, measures on the side or keeps on disk, never the weights it
/// trains: changing one on an existing run is accepted (the step's record and its checkpoints ignore them).
pub const LOGGING_ONLY_LM_FIELDS: [&str; 3] = ["log_every", "benchmark_every", "keep_checkpoints"];

/// LM fields added after run records existed, each with the value that keeps what a run did before it (its
/// default): a record written before the field was made with that value.
fn added_lm_fields() -> [(&'static [&'static str], serde_json::Value); 7] {
    use serde_json::{Value, json};
    [
        (&["model", "decoder", "head_dim"], Value::Null),
        (&["model", "decoder", "qkv_bias"], json!(false)),
        (&["model", "decoder", "rope_scaling"], Value::Null),
        (&["model", "text_head"], json!("scaled_embedding")),
        (&["model", "text_bos"], Value::Null),
        (&["init"], Value::Null),
        (&["pretrained_learning_rate_scale"], json!(1.0)),
    ]
}

/// What decides an LM training run's weights, from its config in JSON: without its [`LOGGING_ONLY_LM_FIELDS`],
/// and without the fields added since records existed while they hold the value runs had before them (so that a
/// record without the field and one with its default compare equal, and any other value is compared).
pub(crate) fn decisive_lm(lm: &serde_json::Value) -> serde_json::Value {
    let mut decisive = lm.clone();
    if let Some(fields) = decisive.as_object_mut() {
        for field in LOGGING_ONLY_LM_FIELDS {
            fields.remove(field);
        }
    }
    for (path, before) in added_lm_fields() {
        let (last, parents) = path.split_last().expect("paths are not empty");
        let parent = parents.iter().try_fold(&mut decisive, |v, key| v.get_mut(*key));
        if let Some(fields) = parent.and_then(serde_json::Value::as_object_mut)
            && fields.get(*last) == Some(&before)
        {
            fields.remove(*last);
        }
    }
    decisive
}

impl LmTrainingConfig {
    /// Steps over all stages.
    pub fn total_steps(&self) -> usize {
        self.stages.iter().map(|s| s.steps).sum()
    }

    /// The stage step `step` (counting from 0) belongs to, and the step within it.
    fn stage_at(&self, step: usize) -> (usize, usize) {
        let mut start = 0;
        for (i, stage) in self.stages.iter().enumerate() {
            if step < start + stage.steps {
                return (i, step - start);
            }
            start += stage.steps;
        }
        (self.stages.len(), 0)
    }

    /// The LM of stage `index` over images encoded with VQ downsample factor `downsample`: the code grid is the
    /// stage's resolution / `downsample`, the window the stage's s. The one place a stage's LM is derived.
    ///
    /// # Panics
    /// When `index` is not a stage.
    pub fn stage_lm(&self, index: usize, downsample: usize) -> TokenShuffleLmConfig {
        let stage = &self.stages[index];
        let side = stage.resolution / downsample.max(1);
        self.model.clone().into_config([side, side], stage.window)
    }

    /// Checks that `devices` devices have a micro-batch each in every step.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the fix.
    pub fn check_devices(&self, devices: usize) -> Result<(), TrainError> {
        if devices > self.gradient_accumulation {
            return Err(TrainError::Config(format!(
                "{devices} devices share each step's micro-batches, but lm.gradient_accumulation = {0} gives only \
                 {0}: set it to a multiple of {devices} (each micro-batch holds lm.batch_size samples)",
                self.gradient_accumulation
            )));
        }
        Ok(())
    }

    /// Checks what can be checked before training: the architecture, stages, sizes, steps.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field and the fix.
    pub fn check(&self) -> Result<(), TrainError> {
        self.model
            .check()
            .map_err(|e| TrainError::Config(format!("lm.model: {e}")))?;
        if self.stages.is_empty() {
            return Err(TrainError::Config(
                "lm.stages is empty: give at least one {resolution, window, steps, learning_rate}".into(),
            ));
        }
        let section = crate::bounds::Section("lm");
        for (field, value) in [
            ("batch_size", self.batch_size),
            ("gradient_accumulation", self.gradient_accumulation),
            ("valid_every", self.valid_every),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
            ("keep_checkpoints", self.keep_checkpoints),
        ] {
            section.at_least_one(field, value)?;
        }
        section.optimizer(
            self.final_learning_rate_ratio,
            self.weight_decay,
            self.gradient_clip_norm,
        )?;
        section.non_negative("pretrained_learning_rate_scale", self.pretrained_learning_rate_scale)?;
        if self.init.is_none() && self.pretrained_learning_rate_scale != 1.0 {
            return Err(TrainError::Config(format!(
                "lm.pretrained_learning_rate_scale = {} but lm.init is null: nothing is pretrained; set lm.init to a \
                 checkpoint directory, or remove the field",
                self.pretrained_learning_rate_scale
            )));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            section.at_least_one(&format!("stages[{i}].steps"), stage.steps)?;
            section.positive(&format!("stages[{i}].learning_rate"), stage.learning_rate)?;
        }
        Ok(())
    }
}

/// Where an LM run's micro-batches are computed: the devices of this process and, in a multi-node job, the
/// cluster of processes it is a rank of.
#[derive(Debug)]
pub struct Parallel<'a, D> {
    /// This process's devices; the first holds the weights and the optimizer.
    pub devices: &'a [D],
    /// The multi-node job, or `None` for a run in one process.
    pub cluster: Option<&'a token_shuffle_distributed::Cluster>,
}

impl<D> Clone for Parallel<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for Parallel<'_, D> {}

impl<'a, D> Parallel<'a, D> {
    /// Training in this process alone, on `devices`.
    pub fn local(devices: &'a [D]) -> Self {
        Self { devices, cluster: None }
    }

    /// Devices over the whole job: this process's times the number of nodes.
    pub fn total_devices(&self) -> usize {
        self.devices.len() * self.cluster.map_or(1, |c| c.nodes() as usize)
    }
}

/// The code caches of one resolution (in memory, or files read sample by sample).
#[derive(Debug)]
pub struct LmData {
    /// Training samples.
    pub train: Codes,
    /// Validation samples.
    pub valid: Codes,
}

/// Training losses at one step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LmStep {
    /// Step (counting from 1, over all stages).
    pub step: usize,
    /// Stage index.
    pub stage: usize,
    /// Image-code cross-entropy (nats per code), mean over the step's micro-batches.
    pub image_ce: f32,
    /// z-loss (unweighted).
    pub z_loss: f32,
    /// Text cross-entropy, when trained.
    pub text_ce: Option<f32>,
    /// Learning rate of this step.
    pub learning_rate: f64,
    /// Transformer positions processed per second since the last log line (text + 1 + image windows per sample).
    pub tokens_per_second: f32,
    /// Training images per second since the last log line (comparable across window sizes, unlike positions).
    pub images_per_second: f32,
}

/// Validation of the LM.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LmValidation {
    /// Step it was measured after.
    pub step: usize,
    /// Image-code cross-entropy on the validation codes.
    pub image_ce: f32,
    /// `exp(image_ce)`: the code perplexity.
    pub perplexity: f32,
}

/// What [`train_lm`] reports as it goes.
#[derive(Debug, Clone)]
pub enum LmEvent {
    /// A stage begins (also when a run resumes inside it).
    Stage {
        /// Its index in the curriculum.
        index: usize,
        /// The stage.
        stage: Stage,
        /// The first step it runs now (counting from 1).
        first_step: usize,
    },
    /// Losses of a logged step.
    Step(LmStep),
    /// A validation pass.
    Validation(LmValidation),
    /// The probe measured the LM (see [`LmTrainingConfig::benchmark_every`]).
    Benchmark {
        /// Steps it was measured after.
        step: usize,
        /// What the probe returned (also logged to `metrics.jsonl`).
        result: ProbeResult,
    },
    /// A checkpoint that failed its integrity check was passed over on resume (it stays on disk).
    SkippedCheckpoint {
        /// Its directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The LM starts from a pretrained checkpoint ([`LmTrainingConfig::init`]): said before its weights are
    /// read, with the memory they will take.
    Pretrained {
        /// The checkpoint directory.
        dir: std::path::PathBuf,
        /// Its `architectures` name.
        architecture: String,
        /// Parameters of the extended LM (the checkpoint's, the new vocabulary rows, the image head, Token-Shuffle),
        /// held in f32: 4 bytes each, twice that again for AdamW's state and once for the gradients.
        parameters: usize,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps it covers.
        step: usize,
        /// Its directory.
        path: std::path::PathBuf,
    },
}

/// What a probe measured after a step (logged to `metrics.jsonl` as `{"benchmark": {"step", "result": …}}`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// The headline number (the benchmark's overall score).
    pub overall: f64,
    /// Its 95% interval, when the probe has one.
    pub overall_interval: Option<(f64, f64)>,
    /// Named parts of it (the benchmark's score per category).
    pub categories: BTreeMap<String, f64>,
}

/// A measurement of the LM after a given step, taken during training every
/// [`LmTrainingConfig::benchmark_every`] steps; its JSON goes to `metrics.jsonl`. The eval crate's compositional
/// benchmark is the one `cargo xtask train` uses (train cannot depend on eval, so it arrives as this callback).
pub type LmProbe<'a, B> = dyn FnMut(usize, &TokenShuffleLm<B>) -> Result<ProbeResult, TrainError> + 'a;

/// Mean image cross-entropy of `lm` over a code cache, in batches.
pub fn evaluate_lm<B: Backend>(
    lm: &TokenShuffleLm<B>,
    cache: &Codes,
    batch_size: usize,
    device: &B::Device,
) -> Result<f32, TrainError> {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for start in (0..cache.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size).min(cache.len());
        let batch = read_samples(cache, start..end)?;
        let codes = Tensor::from_data(TensorData::new(batch.codes, batch.shape), device);
        let loss = lm.loss(lm.prompt_ids(&batch.texts, device), codes)?;
        let ce: f32 = loss.image_ce.into_scalar().elem();
        sum += ce as f64 * (end - start) as f64;
        count += end - start;
    }
    Ok((sum / count.max(1) as f64) as f32)
}

/// Checks that every rank of `cluster` trains the same LM config on the same code caches, before anything of the
/// LM step is written (the trainer checks again with the weights and the starting step).
///
/// # Errors
/// [`TrainError::Cluster`] naming this rank's differing fields, or the rank that stopped answering.
pub(crate) fn check_ranks_configs(
    cluster: &token_shuffle_distributed::Cluster,
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
) -> Result<(), TrainError> {
    let config_json = serde_json::to_value(config).expect("the config serialises");
    cluster
        .check_agreement("LM training", &trainer::config_fields(&config_json, data))
        .map_err(|error| TrainError::Cluster {
            error,
            checkpoint: None,
        })
}

/// Trains the LM as `config` says on the code caches in `data` (one per stage resolution), writing into `out`:
/// `config.json`, `metrics.jsonl` (one JSON object per logged step and validation) and `checkpoints/`.
///
/// With `resume`, training continues from the latest checkpoint in `out/checkpoints` (refused when it was written
/// with another config) and reproduces the uninterrupted run: the data order and the prompt dropout depend only
/// on the seed and the step, and the optimizer state is restored.
///
/// A NaN or infinite loss stops the run with [`TrainError::NonFiniteLoss`] before the update; checkpoints on disk
/// are untouched.
pub fn train_lm<B: AutodiffBackend>(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    out: &Path,
    resume: bool,
    device: &B::Device,
    on_event: impl FnMut(&LmEvent),
) -> Result<TokenShuffleLm<B::InnerBackend>, TrainError> {
    let devices = std::slice::from_ref(device);
    train_lm_probed::<B>(config, data, out, resume, Parallel::local(devices), None, on_event)
}

/// [`train_lm`] on several devices, with a probe that measures the LM every [`LmTrainingConfig::benchmark_every`]
/// steps (and after the last). The probe sees the weights only; what it does with its own randomness cannot change
/// the training.
///
/// `devices[0]` holds the weights and the optimizer; each step's [`LmTrainingConfig::gradient_accumulation`]
/// micro-batches are shared among all of `parallel.devices` (data parallel on one machine: each device's
/// micro-batches on a replica in its own thread, their gradients summed in micro-batch order), so the run is the
/// same as on one device, only faster where the devices work at once.
///
/// In a multi-node job (`parallel.cluster`), rank `k` of `n` takes micro-batches `k, k + n, …` of each step and the
/// ranks sum their gradients; they first check that they start alike (config, code caches, step, weights). Only
/// rank 0 writes `out` (its checkpoints, `metrics.jsonl`) and runs the validation and the probe; the others read
/// `out`'s checkpoints to resume, so `out` must be the same directory for all (a shared file system).
///
/// # Errors
/// As [`train_lm`]; [`TrainError::Config`] when `devices` is empty or the job has more devices than a step has
/// micro-batches; [`TrainError::Cluster`] when the ranks disagree or one stops; an error of the probe stops the
/// run (checkpoints on disk are untouched).
pub fn train_lm_probed<B: AutodiffBackend>(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    out: &Path,
    resume: bool,
    parallel: Parallel<'_, B::Device>,
    mut probe: Option<&mut LmProbe<'_, B::InnerBackend>>,
    mut on_event: impl FnMut(&LmEvent),
) -> Result<TokenShuffleLm<B::InnerBackend>, TrainError> {
    check_inputs(config, data, parallel)?;
    let (mut trainer, mut lm) = LmTrainer::<B>::start(config, data, out, resume, parallel, &mut on_event)?;
    for step in trainer.first_step()..config.total_steps() {
        lm = trainer.enter_stage(lm, step, &mut on_event)?;
        let (next, outcome) = trainer.step(lm, step)?;
        lm = next;
        trainer.after_step(&lm, step, outcome, probe.as_deref_mut(), &mut on_event)?;
    }
    Ok(lm.valid())
}

/// Checks the config, the devices and the code caches against each other before anything is written.
fn check_inputs<D>(
    config: &LmTrainingConfig,
    data: &BTreeMap<usize, LmData>,
    parallel: Parallel<'_, D>,
) -> Result<(), TrainError> {
    config.check()?;
    if parallel.devices.is_empty() {
        return Err(TrainError::Config("no device to train on".into()));
    }
    config.check_devices(parallel.total_devices())?;
    for (i, stage) in config.stages.iter().enumerate() {
        if !data.contains_key(&stage.resolution) {
            return Err(TrainError::Config(format!(
                "stage {i}: no code cache at {} px was given",
                stage.resolution
            )));
        }
    }
    for (resolution, caches) in data {
        for (split, cache) in [("train", &caches.train), ("valid", &caches.valid)] {
            let longest = cache.longest_text()?;
            if longest > config.model.max_text_len {
                return Err(TrainError::Config(format!(
                    "the {split} captions at {resolution} px are up to {longest} text ids long, but the LM takes at \
                     most lm.model.max_text_len = {}: raise it (or give the text tokenizer more ids, which shortens \
                     captions)",
                    config.model.max_text_len
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::optimizers::PRETRAINED_OPTIMIZER;
    use super::*;
    use crate::checkpoint::{CheckpointState, Checkpoints};
    use burn::backend::Autodiff;
    use burn_store::ModuleSnapshot;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
    use token_shuffle_data::rng::SplitMix64;
    use token_shuffle_test_support::TestBackend;

    type A = Autodiff<TestBackend>;
    use crate::tests::one_at_a_time;

    /// The micro LM over this module's data: 12 codes, captions of up to 4 ids (20 text ids).
    fn tiny_lm() -> LmArchitecture {
        LmArchitecture {
            text_vocab: 20,
            codebook: 12,
            max_text_len: 6,
            prompt_dropout: 0.2,
            ..LmArchitecture::micro()
        }
    }

    /// Random codes whose first code repeats the caption's first id, so there is something to learn.
    fn cache(samples: usize, stream: u64) -> CodeCache {
        let key = CacheKey {
            tokenizer: fingerprint(b"t"),
            vq_model: fingerprint(b"v"),
            resolution: 16,
            grid: [4, 4],
        };
        let mut cache = CodeCache::new(key);
        let mut rng = SplitMix64::new(3, stream);
        for _ in 0..samples {
            let text: Vec<u32> = (0..1 + rng.below(4)).map(|_| rng.below(12) as u32).collect();
            let mut codes: Vec<u32> = (0..16).map(|_| rng.below(12) as u32).collect();
            codes[0] = text[0];
            cache.push(&codes, &text).unwrap();
        }
        cache
    }

    fn data() -> BTreeMap<usize, LmData> {
        BTreeMap::from([(
            16,
            LmData {
                train: cache(24, 0).into(),
                valid: cache(8, 1).into(),
            },
        )])
    }

    fn config(stages: Vec<Stage>) -> LmTrainingConfig {
        LmTrainingConfig::new(tiny_lm(), stages)
            .with_batch_size(4)
            .with_gradient_accumulation(2)
            .with_warmup_steps(1)
            .with_log_every(1)
            .with_valid_every(2)
            .with_checkpoint_every(2)
    }

    fn steps(events: &[LmEvent]) -> Vec<LmStep> {
        events
            .iter()
            .filter_map(|e| {
                if let LmEvent::Step(s) = e {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Runs `config` in `dir`, "killing" the run (a panic, as a crash would) right after the checkpoint of step
    /// `kill_after`, then resumes it; returns the logged steps of both parts.
    fn killed_and_resumed(config: &LmTrainingConfig, dir: &Path, kill_after: usize) -> Vec<LmStep> {
        let device = Default::default();
        let data = data();
        let mut before = Vec::new();
        let killed = catch_unwind(AssertUnwindSafe(|| {
            train_lm::<A>(config, &data, dir, false, &device, |e| {
                before.push(e.clone());
                if matches!(e, LmEvent::Checkpoint { step, .. } if *step == kill_after) {
                    panic!("killed");
                }
            })
        }));
        assert!(killed.is_err(), "the run was killed");
        let mut after = Vec::new();
        train_lm::<A>(config, &data, dir, true, &device, |e| after.push(e.clone())).unwrap();
        let mut all = steps(&before);
        all.extend(steps(&after));
        all
    }

    #[test]
    fn a_resumed_run_reproduces_the_uninterrupted_one() {
        let _turn = one_at_a_time();
        let config = config(vec![Stage::new(16, 2, 6, 1e-2)]);
        let device = Default::default();
        let straight_dir = tempfile::tempdir().unwrap();
        let mut events = Vec::new();
        train_lm::<A>(&config, &data(), straight_dir.path(), false, &device, |e| {
            events.push(e.clone())
        })
        .unwrap();
        let straight = steps(&events);
        assert_eq!(straight.len(), 6);
        assert!(
            straight[5].image_ce < straight[0].image_ce,
            "the loss goes down: {straight:?}"
        );

        let resumed_dir = tempfile::tempdir().unwrap();
        let resumed = killed_and_resumed(&config, resumed_dir.path(), 4);
        let losses = |s: &[LmStep]| s.iter().map(|s| (s.step, s.image_ce, s.z_loss)).collect::<Vec<_>>();
        assert_eq!(losses(&resumed), losses(&straight));
        // The metrics file of the resumed run holds each step once.
        let metrics = std::fs::read_to_string(resumed_dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().filter(|l| l.starts_with("{\"train\"")).count(),
            6,
            "{metrics}"
        );
    }

    #[test]
    fn a_pretrained_start_with_its_own_learning_rate_resumes_as_it_ran() {
        let _turn = one_at_a_time();
        let checkpoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/hf/llama-gqa");
        let hf = token_shuffle_lm::HfConfig::read(&checkpoint).unwrap();
        let pretrained = |scale: f64| LmTrainingConfig {
            model: hf.architecture(12, 6),
            init: Some(checkpoint.clone()),
            pretrained_learning_rate_scale: scale,
            ..config(vec![Stage::new(16, 2, 6, 1e-2)])
        };
        let device = Default::default();
        let run = |config: &LmTrainingConfig| {
            let dir = tempfile::tempdir().unwrap();
            let mut events = Vec::new();
            train_lm::<A>(config, &data(), dir.path(), false, &device, |e| events.push(e.clone())).unwrap();
            (steps(&events), dir)
        };
        let losses = |s: &[LmStep]| s.iter().map(|s| (s.step, s.image_ce, s.z_loss)).collect::<Vec<_>>();
        let (half, dir) = run(&pretrained(0.5));
        assert!(
            dir.path()
                .join("checkpoints/step-00000006")
                .join(PRETRAINED_OPTIMIZER)
                .with_extension("mpk")
                .exists()
        );
        let (full, _) = run(&pretrained(1.0));
        assert_ne!(losses(&half)[5], losses(&full)[5], "the scale changes the training");
        let resumed_dir = tempfile::tempdir().unwrap();
        let resumed = killed_and_resumed(&pretrained(0.5), resumed_dir.path(), 4);
        assert_eq!(losses(&resumed), losses(&half));
    }

    /// A logged step: its number, image cross-entropy and z-loss.
    type StepLosses = (usize, f32, f32);

    /// Trains `config` in `dir` on `devices`, optionally killed after the checkpoint of step `kill_after` and
    /// resumed; returns the logged losses and the final weights.
    fn run_on_devices(
        config: &LmTrainingConfig,
        dir: &Path,
        devices: &[<A as burn::tensor::backend::BackendTypes>::Device],
        kill_after: Option<usize>,
    ) -> (Vec<StepLosses>, Vec<Vec<f32>>) {
        let data = data();
        let mut events = Vec::new();
        let train = |resume: bool, events: &mut Vec<LmEvent>| {
            train_lm_probed::<A>(config, &data, dir, resume, Parallel::local(devices), None, |e| {
                events.push(e.clone());
                if matches!(e, LmEvent::Checkpoint { step, .. } if Some(*step) == kill_after) && !resume {
                    panic!("killed");
                }
            })
        };
        let lm = match kill_after {
            Some(_) => {
                let killed = catch_unwind(AssertUnwindSafe(|| train(false, &mut events)));
                assert!(killed.is_err(), "the run was killed");
                train(true, &mut events).unwrap()
            }
            None => train(false, &mut events).unwrap(),
        };
        let losses = steps(&events).iter().map(|s| (s.step, s.image_ce, s.z_loss)).collect();
        let weights = lm
            .collect(None, None, false)
            .into_iter()
            .map(|s| s.to_data().unwrap().to_vec().unwrap())
            .collect();
        (losses, weights)
    }

    #[test]
    fn replicas_on_several_devices_give_the_weights_of_gradient_accumulation() {
        let _turn = one_at_a_time();
        // Four micro-batches a step over three CPU replicas: the first device computes two of them.
        let config = config(vec![Stage::new(16, 2, 4, 1e-2)]).with_gradient_accumulation(4);
        let device = Default::default();
        let one = tempfile::tempdir().unwrap();
        let (losses, weights) = run_on_devices(&config, one.path(), std::slice::from_ref(&device), None);
        assert_eq!(losses.len(), 4);
        let three = tempfile::tempdir().unwrap();
        let copies = |n| std::iter::repeat_n(&device, n).cloned().collect::<Vec<_>>();
        let replicas = copies(3);
        let (parallel_losses, parallel_weights) = run_on_devices(&config, three.path(), &replicas, None);
        // Exact: each micro-batch's gradient is computed alone (on Flex, deterministically) and the sum runs in
        // micro-batch order whatever device computed each term.
        assert_eq!(parallel_losses, losses);
        assert_eq!(parallel_weights, weights);
        // Resume stays bit-exact with several devices.
        let resumed = tempfile::tempdir().unwrap();
        let (resumed_losses, resumed_weights) = run_on_devices(&config, resumed.path(), &replicas, Some(2));
        assert_eq!(resumed_losses, losses);
        assert_eq!(resumed_weights, weights);
        // More devices than micro-batches would leave some idle: refused, naming the fix.
        let err = train_lm_probed::<A>(
            &config,
            &data(),
            three.path(),
            true,
            Parallel::local(&copies(5)),
            None,
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("gradient_accumulation = 4"), "{err}");
    }

    #[test]
    fn a_checkpoint_written_before_a_field_existed_still_resumes() {
        let config = config(vec![Stage::new(16, 2, 6, 1e-2)]);
        let mut old = serde_json::to_value(&config).unwrap();
        old.as_object_mut().unwrap().remove("benchmark_every");
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path(), 2);
        let state = CheckpointState {
            step: 2,
            stage: 0,
            config: old,
            files: Default::default(),
        };
        let path = checkpoints.save(&state, |_| Ok(())).unwrap();
        let now = serde_json::to_value(config.clone().with_benchmark_every(500)).unwrap();
        assert_eq!(checkpoints.state(&path, &now).unwrap().step, 2);
        // A field the checkpoint has, changed, is still refused.
        let other = serde_json::to_value(config.with_batch_size(8)).unwrap();
        let err = checkpoints.state(&path, &other).unwrap_err().to_string();
        assert!(err.contains("batch_size"), "{err}");
    }

    #[test]
    fn resume_passes_over_a_corrupt_checkpoint_to_the_newest_valid_one() {
        let _turn = one_at_a_time();
        let config = config(vec![Stage::new(16, 2, 6, 1e-2)]);
        let device = Default::default();
        let straight_dir = tempfile::tempdir().unwrap();
        let mut events = Vec::new();
        train_lm::<A>(&config, &data(), straight_dir.path(), false, &device, |e| {
            events.push(e.clone())
        })
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let killed = catch_unwind(AssertUnwindSafe(|| {
            train_lm::<A>(&config, &data(), dir.path(), false, &device, |e| {
                if matches!(e, LmEvent::Checkpoint { step: 4, .. }) {
                    panic!("killed");
                }
            })
        }));
        assert!(killed.is_err());
        // Zero 64 bytes of the newest checkpoint's weights (the step-2 one stays good).
        let weights = dir.path().join("checkpoints/step-00000004/model.mpk");
        let mut bytes = std::fs::read(&weights).unwrap();
        bytes[100..164].fill(0);
        std::fs::write(&weights, bytes).unwrap();

        let mut after = Vec::new();
        train_lm::<A>(&config, &data(), dir.path(), true, &device, |e| after.push(e.clone())).unwrap();
        let skipped: Vec<String> = after
            .iter()
            .filter_map(|e| match e {
                LmEvent::SkippedCheckpoint { path, why } => Some(format!("{} {why}", path.display())),
                _ => None,
            })
            .collect();
        assert!(
            skipped.len() == 1
                && skipped[0].contains("step-00000004")
                && skipped[0].contains("model.mpk does not match"),
            "{skipped:?}"
        );
        let resumed = steps(&after);
        assert_eq!(resumed[0].step, 3, "resumed after step 2");
        let losses = |s: &[LmStep]| s.iter().map(|s| (s.step, s.image_ce)).collect::<Vec<_>>();
        assert_eq!(losses(&resumed), losses(&steps(&events)[2..]));
    }

    #[test]
    fn the_probe_measures_every_n_steps_and_at_the_end_without_changing_the_training() {
        let _turn = one_at_a_time();
        let config = config(vec![Stage::new(16, 2, 5, 1e-2)]).with_benchmark_every(2);
        let device = Default::default();
        let plain_dir = tempfile::tempdir().unwrap();
        let mut plain = Vec::new();
        train_lm::<A>(&config, &data(), plain_dir.path(), false, &device, |e| {
            plain.push(e.clone())
        })
        .unwrap();

        let probed_dir = tempfile::tempdir().unwrap();
        let mut probed = Vec::new();
        let mut measured = Vec::new();
        let probe_data = data();
        let mut probe = |step: usize, lm: &TokenShuffleLm<TestBackend>| {
            // Uses the weights (and burn's random generator, as sampling might) and reports something of them.
            let ce = evaluate_lm(lm, &probe_data[&16].valid, 2, &device)?;
            let _noise = Tensor::<TestBackend, 1>::random([4], burn::tensor::Distribution::Default, &device);
            measured.push(step);
            Ok(ProbeResult {
                overall: f64::from(ce),
                overall_interval: None,
                categories: BTreeMap::from([("valid_ce".to_string(), f64::from(ce))]),
            })
        };
        train_lm_probed::<A>(
            &config,
            &data(),
            probed_dir.path(),
            false,
            Parallel::local(std::slice::from_ref(&device)),
            Some(&mut probe),
            |e| probed.push(e.clone()),
        )
        .unwrap();
        assert_eq!(measured, vec![2, 4, 5], "every 2 steps and after the last");
        let losses = |s: &[LmStep]| s.iter().map(|s| (s.step, s.image_ce, s.z_loss)).collect::<Vec<_>>();
        assert_eq!(losses(&steps(&probed)), losses(&steps(&plain)));
        let metrics = std::fs::read_to_string(probed_dir.path().join("metrics.jsonl")).unwrap();
        let logged: Vec<u64> = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["benchmark"]["step"].as_u64())
            .collect();
        assert_eq!(logged, vec![2, 4, 5], "{metrics}");
        let events = probed
            .iter()
            .filter(
                |e| matches!(e, LmEvent::Benchmark { result, .. } if result.categories["valid_ce"] == result.overall),
            )
            .count();
        assert_eq!(events, 3);
    }

    #[test]
    fn a_run_resumed_at_a_stage_boundary_reproduces_the_uninterrupted_one() {
        let _turn = one_at_a_time();
        // s = 1 then s = 2: the second stage starts its shuffle layers fresh.
        let config = config(vec![Stage::new(16, 1, 2, 1e-2), Stage::new(16, 2, 2, 5e-3)]);
        let device = Default::default();
        let straight_dir = tempfile::tempdir().unwrap();
        let mut events = Vec::new();
        train_lm::<A>(&config, &data(), straight_dir.path(), false, &device, |e| {
            events.push(e.clone())
        })
        .unwrap();
        let stages: Vec<usize> = events
            .iter()
            .filter_map(|e| {
                if let LmEvent::Stage { index, .. } = e {
                    Some(*index)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(stages, [0, 1]);
        let resumed_dir = tempfile::tempdir().unwrap();
        let resumed = killed_and_resumed(&config, resumed_dir.path(), 2);
        assert_eq!(
            resumed,
            steps(&events)
                .into_iter()
                .map(|s| LmStep {
                    tokens_per_second: resumed[s.step - 1].tokens_per_second,
                    images_per_second: resumed[s.step - 1].images_per_second,
                    ..s
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_checkpoint_of_another_config_is_refused() {
        let _turn = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        train_lm::<A>(
            &config(vec![Stage::new(16, 2, 2, 1e-2)]),
            &data(),
            dir.path(),
            false,
            &device,
            |_| {},
        )
        .unwrap();
        let other = config(vec![Stage::new(16, 2, 2, 1e-2)]).with_seed(9);
        let err = train_lm::<A>(&other, &data(), dir.path(), true, &device, |_| {}).unwrap_err();
        assert!(err.to_string().contains("`seed`"), "{err}");
    }

    #[test]
    fn a_diverging_run_stops_naming_the_step_and_leaves_the_checkpoint_intact() {
        let _turn = one_at_a_time();
        let config = config(vec![Stage::new(16, 2, 6, 1e30)])
            .with_checkpoint_every(1)
            .with_gradient_clip_norm(None)
            .with_warmup_steps(0);
        let dir = tempfile::tempdir().unwrap();
        let mut saved = Vec::new();
        let err = train_lm::<A>(&config, &data(), dir.path(), false, &Default::default(), |e| {
            if let LmEvent::Checkpoint { path, .. } = e {
                saved = std::fs::read(path.join("model.mpk")).unwrap();
            }
        })
        .unwrap_err();
        let TrainError::NonFiniteLoss { step, .. } = err else {
            panic!("{err}")
        };
        let checkpoints = Checkpoints::new(dir.path().join("checkpoints"), 2);
        let (last, path) = checkpoints.latest().unwrap();
        assert_eq!(last, step - 1, "the last checkpoint is the step before the bad one");
        assert_eq!(std::fs::read(path.join("model.mpk")).unwrap(), saved);
    }

    #[test]
    fn every_count_and_optimiser_value_is_checked_by_its_name() {
        let good = config(vec![Stage::new(16, 2, 6, 1e-2)]);
        assert!(good.check().is_ok());
        type Spoil = fn(&mut LmTrainingConfig);
        let zero: [(&str, Spoil); 6] = [
            ("lm.batch_size = 0", |c| c.batch_size = 0),
            ("lm.gradient_accumulation = 0", |c| c.gradient_accumulation = 0),
            ("lm.valid_every = 0", |c| c.valid_every = 0),
            ("lm.checkpoint_every = 0", |c| c.checkpoint_every = 0),
            ("lm.log_every = 0", |c| c.log_every = 0),
            ("lm.keep_checkpoints = 0", |c| c.keep_checkpoints = 0),
        ];
        let signs: [(&str, Spoil); 6] = [
            ("lm.pretrained_learning_rate_scale = -1", |c| {
                c.init = Some("llm".into());
                c.pretrained_learning_rate_scale = -1.0
            }),
            ("lm.init is null", |c| c.pretrained_learning_rate_scale = 0.0),
            ("lm.final_learning_rate_ratio = -1", |c| {
                c.final_learning_rate_ratio = -1.0
            }),
            ("lm.weight_decay = -5", |c| c.weight_decay = -5.0),
            ("lm.gradient_clip_norm = -1", |c| c.gradient_clip_norm = Some(-1.0)),
            ("lm.stages[0].steps = 0", |c| c.stages[0].steps = 0),
        ];
        for (named, spoil) in zero.into_iter().chain(signs) {
            let mut bad = good.clone();
            spoil(&mut bad);
            let err = bad.check().unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    #[test]
    fn captions_longer_than_the_lm_takes_are_refused() {
        let config = LmTrainingConfig::new(
            LmArchitecture {
                max_text_len: 3,
                ..tiny_lm()
            },
            vec![Stage::new(16, 2, 2, 1e-2)],
        );
        let dir = tempfile::tempdir().unwrap();
        let err = train_lm::<A>(&config, &data(), dir.path(), false, &Default::default(), |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("up to 4 text ids") && err.to_string().contains("max_text_len = 3"),
            "{err}"
        );
    }

    #[test]
    fn carry_over_keeps_the_decoder_and_starts_new_shuffle_layers_fresh() {
        let _turn = one_at_a_time();
        let device = Default::default();
        let old = tiny_lm().into_config([4, 4], 1).init::<TestBackend>(&device).unwrap();
        let fresh = tiny_lm().into_config([4, 4], 2).init::<TestBackend>(&device).unwrap();
        let tensors = |m: &TokenShuffleLm<TestBackend>| -> BTreeMap<String, Vec<f32>> {
            m.collect(None, None, false)
                .into_iter()
                .map(|s| (s.full_path(), s.to_data().unwrap().to_vec().unwrap()))
                .collect()
        };
        // Reading the parameters initialises them (burn initialises lazily), so the clone below shares them.
        let (old_values, fresh_values) = (tensors(&old), tensors(&fresh));
        let carried = tensors(&carry_over(&old, fresh.clone(), false));
        let (old, fresh) = (old_values, fresh_values);
        let mut shuffle_params = 0;
        for (path, values) in &carried {
            if path.starts_with("shuffle.") || path.starts_with("unshuffle.") {
                shuffle_params += 1;
                assert_eq!(values, &fresh[path], "{path} starts fresh");
            } else {
                assert_eq!(values, &old[path], "{path} carries over");
            }
        }
        assert!(shuffle_params > 0);
    }
}
