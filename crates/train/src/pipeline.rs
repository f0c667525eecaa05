//! The whole run: tokenizer → text tokenizer → code caches → LM, each step skipped when its output exists and
//! was made from the same config (and inputs), and generation from a finished run.
//!
//! A run directory holds:
//! ```text
//! run.json                      the RunConfig
//! tokenizer/                    config.json, model.safetensors, metrics.jsonl, reconstructions.png, done.json
//! text/tokenizer.json           byte-level BPE trained on the training captions
//! codes/{train,valid}-<px>.bin  code caches (keyed by the fingerprints of the VQ weights and the text tokenizer)
//! lm/                           config.json, metrics.jsonl, checkpoints/, model.mpk (final weights)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use token_shuffle_data::ImageCaption;
use token_shuffle_data::batch::PixelBatcher;
use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
use token_shuffle_data::codes::{CodeFile, CodeShards, Codes};
use token_shuffle_data::imaging::tile;
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_lm::{GenerateOptions, TokenShuffleLm};
use token_shuffle_vqgan::VqModel;

use crate::images::tensor_to_images;
use crate::lock::FileLock;
use crate::pretrained::Pretrained;
use crate::stage::{self, StageName, StageRecord};
use crate::{
    ImageSource, LmData, LmEvent, RunConfig, TokenizerEvent, TrainError, TrainingImages, train_lm_probed,
    train_tokenizer,
};

/// What the pipeline reports as it goes.
#[derive(Debug, Clone)]
pub enum PipelineEvent {
    /// A step begins, or is skipped because its output is up to date.
    Phase {
        /// The step: tokenizer, text tokenizer, code cache, lm.
        name: &'static str,
        /// Whether it is skipped (up to date).
        skipped: bool,
        /// What it does, in a few words.
        detail: String,
    },
    /// Progress of a long step that is not training (encoding codes).
    Progress {
        /// What is in progress.
        what: String,
        /// Items done.
        done: usize,
        /// Items in all.
        total: usize,
    },
    /// Tokenizer training.
    Tokenizer(TokenizerEvent),
    /// LM training.
    Lm(LmEvent),
    /// What loading a corpus found (loaded corpora only: Twemoji, folders), with the skipped files named.
    Data {
        /// The step that loaded it.
        step: &'static str,
        /// One line: images loaded of found, and the first skipped files with their reasons.
        summary: String,
    },
    /// `--restart-from` deleted these step directories before the run.
    Restarted {
        /// The first step deleted.
        from: StageName,
        /// The directories deleted (only those that existed).
        deleted: Vec<PathBuf>,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs every step of `config` in `dir` on backend `B`, skipping the steps that are up to date. An interrupted LM
/// step resumes from its latest checkpoint.
pub fn run_pipeline<B: AutodiffBackend>(
    config: &RunConfig,
    dir: &Path,
    device: &B::Device,
    on_event: impl FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    run_pipeline_probed::<B>(
        config,
        dir,
        std::slice::from_ref(device),
        PipelineSteps::default(),
        None,
        on_event,
    )
}

/// A measurement of the run as it stands after a given LM step (the LM so far, with the run's tokenizers), taken
/// every [`crate::LmTrainingConfig::benchmark_every`] steps: the compositional benchmark, in practice.
pub type RunProbe<'a, B> = dyn FnMut(usize, &TrainedRun<B>) -> Result<serde_json::Value, TrainError> + 'a;

/// Which part of the pipeline [`run_pipeline_probed`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineSteps {
    /// Delete this step and the ones after it first (reported as [`PipelineEvent::Restarted`]).
    pub restart_from: Option<StageName>,
    /// Stop after this step (e.g. after the text tokenizer, before `encode --shard K/N` processes fill the code
    /// caches of webdataset shards).
    pub until: Option<StageName>,
}

/// [`run_pipeline`] with a probe of the run during LM training (see [`RunProbe`]), optionally restarted from a step
/// or stopped after one ([`PipelineSteps`]). The LM trains data parallel on `devices` (see [`train_lm_probed`]);
/// everything else runs on `devices[0]`.
///
/// # Errors
/// As [`run_pipeline`]; an error of the probe stops the LM step (its checkpoints are untouched).
pub fn run_pipeline_probed<B: AutodiffBackend>(
    config: &RunConfig,
    dir: &Path,
    devices: &[B::Device],
    steps: PipelineSteps,
    mut probe: Option<&mut RunProbe<'_, B::InnerBackend>>,
    mut on_event: impl FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    config.check()?;
    let Some(device) = devices.first() else {
        return Err(TrainError::Config("no device to run on".into()));
    };
    // Before hours of tokenizer training, not after.
    config.lm.check_devices(devices.len())?;
    // A pretrained checkpoint is read and checked against the config before anything is written.
    let pretrained = config.lm.init.as_deref().map(Pretrained::open).transpose()?;
    let pretrained_print = match &pretrained {
        Some(pretrained) => {
            pretrained.check_architecture(&config.lm.model)?;
            // Every weight file read and matched against the model now, not after hours of tokenizer training
            // (a truncated shard, a tensor of another shape), when the LM step will read it: it has not finished
            // and has no checkpoint to resume from (the fingerprint covers a checkpoint changed since).
            let lm_dir = dir.join(StageName::Lm.name());
            let lm_started = lm_dir.join("done.json").exists()
                || !crate::Checkpoints::new(lm_dir.join("checkpoints"), 1).list().is_empty();
            if !lm_started {
                let first = config.lm.stage_lm(0, config.tokenizer.model.downsample_factor());
                token_shuffle_lm::load_hf::<B::InnerBackend>(&pretrained.hf, &first, device)?;
            }
            Some(pretrained.fingerprint()?)
        }
        None => None,
    };
    let _lock = crate::RunLock::acquire(dir)?;
    let plan = stage::plan_from(config, pretrained_print.as_deref());
    if let Some(from) = steps.restart_from {
        // The steps kept must come from this config, checked before anything is deleted.
        let kept: Vec<_> = plan.iter().filter(|(stage, _)| *stage < from).cloned().collect();
        check_steps_on_disk::<B::InnerBackend>(dir, &kept, config, device)?;
        let deleted = stage::restart(dir, from)?;
        on_event(&PipelineEvent::Restarted { from, deleted });
    }
    // Every step already on disk must come from this config, checked before anything is written.
    check_steps_on_disk::<B::InnerBackend>(dir, &plan, config, device)?;
    let run_json = dir.join("run.json");
    let source: ImageSource = config.data.parse().map_err(TrainError::Config)?;
    // The LM reads captions: a folder image without one is found now, not after the tokenizer has trained.
    if let ImageSource::Folder(root) = &source
        && !config.allow_uncaptioned
    {
        token_shuffle_data::folder::captioned_images(root, false)?;
    }
    config.save(&run_json).map_err(io(&run_json))?;
    let tokenizer = &config.tokenizer;
    let record = |stage: StageName| plan[stage as usize].1.clone();
    let stage_dir = |stage: StageName| dir.join(stage.name());

    // 1. The VQ tokenizer.
    let tokenizer_dir = stage_dir(StageName::Tokenizer);
    let skipped = record(StageName::Tokenizer).is_finished(&tokenizer_dir, StageName::Tokenizer)?;
    on_event(&PipelineEvent::Phase {
        name: "tokenizer",
        skipped,
        detail: format!("{} steps on {source}", tokenizer.steps),
    });
    if !skipped {
        record(StageName::Tokenizer).write(&tokenizer_dir)?;
        let images = TrainingImages::load_at_most(
            &source,
            tokenizer.resolution as u32,
            tokenizer.valid_images,
            tokenizer.seed,
            crate::images_to_hold(tokenizer.steps, tokenizer.batch_size, tokenizer.valid_images),
        )?;
        let data = report_data(&images, "tokenizer", &mut on_event);
        let model = train_tokenizer::<B>(tokenizer, &images, &tokenizer_dir, device, |e| {
            on_event(&PipelineEvent::Tokenizer(e.clone()))
        })?;
        let report = crate::evaluate_reconstruction(&model, images.valid(), tokenizer.batch_size, device)?;
        let done = tokenizer_dir.join("done.json");
        std::fs::write(&done, serde_json::to_vec_pretty(&report).expect("serialises")).map_err(io(&done))?;
        let finished = StageRecord {
            data: data.into_iter().collect(),
            ..record(StageName::Tokenizer)
        };
        finished.finish(&tokenizer_dir, &stage::outputs(StageName::Tokenizer, config))?;
    }
    if steps.until == Some(StageName::Tokenizer) {
        return Ok(());
    }
    let (vq, vq_fingerprint) = load_vq::<B::InnerBackend>(config, &tokenizer_dir, device)?;

    // 2. The text tokenizer, trained on the captions of the LM's training images.
    let resolutions: std::collections::BTreeSet<usize> = config.lm.stages.iter().map(|s| s.resolution).collect();
    let first_resolution = *resolutions.first().expect("checked: at least one stage");
    let text_dir = stage_dir(StageName::Text);
    let text_path = text_dir.join("tokenizer.json");
    let text = if record(StageName::Text).is_finished(&text_dir, StageName::Text)? {
        on_event(&PipelineEvent::Phase {
            name: "text tokenizer",
            skipped: true,
            detail: text_path.display().to_string(),
        });
        TextTokenizer::load(&text_path)?
    } else if let Some(pretrained) = &pretrained {
        on_event(&PipelineEvent::Phase {
            name: "text tokenizer",
            skipped: false,
            detail: format!(
                "the checkpoint's, {} ids ({})",
                pretrained.tokenizer.vocab_size(),
                pretrained.hf.dir.join("tokenizer.json").display()
            ),
        });
        record(StageName::Text).write(&text_dir)?;
        pretrained.tokenizer.save(&text_path)?;
        record(StageName::Text).finish(&text_dir, &stage::outputs(StageName::Text, config))?;
        pretrained.tokenizer.clone()
    } else {
        on_event(&PipelineEvent::Phase {
            name: "text tokenizer",
            skipped: false,
            detail: format!("BPE, ≤ {} ids", config.text_vocab_size),
        });
        record(StageName::Text).write(&text_dir)?;
        let (captions, data) = if let ImageSource::Shards { paths, .. } = &source {
            // Captions only: decoding every image of a large shard set just to read its captions took most of
            // this step's time and memory.
            let options = crate::images::folder_options(32, config.allow_uncaptioned);
            (token_shuffle_data::shards::training_captions(paths, &options)?, None)
        } else {
            let images = TrainingImages::load_captioned(
                &source,
                32.max(first_resolution as u32 / 8),
                1,
                tokenizer.seed,
                config.allow_uncaptioned,
            )?;
            let data = report_data(&images, "text tokenizer", &mut on_event);
            let count = images.train_len().unwrap_or(config.lm_images);
            (
                images.train_range(0..count).into_iter().map(|i| i.caption).collect(),
                data,
            )
        };
        let text = TextTokenizer::train(captions.iter().map(String::as_str), config.text_vocab_size)?;
        text.save(&text_path)?;
        let finished = StageRecord {
            data: data.into_iter().collect(),
            ..record(StageName::Text)
        };
        finished.finish(&text_dir, &stage::outputs(StageName::Text, config))?;
        text
    };
    if steps.until == Some(StageName::Text) {
        return Ok(());
    }

    // 3. Code caches, one per stage resolution.
    let codes_dir = stage_dir(StageName::Codes);
    let codes_done = record(StageName::Codes).is_finished(&codes_dir, StageName::Codes)?;
    if !codes_done {
        record(StageName::Codes).write(&codes_dir)?;
    }
    let mut caches = BTreeMap::new();
    let mut codes_data = Vec::new();
    for &resolution in &resolutions {
        let key = cache_key(&vq, &vq_fingerprint, &text, resolution)?;
        let paths = [
            codes_dir.join(format!("train-{resolution}.bin")),
            codes_dir.join(format!("valid-{resolution}.bin")),
        ];
        on_event(&PipelineEvent::Phase {
            name: "code cache",
            skipped: codes_done,
            detail: format!("{resolution} px"),
        });
        let [train, valid]: [Codes; 2] = if let ImageSource::Shards { paths: shards, .. } = &source {
            if !codes_done {
                let encoding = ShardEncoding::new(config, &vq, &text, &key, &codes_dir);
                codes_data.extend(encoding.encode(shards, ShardSlice::ALL, device, &mut on_event)?);
            }
            shard_codes(shards, &codes_dir, &key, tokenizer.valid_images)?
        } else if codes_done {
            [
                CodeCache::open(&paths[0], &key)?.into(),
                CodeCache::open(&paths[1], &key)?.into(),
            ]
        } else {
            let images = TrainingImages::load_captioned(
                &source,
                resolution as u32,
                tokenizer.valid_images,
                tokenizer.seed,
                config.allow_uncaptioned,
            )?;
            codes_data.extend(report_data(&images, "code cache", &mut on_event));
            let count = images.train_len().unwrap_or(config.lm_images);
            let mut on_progress = |done, total| {
                on_event(&PipelineEvent::Progress {
                    what: format!("encoding {resolution} px"),
                    done,
                    total,
                })
            };
            let train = encode_cache(
                &vq,
                &text,
                key.clone(),
                count,
                |r| images.train_range(r),
                tokenizer.batch_size,
                device,
                &mut on_progress,
            )?;
            let valid_images = images.valid().to_vec();
            let valid = encode_cache(
                &vq,
                &text,
                key.clone(),
                valid_images.len(),
                |r| valid_images[r].to_vec(),
                tokenizer.batch_size,
                device,
                &mut on_progress,
            )?;
            train.save(&paths[0])?;
            valid.save(&paths[1])?;
            [train.into(), valid.into()]
        };
        caches.insert(resolution, LmData { train, valid });
    }
    if !codes_done {
        let finished = StageRecord {
            data: codes_data,
            ..record(StageName::Codes)
        };
        finished.finish(&codes_dir, &stage::outputs(StageName::Codes, config))?;
    }
    if steps.until == Some(StageName::Codes) {
        return Ok(());
    }

    // 4. The LM, resumed from its latest checkpoint if an earlier run of this config was interrupted.
    let lm_dir = stage_dir(StageName::Lm);
    let skipped = record(StageName::Lm).is_finished(&lm_dir, StageName::Lm)?;
    on_event(&PipelineEvent::Phase {
        name: "lm",
        skipped,
        detail: format!("{} steps", config.lm.total_steps()),
    });
    if !skipped {
        record(StageName::Lm).write(&lm_dir)?;
        // An interrupted run of this config resumes from its newest valid checkpoint (train_lm skips corrupt ones,
        // saying so, and refuses checkpoints of another config).
        let resume = !crate::Checkpoints::new(lm_dir.join("checkpoints"), 1).list().is_empty();
        let probing = probe.is_some();
        let mut lm_probe = |step: usize, lm: &TokenShuffleLm<B::InnerBackend>| match probe.as_mut() {
            Some(probe) => probe(
                step,
                &TrainedRun {
                    config: config.clone(),
                    vq: vq.clone(),
                    text: text.clone(),
                    lm: lm.clone(),
                },
            ),
            None => Ok(serde_json::Value::Null),
        };
        let lm = train_lm_probed::<B>(
            &config.lm,
            &caches,
            &lm_dir,
            resume,
            devices,
            if probing {
                Some(&mut lm_probe as &mut crate::LmProbe<'_, B::InnerBackend>)
            } else {
                None
            },
            |e| on_event(&PipelineEvent::Lm(e.clone())),
        )?;
        save_lm(&lm, &lm_dir)?;
        let done = lm_dir.join("done.json");
        std::fs::write(&done, b"{}").map_err(io(&done))?;
        record(StageName::Lm).finish(&lm_dir, &stage::outputs(StageName::Lm, config))?;
    }
    Ok(())
}

/// Checks the steps already in `dir` against `plan` ([`stage::check`]), with the config the run was last started
/// with (`run.json`) for steps made before stage records existed.
fn check_steps_on_disk<B: Backend>(
    dir: &Path,
    plan: &[(StageName, StageRecord)],
    config: &RunConfig,
    device: &B::Device,
) -> Result<(), TrainError> {
    let run_json = dir.join("run.json");
    let legacy = run_json
        .exists()
        .then(|| RunConfig::load_file(&run_json).ok())
        .flatten();
    // A step found without a record is recorded as finished only if what it wrote can be used.
    let mut usable = |stage: StageName, stage_dir: &Path| match stage {
        StageName::Tokenizer => load_vq_checked::<B>(config, &stage_dir.join("model.safetensors"), device).is_ok(),
        StageName::Text => TextTokenizer::load(&stage_dir.join("tokenizer.json")).is_ok(),
        // Code caches check their own header and size whenever they are opened.
        StageName::Codes => true,
        StageName::Lm => {
            load_lm_checked::<B>(config, config.lm.stages.len() - 1, &stage_dir.join("model"), device).is_ok()
        }
    };
    stage::check(dir, plan, config, legacy.as_ref(), &mut usable)
}

/// The run's VQ tokenizer (finished), and the fingerprint of its weights (what its code caches are keyed by).
fn load_vq<B: Backend>(
    config: &RunConfig,
    tokenizer_dir: &Path,
    device: &B::Device,
) -> Result<(VqModel<B>, String), TrainError> {
    let vq_path = tokenizer_dir.join("model.safetensors");
    let vq_bytes = std::fs::read(&vq_path).map_err(io(&vq_path))?;
    let vq = config.tokenizer.model.init::<B>(device)?.load_safetensors(&vq_path)?;
    Ok((vq, fingerprint(&vq_bytes)))
}

/// The key of the code caches at `resolution` px made with these tokenizers.
fn cache_key<B: Backend>(
    vq: &VqModel<B>,
    vq_fingerprint: &str,
    text: &TextTokenizer,
    resolution: usize,
) -> Result<CacheKey, TrainError> {
    Ok(CacheKey {
        tokenizer: text.fingerprint()?,
        vq_model: vq_fingerprint.to_string(),
        resolution: resolution as u32,
        grid: [resolution / vq.downsample_factor(); 2],
    })
}

/// Which shards an `encode` process takes: shard `i` when `i mod count == index` (`--shard index/count`), so
/// that `count` processes of a job array share the shards without talking to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSlice {
    /// This process's share, `0..count`.
    pub index: usize,
    /// Processes sharing the shards.
    pub count: usize,
}

impl ShardSlice {
    /// Every shard (one process).
    pub const ALL: ShardSlice = ShardSlice { index: 0, count: 1 };

    fn takes(&self, shard: usize) -> bool {
        shard % self.count == self.index
    }
}

impl std::str::FromStr for ShardSlice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = text
            .split_once('/')
            .and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(ShardSlice { index, count }),
            _ => Err(format!(
                "`{text}` is not a shard slice: write K/N with 0 <= K < N (process K of N, e.g. 0/8)"
            )),
        }
    }
}

/// What encoding webdataset shards into per-shard code caches needs.
struct ShardEncoding<'a, B: Backend> {
    vq: &'a VqModel<B>,
    text: &'a TextTokenizer,
    key: &'a CacheKey,
    codes_dir: &'a Path,
    allow_uncaptioned: bool,
    batch_size: usize,
}

impl<'a, B: Backend> ShardEncoding<'a, B> {
    /// Encoding for a run of `config` with these tokenizers, into the caches of `key` under `codes_dir`.
    fn new(
        config: &RunConfig,
        vq: &'a VqModel<B>,
        text: &'a TextTokenizer,
        key: &'a CacheKey,
        codes_dir: &'a Path,
    ) -> Self {
        Self {
            vq,
            text,
            key,
            codes_dir,
            allow_uncaptioned: config.allow_uncaptioned,
            batch_size: config.tokenizer.batch_size,
        }
    }

    /// Encodes every shard of `slice` whose two cache files (train, valid) are missing or do not open with the key
    /// (a shard another process finished is left alone); one shard in memory at a time. Returns the load
    /// summaries of shards that skipped files.
    fn encode(
        &self,
        shards: &[PathBuf],
        slice: ShardSlice,
        device: &B::Device,
        on_event: &mut impl FnMut(&PipelineEvent),
    ) -> Result<Vec<String>, TrainError> {
        let resolution = self.key.resolution as usize;
        let options = crate::images::folder_options(resolution as u32, self.allow_uncaptioned);
        let mut summaries = Vec::new();
        let mine: Vec<&PathBuf> = (0..shards.len())
            .filter(|&i| slice.takes(i))
            .map(|i| &shards[i])
            .collect();
        for (done, shard) in mine.iter().enumerate() {
            let paths = stage::shard_cache_names(resolution, shard).map(|name| self.codes_dir.join(name));
            if let Some(parent) = paths[0].parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            // Overlapping slices (the same K/N started twice): the shard goes to whoever takes it first.
            let Some(_shard) = FileLock::try_take(&paths[0].with_extension("lock"))? else {
                let summary = format!("{}: another process is encoding it; left to that one", shard.display());
                on_event(&PipelineEvent::Data {
                    step: "code cache",
                    summary: summary.clone(),
                });
                summaries.push(summary);
                continue;
            };
            if paths.iter().all(|p| CodeFile::open(p, self.key).is_ok()) {
                continue;
            }
            let folder = token_shuffle_data::shards::load_shard(shard, &options)?;
            if !folder.report.skipped.is_empty() {
                let summary = format!("{}: {}", shard.display(), folder.report.summary());
                on_event(&PipelineEvent::Data {
                    step: "code cache",
                    summary: summary.clone(),
                });
                summaries.push(summary);
            }
            for (images, path) in [&folder.train, &folder.valid].into_iter().zip(&paths) {
                let cache = encode_cache(
                    self.vq,
                    self.text,
                    self.key.clone(),
                    images.len(),
                    |r| images[r].to_vec(),
                    self.batch_size,
                    device,
                    &mut |_, _| {},
                )?;
                cache.save(path)?;
            }
            on_event(&PipelineEvent::Progress {
                what: format!("encoding shards at {resolution} px"),
                done: done + 1,
                total: mine.len(),
            });
        }
        Ok(summaries)
    }
}

/// The code caches of `shards` at the key's resolution: the training caches read from disk sample by sample, and
/// the first `valid_images` validation samples in memory.
///
/// # Errors
/// A missing or damaged cache file, named; [`TrainError::Config`] when the shards hold no training or no
/// validation sample.
fn shard_codes(
    shards: &[PathBuf],
    codes_dir: &Path,
    key: &CacheKey,
    valid_images: usize,
) -> Result<[Codes; 2], TrainError> {
    let names: Vec<[String; 2]> = shards
        .iter()
        .map(|s| stage::shard_cache_names(key.resolution as usize, s))
        .collect();
    let open = |part: usize| {
        let paths: Vec<PathBuf> = names.iter().map(|n| codes_dir.join(&n[part])).collect();
        CodeShards::open(&paths, key).map(Codes::from)
    };
    let (train, all_valid) = (open(0)?, open(1)?);
    let mut valid = CodeCache::new(key.clone());
    let (mut grid, mut text) = (Vec::new(), Vec::new());
    for i in 0..all_valid.len().min(valid_images) {
        grid.clear();
        text.clear();
        all_valid.read(i, &mut grid, &mut text)?;
        valid.push(&grid, &text)?;
    }
    if train.is_empty() || valid.is_empty() {
        return Err(TrainError::Config(format!(
            "the {} shards hold {} training and {} validation samples at {} px; the LM needs some of each",
            shards.len(),
            train.len(),
            valid.len(),
            key.resolution
        )));
    }
    Ok([train, valid.into()])
}

/// Encodes the code caches of the webdataset shards of `slice` (`cargo xtask encode --shard K/N`): the run's
/// tokenizer and text tokenizer must be finished (`cargo xtask train --until text`). Several processes may run
/// this on one run directory at once (each takes the run's lock shared; `train` waits for none of them and is
/// refused while they run). Shards whose caches exist are left alone, so a killed process is simply run again.
///
/// # Errors
/// [`TrainError::Config`] when the run's data are not shards or its tokenizers are not finished; what
/// [`run_pipeline`] reports for a changed config, bad shards and I/O.
pub fn encode_shards<B: Backend>(
    config: &RunConfig,
    dir: &Path,
    slice: ShardSlice,
    device: &B::Device,
    mut on_event: impl FnMut(&PipelineEvent),
) -> Result<(), TrainError> {
    let (_lock, shards, vq, vq_fingerprint, text) = finished_tokenizers::<B>(config, dir, device, "encode")?;
    let codes_dir = dir.join(StageName::Codes.name());
    let plan = stage::plan(config);
    {
        // Encoders started together would all find no record and write it through the same partial file.
        std::fs::create_dir_all(&codes_dir).map_err(io(&codes_dir))?;
        let _record = FileLock::wait(&codes_dir.join(".record.lock"))?;
        if StageRecord::read(&codes_dir)?.is_none() {
            plan[StageName::Codes as usize].1.write(&codes_dir)?;
        }
    }
    for resolution in stage::resolutions(config) {
        let key = cache_key(&vq, &vq_fingerprint, &text, resolution)?;
        ShardEncoding::new(config, &vq, &text, &key, &codes_dir).encode(&shards, slice, device, &mut on_event)?;
    }
    Ok(())
}

/// Checks that every shard's code caches are there and whole, after `encode --shard K/N` processes ran: one line
/// (shards, samples) when they are, or an error naming the shards that are missing or damaged and the command that
/// encodes them.
///
/// # Errors
/// As [`encode_shards`]; [`TrainError::Config`] naming the missing or damaged caches.
pub fn check_shard_codes<B: Backend>(config: &RunConfig, dir: &Path, device: &B::Device) -> Result<String, TrainError> {
    let (_lock, shards, vq, vq_fingerprint, text) = finished_tokenizers::<B>(config, dir, device, "encode --merge")?;
    let codes_dir = dir.join(StageName::Codes.name());
    let mut lines = Vec::new();
    for resolution in stage::resolutions(config) {
        let key = cache_key(&vq, &vq_fingerprint, &text, resolution)?;
        let mut bad = Vec::new();
        let mut samples = [0usize; 2];
        for shard in &shards {
            for (part, name) in stage::shard_cache_names(resolution, shard).into_iter().enumerate() {
                match CodeFile::open(&codes_dir.join(&name), &key) {
                    Ok(file) => samples[part] += file.len(),
                    Err(e) => bad.push(format!("{name} ({e})")),
                }
            }
        }
        if let Some(first) = bad.first() {
            return Err(TrainError::Config(format!(
                "{} of {} code cache files at {resolution} px are missing or damaged, the first: {first}; run \
                 `cargo xtask encode --shard K/N` for the shards they belong to (or `train`, which encodes them)",
                bad.len(),
                2 * shards.len()
            )));
        }
        // Every shard is encoded: the lock files its encoders took are no longer needed. One still held (an
        // encoder finishing up) is left alone.
        for shard in &shards {
            let lock = codes_dir
                .join(&stage::shard_cache_names(resolution, shard)[0])
                .with_extension("lock");
            if lock.is_file()
                && let Some(held) = FileLock::try_take(&lock)?
            {
                std::fs::remove_file(&lock).map_err(io(&lock))?;
                drop(held);
            }
        }
        lines.push(format!(
            "{resolution} px: all {} shards encoded ({} training, {} validation samples)",
            shards.len(),
            samples[0],
            samples[1]
        ));
    }
    Ok(lines.join("; "))
}

/// The run's lock (shared), its webdataset shards and its finished tokenizers (VQ, its fingerprint, text), for the
/// `encode` commands (`what`, named in errors).
#[allow(clippy::type_complexity)]
fn finished_tokenizers<B: Backend>(
    config: &RunConfig,
    dir: &Path,
    device: &B::Device,
    what: &str,
) -> Result<(crate::RunLock, Vec<PathBuf>, VqModel<B>, String, TextTokenizer), TrainError> {
    config.check()?;
    if !dir.join("run.json").exists() {
        return Err(TrainError::NotARun {
            dir: dir.to_path_buf(),
            why: "no run here yet: start it with `cargo xtask train --config <this config> --until text`".into(),
        });
    }
    let lock = crate::RunLock::acquire_shared(dir)?;
    let ImageSource::Shards { paths: shards, .. } = config.data.parse().map_err(TrainError::Config)? else {
        return Err(TrainError::Config(format!(
            "`{what}` encodes webdataset shards, but the run's data is {:?}: `cargo xtask train` encodes it",
            config.data
        )));
    };
    let plan = stage::plan(config);
    check_steps_on_disk::<B>(dir, &plan, config, device)?;
    for stage in [StageName::Tokenizer, StageName::Text] {
        if !plan[stage as usize].1.is_finished(&dir.join(stage.name()), stage)? {
            return Err(TrainError::Config(format!(
                "`{what}` needs the run's {} finished: run `cargo xtask train --config <this config> --run {} \
                 --until text` once first",
                stage.name(),
                dir.display()
            )));
        }
    }
    let (vq, vq_fingerprint) = load_vq::<B>(config, &dir.join(StageName::Tokenizer.name()), device)?;
    let text = TextTokenizer::load(&dir.join(StageName::Text.name()).join("tokenizer.json"))?;
    Ok((lock, shards, vq, vq_fingerprint, text))
}

/// Reports what loading a corpus found (nothing for scenes, which are rendered).
/// Returns the summary, for the step's record.
fn report_data(
    images: &TrainingImages,
    step: &'static str,
    on_event: &mut impl FnMut(&PipelineEvent),
) -> Option<String> {
    let mut summary = images.report.as_ref()?.summary();
    if let Some(total) = images.sampled_from {
        summary += &format!("; a seeded sample of the shards' {total} samples (the step sees no more)");
    }
    on_event(&PipelineEvent::Data {
        step,
        summary: summary.clone(),
    });
    Some(summary)
}

/// Encodes `count` images (fetched by index range) and their captions into a code cache.
#[allow(clippy::too_many_arguments)]
fn encode_cache<B: Backend>(
    vq: &VqModel<B>,
    text: &TextTokenizer,
    key: CacheKey,
    count: usize,
    fetch: impl Fn(std::ops::Range<usize>) -> Vec<ImageCaption>,
    batch_size: usize,
    device: &B::Device,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<CodeCache, TrainError> {
    let mut cache = CodeCache::new(key);
    let chunk = batch_size.max(1) * 4;
    for start in (0..count).step_by(chunk) {
        let images = fetch(start..(start + chunk).min(count));
        let captions: Vec<Vec<u32>> = images
            .iter()
            .map(|i| text.encode(&i.caption))
            .collect::<Result<_, _>>()?;
        let pixels = Batcher::<B, _, _>::batch(&PixelBatcher, images, device).images;
        let codes: Vec<i64> = vq
            .encode(pixels)?
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("i64 codes");
        let per_image = codes.len() / captions.len().max(1);
        for (grid, caption) in codes.chunks(per_image).zip(&captions) {
            let grid: Vec<u32> = grid.iter().map(|&c| c as u32).collect();
            cache.push(&grid, caption)?;
        }
        on_progress(cache.len(), count);
    }
    Ok(cache)
}

type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Writes the final LM weights to `dir/model.mpk` (through a temporary file).
fn save_lm<B: Backend>(lm: &TokenShuffleLm<B>, dir: &Path) -> Result<(), TrainError> {
    token_shuffle_data::replace_atomically(&dir.join("model.mpk"), |partial| {
        // The partial name keeps the `.mpk` extension that the recorder's reader expects.
        crate::checkpoint::write_record::<B, _>(lm.clone().into_record(), partial, "final LM weights").map_err(
            |message| TrainError::Weights {
                path: partial.to_path_buf(),
                message,
            },
        )
    })
}

/// The VQ tokenizer of a run of `config` from `path`, checked to have the config's shapes and finite weights.
fn load_vq_checked<B: Backend>(config: &RunConfig, path: &Path, device: &B::Device) -> Result<VqModel<B>, TrainError> {
    crate::weights::load_checked(
        || config.tokenizer.model.init::<B>(device).map_err(TrainError::from),
        |vq| vq.load_safetensors(path).map_err(TrainError::from),
        |why| TrainError::Corrupt {
            path: path.to_path_buf(),
            why: format!("{why}; make it again with `--restart-from tokenizer`"),
        },
    )
}

/// The LM of stage `stage` of a run of `config` from the recorder file `weights` (without its `.mpk`), checked
/// to have the config's shapes and finite weights.
fn load_lm_checked<B: Backend>(
    config: &RunConfig,
    stage: usize,
    weights: &Path,
    device: &B::Device,
) -> Result<TokenShuffleLm<B>, TrainError> {
    let file = weights.with_extension("mpk");
    let refuse = |why: String| TrainError::Weights {
        path: file.clone(),
        message: format!("{why}; run `cargo xtask train` on the run again to rewrite it"),
    };
    let lm_config = config.lm.stage_lm(stage, config.tokenizer.model.downsample_factor());
    crate::weights::load_checked(
        || lm_config.init::<B>(device).map_err(TrainError::from),
        |lm| {
            lm.load_file(weights, &Recorder::new(), device).map_err(|e| {
                refuse(format!(
                    "unreadable, damaged or not LM weights ({})",
                    crate::weights::recorder_message(e)
                ))
            })
        },
        refuse,
    )
}

/// A finished run, loaded for generation.
pub struct TrainedRun<B: Backend> {
    /// The run's config.
    pub config: RunConfig,
    /// The VQ tokenizer.
    pub vq: VqModel<B>,
    /// The text tokenizer.
    pub text: TextTokenizer,
    /// The LM of the last stage.
    pub lm: TokenShuffleLm<B>,
}

impl<B: Backend> TrainedRun<B> {
    /// Loads the run in `dir` (made by [`run_pipeline`]) with its final LM.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, TrainError> {
        Self::load_at(dir, None, device)
    }

    /// Loads the run in `dir` with the LM of its checkpoint after `step` steps (`None`: the final LM), so that a
    /// run's score can be followed over training, or read before it finishes.
    pub fn load_at(dir: &Path, step: Option<usize>, device: &B::Device) -> Result<Self, TrainError> {
        let run_path = dir.join("run.json");
        let config = RunConfig::load_file(&run_path).map_err(|e| TrainError::NotARun {
            dir: dir.to_path_buf(),
            why: format!("not a run directory made by `cargo xtask train` ({e})"),
        })?;
        let checkpoints = crate::Checkpoints::new(dir.join("lm/checkpoints"), 1);
        let (weights, stage) = match step {
            None => {
                if !dir.join("lm/model.mpk").exists() {
                    return Err(TrainError::NotARun {
                        dir: dir.to_path_buf(),
                        why: "the run has not finished training (no lm/model.mpk); run `cargo xtask train` on it \
                              again to finish, or name one of its checkpoints"
                            .into(),
                    });
                }
                (dir.join("lm/model"), config.lm.stages.len() - 1)
            }
            Some(step) => {
                let path = checkpoints.path(step);
                if !path.exists() {
                    let steps: Vec<String> = checkpoints.list().iter().map(|(s, _)| s.to_string()).collect();
                    return Err(TrainError::NotARun {
                        dir: dir.to_path_buf(),
                        why: format!(
                            "has no LM checkpoint after {step} steps; it has: {}",
                            if steps.is_empty() {
                                "none".into()
                            } else {
                                steps.join(", ")
                            }
                        ),
                    });
                }
                let lm_json = serde_json::to_value(&config.lm).expect("the config serialises");
                let state = checkpoints.state(&path, &lm_json)?;
                state.verify(&path).map_err(|why| TrainError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                (path.join("model"), state.stage)
            }
        };
        // run.json builds the model: it must still say what each step was made from (an edited width would fail
        // deep inside a forward pass, an edited rope_theta would silently make other images).
        stage::check_describes(dir, &config)?;
        // Every file loaded is checked against the checksum its step recorded (runs made before step records
        // existed have none to check).
        let mut loaded = vec![StageName::Tokenizer, StageName::Text];
        if step.is_none() {
            loaded.push(StageName::Lm);
        }
        for stage in loaded {
            let stage_dir = dir.join(stage.name());
            if let Some(record) = stage::StageRecord::read(&stage_dir)? {
                record.verify(&stage_dir, stage)?;
            }
        }
        let vq = load_vq_checked(&config, &dir.join("tokenizer/model.safetensors"), device)?;
        let text = TextTokenizer::load(&dir.join("text/tokenizer.json"))?;
        let lm = load_lm_checked(&config, stage, &weights, device)?;
        Ok(Self { config, vq, text, lm })
    }

    /// Generates one image per prompt.
    pub fn generate_images(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        device: &B::Device,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<image::RgbImage>, TrainError> {
        let texts: Vec<Vec<u32>> = prompts.iter().map(|p| self.text.encode(p)).collect::<Result<_, _>>()?;
        let max_text = self.config.lm.model.max_text_len;
        if let Some((prompt, ids)) = prompts.iter().zip(&texts).find(|(_, ids)| ids.len() > max_text) {
            // Quote the start only: a prompt pasted by mistake may be thousands of words long.
            let words: Vec<&str> = prompt.split_whitespace().collect();
            let quoted = if words.len() > 12 {
                format!("\"{} …\" ({} words)", words[..12].join(" "), words.len())
            } else {
                format!("{prompt:?}")
            };
            return Err(TrainError::Config(format!(
                "the prompt {quoted} is {} text ids long; this LM takes at most {max_text}: shorten it",
                ids.len()
            )));
        }
        let codes = self
            .lm
            .generate(&texts, options, device, &mut |step| on_step(step.done, step.total))?;
        Ok(tensor_to_images(self.vq.decode(codes)))
    }

    /// Generates one image per prompt and lays them out in a grid of `columns`.
    pub fn generate(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        columns: usize,
        device: &B::Device,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<image::RgbImage, TrainError> {
        Ok(tile(
            &self.generate_images(prompts, options, device, on_step)?,
            columns.max(1) as u32,
        ))
    }
}

/// The default path of a run named `name`.
pub fn run_dir(name: &str) -> PathBuf {
    PathBuf::from("runs").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_lm::{CfgSchedule, Sampler};
    use token_shuffle_test_support::TestBackend;

    /// The tiniest preset: a few steps of everything, on 32 px scenes.
    fn tiny_run() -> RunConfig {
        RunConfig::tiny()
    }

    /// Writes `shards` webdataset shards of `per_shard` captioned 32 px scenes into `dir` (`000.tar`, …), with one
    /// undecodable image in shard 1.
    fn write_scene_shards(dir: &Path, shards: usize, per_shard: usize) {
        use token_shuffle_data::scenes::{SceneCorpus, Split};
        let corpus = SceneCorpus::new(5, Split::Train, shards * per_shard);
        for shard in 0..shards {
            let samples: Vec<(String, Vec<u8>, String)> = (0..per_shard)
                .map(|i| {
                    let scene = corpus.scene((shard * per_shard + i) as u64);
                    let mut png = std::io::Cursor::new(Vec::new());
                    scene
                        .render(32)
                        .unwrap()
                        .write_to(&mut png, image::ImageFormat::Png)
                        .unwrap();
                    (format!("sample{i:03}"), png.into_inner(), scene.caption)
                })
                .collect();
            let mut members: Vec<(&str, &str, Vec<u8>, Option<&str>)> = samples
                .iter()
                .map(|(key, png, caption)| (key.as_str(), "png", png.clone(), Some(caption.as_str())))
                .collect();
            if shard == 1 {
                members.push(("broken", "jpg", b"not a jpeg".to_vec(), Some("a broken image")));
            }
            token_shuffle_data::shards::write_shard(&dir.join(format!("{shard:03}.tar")), &members).unwrap();
        }
    }

    /// A run over webdataset shards: `train --until text`, two `encode --shard K/2` processes, `encode --merge`,
    /// then `train` goes on with the LM from the per-shard caches (read from disk) without encoding again.
    #[test]
    fn webdataset_shards_encode_in_slices_and_train_end_to_end() {
        let _turn = crate::tests::one_at_a_time();
        let data = tempfile::tempdir().unwrap();
        write_scene_shards(data.path(), 3, 40);
        let config = RunConfig {
            data: format!("{}/{{000..002}}.tar", data.path().display()),
            ..tiny_run()
        };
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let until_text = PipelineSteps {
            restart_from: None,
            until: Some(StageName::Text),
        };
        run_pipeline_probed::<Autodiff<TestBackend>>(
            &config,
            dir.path(),
            std::slice::from_ref(&device),
            until_text,
            None,
            |_| {},
        )
        .unwrap();
        assert!(!dir.path().join("codes").exists() && !dir.path().join("lm").exists());

        let err = check_shard_codes::<TestBackend>(&config, dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("6 of 6 code cache files at 32 px are missing"), "{err}");
        let slice = |text: &str| text.parse::<ShardSlice>().unwrap();
        // Three processes at once: 1 of 2 takes shard 1 (the one with a bad image), 0 of 2 shards 0 and 2, and
        // 0 of 2 again, started by mistake: each shard is encoded by whoever takes it first, the codes step's
        // record is written once, and all three succeed.
        let encoders = ["1/2", "0/2", "0/2"].map(|k| {
            let (config, dir, device) = (&config, dir.path(), &device);
            move || {
                let mut summaries = Vec::new();
                encode_shards::<TestBackend>(config, dir, slice(k), device, |e| {
                    if let PipelineEvent::Data { summary, .. } = e {
                        summaries.push(summary.clone());
                    }
                })
                .map(|()| summaries)
            }
        });
        let [one, zero, again] = std::thread::scope(|s| encoders.map(|f| s.spawn(f)).map(|h| h.join().unwrap()));
        let skipped = one.unwrap();
        assert!(
            skipped.len() == 1 && skipped[0].contains("001.tar:broken.jpg"),
            "the bad image is named: {skipped:?}"
        );
        for summaries in [zero.unwrap(), again.unwrap()] {
            assert!(
                summaries.iter().all(|s| s.contains("another process is encoding it")),
                "{summaries:?}"
            );
        }
        let summary = check_shard_codes::<TestBackend>(&config, dir.path(), &device).unwrap();
        // 120 good images (the broken one skipped), split by a hash of shard and key.
        assert!(
            summary.contains("all 3 shards encoded (111 training, 9 validation samples)"),
            "{summary}"
        );
        let caches = dir.path().join("codes/shards-32");
        let locks: Vec<_> = std::fs::read_dir(&caches)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".lock"))
            .collect();
        assert!(locks.is_empty(), "--merge clears the encoders' lock files: {locks:?}");
        let written: Vec<(PathBuf, Vec<u8>)> = (0..3)
            .flat_map(|s| ["train", "valid"].map(|part| caches.join(format!("{s:03}.{part}.bin"))))
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();

        let mut events = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| events.push(e.clone())).unwrap();
        assert!(dir.path().join("lm/model.mpk").exists());
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, PipelineEvent::Progress { what, .. } if what.contains("shards"))),
            "nothing is encoded again"
        );
        for (path, bytes) in written {
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{} unchanged", path.display());
        }
        let record = StageRecord::read(&dir.path().join("codes")).unwrap().unwrap();
        assert_eq!(record.outputs.len(), 6, "{:?}", record.outputs.keys());
        // The tokenizer (2 steps × 4 images, 4 validation images: it holds about 80) held a seeded sample of the
        // 121 samples (120 scenes and the broken image), and said so; what it loaded is counted there.
        let tokenizer = StageRecord::read(&dir.path().join("tokenizer")).unwrap().unwrap();
        let data = tokenizer.data.join(" ");
        assert!(data.contains("a seeded sample of the shards' 121 samples"), "{data}");
        let loaded: usize = data
            .strip_prefix("loaded ")
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("`loaded N of M images` first: {data}"));
        assert!((40..=110).contains(&loaded), "{data}");
    }

    /// The whole pipeline on the tiniest models: it runs, a second run skips every step, and the trained run
    /// generates images of the right size.
    #[test]
    fn train_then_generate_end_to_end() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let config = tiny_run();
        let phases = |events: &[PipelineEvent]| -> Vec<(&'static str, bool)> {
            events
                .iter()
                .filter_map(|e| {
                    if let PipelineEvent::Phase { name, skipped, .. } = e {
                        Some((*name, *skipped))
                    } else {
                        None
                    }
                })
                .collect()
        };
        let mut first = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| first.push(e.clone())).unwrap();
        assert_eq!(
            phases(&first),
            [
                ("tokenizer", false),
                ("text tokenizer", false),
                ("code cache", false),
                ("lm", false)
            ]
        );
        let mut second = Vec::new();
        run_pipeline::<Autodiff<TestBackend>>(&config, dir.path(), &device, |e| second.push(e.clone())).unwrap();
        assert_eq!(
            phases(&second),
            [
                ("tokenizer", true),
                ("text tokenizer", true),
                ("code cache", true),
                ("lm", true)
            ]
        );

        let run = TrainedRun::<TestBackend>::load(dir.path(), &device).unwrap();
        let options = GenerateOptions {
            cfg_scale: 2.0,
            schedule: CfgSchedule::Linear,
            sampler: Sampler::default(),
            seed: 3,
        };
        let prompts = ["a red circle".to_string(), "two blue squares".to_string()];
        let grid = run.generate(&prompts, &options, 2, &device, &mut |_, _| {}).unwrap();
        assert_eq!(grid.dimensions(), (64, 32), "two 32 px images side by side");

        let too_long = ["a red circle ".repeat(20)];
        let err = run
            .generate(&too_long, &options, 1, &device, &mut |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("at most 80"), "{err}");
        let pasted = ["a red circle ".repeat(400)];
        let err = run
            .generate(&pasted, &options, 1, &device, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("(1200 words)") && err.len() < 300, "{err}");

        // A checkpoint loads in place of the final LM (tiny keeps the one after step 2, its last, which equals
        // the final weights); one that does not exist is named with the ones that do.
        let at_2 = TrainedRun::<TestBackend>::load_at(dir.path(), Some(2), &device).unwrap();
        let final_codes = |run: &TrainedRun<TestBackend>| {
            run.generate(&prompts, &options, 2, &device, &mut |_, _| {})
                .unwrap()
                .into_raw()
        };
        assert_eq!(final_codes(&at_2), final_codes(&run));
        let err = TrainedRun::<TestBackend>::load_at(dir.path(), Some(7), &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no LM checkpoint after 7 steps; it has: 2"), "{err}");
    }

    #[test]
    fn a_second_process_on_the_same_run_directory_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let held = crate::RunLock::acquire(dir.path()).unwrap();
        let err = run_pipeline::<Autodiff<TestBackend>>(&tiny_run(), dir.path(), &Default::default(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("already in use by process"), "{err}");
        let written: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(written, [".lock"], "nothing but the lock file");
        drop(held);
    }

    #[test]
    fn parts_that_do_not_fit_are_named() {
        let mut config = tiny_run();
        config.lm.model.codebook = 64;
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("lm.model.codebook = 64")
        );
        let mut config = tiny_run();
        config.lm.stages[0].resolution = 34;
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("stage 0") && err.contains("34×34"), "{err}");
        let mut config = tiny_run();
        config.lm.stages[0].window = 3;
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("stage 0") && err.contains("8×8 grid") && err.contains("3"),
            "{err}"
        );
    }

    /// Every file under `dir` with its bytes, to show that nothing changed.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n != "lock") {
                    files.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        files
    }

    fn train(
        config: &RunConfig,
        dir: &Path,
        restart_from: Option<StageName>,
    ) -> Result<Vec<PipelineEvent>, TrainError> {
        let mut events = Vec::new();
        let steps = PipelineSteps {
            restart_from,
            until: None,
        };
        run_pipeline_probed::<Autodiff<TestBackend>>(config, dir, &[Default::default()], steps, None, |e| {
            events.push(e.clone())
        })?;
        Ok(events)
    }

    fn skipped(events: &[PipelineEvent]) -> Vec<bool> {
        events
            .iter()
            .filter_map(|e| match e {
                PipelineEvent::Phase { skipped, .. } => Some(*skipped),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_changed_config_is_refused_before_anything_is_written_and_restart_from_remakes_the_step() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        let before = snapshot(dir.path());

        let mut wider = config.clone();
        wider.tokenizer.model.channels = 16;
        let mut other_data = config.clone();
        other_data.data = "twemoji".into();
        let mut more_images = config.clone();
        more_images.lm_images = 24;
        let mut other_lm = config.clone();
        other_lm.lm.stages[0].learning_rate = 0.5;
        for (changed, stage, field) in [
            (
                &wider,
                "tokenizer",
                "`tokenizer.model.channels` = 8, the config says 16",
            ),
            (
                &other_data,
                "tokenizer",
                "`data` = \"scenes\", the config says \"twemoji\"",
            ),
            (&more_images, "text", "`lm_images` = 12, the config says 24"),
            (
                &other_lm,
                "lm",
                "`lm.stages.0.learning_rate` = 0.001, the config says 0.5",
            ),
        ] {
            let err = train(changed, dir.path(), None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("its {stage} step is from another config")) && err.contains(field),
                "{err}"
            );
            assert!(err.contains(&format!("--restart-from {stage}")), "{err}");
            assert!(
                snapshot(dir.path()) == before,
                "nothing was written after refusing {field}"
            );
        }

        // A wider LM is still refused; fields that change only logging are not a changed config.
        let mut wider_lm = config.clone();
        wider_lm.lm.model.decoder.d_model *= 2;
        let err = train(&wider_lm, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("its lm step is from another config") && err.contains("lm.model.decoder.d_model"),
            "{err}"
        );
        let mut chattier = config.clone();
        chattier.lm.log_every = 1;
        chattier.lm.keep_checkpoints = 7;
        assert_eq!(skipped(&train(&chattier, dir.path(), None).unwrap()), [true; 4]);

        // Restarting from the LM keeps the tokenizer, text tokenizer and codes, and trains the LM again.
        let events = train(&other_lm, dir.path(), Some(StageName::Lm)).unwrap();
        assert!(matches!(&events[0], PipelineEvent::Restarted { from: StageName::Lm, deleted } if deleted.len() == 1));
        assert_eq!(skipped(&events), [true, true, true, false]);
        // And the run is now the new config's: a second run skips everything.
        assert_eq!(skipped(&train(&other_lm, dir.path(), None).unwrap()), [true; 4]);
    }

    #[test]
    fn corrupt_files_are_named_and_never_up_to_date() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        let device = Default::default();

        // Flip a byte in the middle of the tokenizer's weights.
        let weights = dir.path().join("tokenizer/model.safetensors");
        let mut bytes = std::fs::read(&weights).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&weights, &bytes).unwrap();
        for err in [
            train(&config, dir.path(), None).unwrap_err().to_string(),
            TrainedRun::<TestBackend>::load(dir.path(), &device)
                .err()
                .unwrap()
                .to_string(),
        ] {
            assert!(
                err.contains("tokenizer/model.safetensors")
                    && err.contains("checksum")
                    && err.contains("--restart-from tokenizer"),
                "{err}"
            );
        }
        bytes[middle] ^= 0x55;
        std::fs::write(&weights, &bytes).unwrap();

        // A truncated final LM is not "up to date".
        let lm = dir.path().join("lm/model.mpk");
        let full = std::fs::read(&lm).unwrap();
        std::fs::write(&lm, &full[..full.len() / 2]).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("lm/model.mpk") && err.contains("--restart-from lm"),
            "{err}"
        );
        std::fs::write(&lm, &full).unwrap();
        assert_eq!(skipped(&train(&config, dir.path(), None).unwrap()), [true; 4]);
    }

    #[test]
    fn a_run_made_before_step_records_is_adopted_when_its_run_json_agrees() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_run();
        train(&config, dir.path(), None).unwrap();
        for stage in StageName::ALL {
            std::fs::remove_file(dir.path().join(stage.name()).join("stage.json")).unwrap();
        }
        let mut other = config.clone();
        other.tokenizer.steps = 3;
        let err = train(&other, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("`tokenizer.steps` = 2, the config says 3"), "{err}");
        assert_eq!(skipped(&train(&config, dir.path(), None).unwrap()), [true; 4]);
        assert!(dir.path().join("lm/stage.json").exists(), "records written on adoption");

        // Weights found without a record are adopted only if they load: damaged ones are made again (here the LM
        // resumes from its last checkpoint and writes the same weights), never recorded as finished.
        let lm = dir.path().join("lm/model.mpk");
        let good = std::fs::read(&lm).unwrap();
        std::fs::remove_file(dir.path().join("lm/stage.json")).unwrap();
        std::fs::write(&lm, &good[..64]).unwrap();
        assert_eq!(
            skipped(&train(&config, dir.path(), None).unwrap()),
            [true, true, true, false]
        );
        assert_eq!(std::fs::read(&lm).unwrap(), good, "the LM's weights were made again");
    }

    /// The parameters of `lm` under `prefix`, by path.
    fn parameters_under(lm: &TokenShuffleLm<TestBackend>, prefix: &str) -> BTreeMap<String, Vec<f32>> {
        use burn_store::ModuleSnapshot;
        lm.collect(None, None, false)
            .into_iter()
            .filter(|s| s.full_path().starts_with(prefix))
            .map(|s| (s.full_path(), s.to_data().unwrap().to_vec().unwrap()))
            .collect()
    }

    #[test]
    fn a_run_starts_from_a_pretrained_checkpoint_with_its_tokenizer_and_refuses_a_changed_one() {
        let _turn = crate::tests::one_at_a_time();
        let checkpoint = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/hf/llama-gqa");
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(fixture.join(file), checkpoint.path().join(file)).unwrap();
        }
        // The file gives only where the weights come from; the checkpoint fills in the decoder.
        let mut json = serde_json::to_value(tiny_run()).unwrap();
        let model = json["lm"]["model"].as_object_mut().unwrap();
        for field in ["text_vocab", "decoder", "text_head", "text_bos"] {
            model.remove(field);
        }
        json["lm"]["init"] = checkpoint.path().to_string_lossy().into_owned().into();
        json["lm"]["pretrained_learning_rate_scale"] = 0.0.into();
        let config = RunConfig::parse(&json.to_string()).unwrap();
        assert_eq!(config.lm.model.decoder.d_model, 32);
        assert_eq!(config.lm.model.text_bos, Some(1));

        let dir = tempfile::tempdir().unwrap();
        let events = train(&config, dir.path(), None).unwrap();
        assert!(events.iter().any(|e| matches!(
            e,
            PipelineEvent::Lm(crate::LmEvent::Pretrained { parameters, .. }) if *parameters > 0
        )));
        let device = Default::default();
        let run = TrainedRun::<TestBackend>::load(dir.path(), &device).unwrap();
        let theirs = TextTokenizer::load(&checkpoint.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            run.text.encode("a red circle").unwrap(),
            theirs.encode("a red circle").unwrap()
        );
        // Frozen (scale 0): the decoder is the checkpoint's to the bit; what is new has trained.
        let hf = token_shuffle_lm::HfConfig::read(checkpoint.path()).unwrap();
        let stage = config.lm.stage_lm(0, config.tokenizer.model.downsample_factor());
        let loaded = token_shuffle_lm::load_hf::<TestBackend>(&hf, &stage, &device).unwrap();
        assert_eq!(
            parameters_under(&run.lm, "decoder."),
            parameters_under(&loaded, "decoder.")
        );
        assert_ne!(
            parameters_under(&run.lm, "image_head."),
            parameters_under(&loaded, "image_head.")
        );

        // A contradicting field is named with both values, before anything is written.
        let mut wider = config.clone();
        wider.lm.model.decoder.mlp_hidden = 64;
        let err = train(&wider, tempfile::tempdir().unwrap().path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lm.model.decoder.mlp_hidden = 64") && err.contains("gives 48"),
            "{err}"
        );
        // A changed checkpoint is a changed config for the LM step.
        let tokenizer = checkpoint.path().join("tokenizer.json");
        let mut text = std::fs::read_to_string(&tokenizer).unwrap();
        text.push('\n');
        std::fs::write(&tokenizer, text).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("its lm step is from another config") && err.contains("pretrained"),
            "{err}"
        );
    }

    #[test]
    fn generation_refuses_a_run_json_edited_after_training() {
        let _turn = crate::tests::one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        train(&tiny_run(), dir.path(), None).unwrap();
        let device = Default::default();
        let run_json = dir.path().join("run.json");
        let original = std::fs::read_to_string(&run_json).unwrap();
        let edit = |path: &[&str], value: serde_json::Value| {
            let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
            let mut at = &mut json;
            for key in path {
                at = &mut at[*key];
            }
            *at = value;
            std::fs::write(&run_json, json.to_string()).unwrap();
        };
        for (path, value) in [
            (&["lm", "model", "decoder", "rope_theta"][..], serde_json::json!(5000.0)),
            (&["lm", "model", "decoder", "d_model"][..], serde_json::json!(64)),
        ] {
            edit(path, value);
            let err = TrainedRun::<TestBackend>::load(dir.path(), &device)
                .err()
                .unwrap()
                .to_string();
            let field = path.join(".");
            assert!(
                err.contains("run.json was edited after training") && err.contains(&field),
                "{err}"
            );
        }
        // A logging-only field may change.
        edit(&["lm", "log_every"], serde_json::json!(1));
        assert!(TrainedRun::<TestBackend>::load(dir.path(), &device).is_ok());
    }

    #[test]
    fn a_folder_image_without_a_caption_is_named_before_any_step_runs() {
        let _turn = crate::tests::one_at_a_time();
        let data = tempfile::tempdir().unwrap();
        let square = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
        for i in 0..100 {
            square.save(data.path().join(format!("{i:02}.png"))).unwrap();
            if i != 17 {
                std::fs::write(data.path().join(format!("{i:02}.txt")), "a red square").unwrap();
            }
        }
        let mut config = tiny_run();
        config.data = data.path().display().to_string();
        let dir = tempfile::tempdir().unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(
            err.contains("17.png has no caption") && err.contains("allow_uncaptioned"),
            "{err}"
        );
        assert!(
            !dir.path().join("tokenizer").exists(),
            "refused before the tokenizer trained"
        );

        // A caption file that is not UTF-8 is named as such.
        std::fs::write(data.path().join("17.txt"), [0x61, 0xff, 0x62]).unwrap();
        let err = train(&config, dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("17.txt") && err.contains("not UTF-8"), "{err}");

        // Allowed, the run goes through, and a skipped (undecodable) image is named in the log and the record.
        std::fs::remove_file(data.path().join("17.txt")).unwrap();
        std::fs::write(data.path().join("03.png"), b"not a png").unwrap();
        config.allow_uncaptioned = true;
        let events = train(&config, dir.path(), None).unwrap();
        let reports: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                PipelineEvent::Data { summary, .. } => Some(summary.clone()),
                _ => None,
            })
            .collect();
        assert!(
            !reports.is_empty() && reports.iter().all(|r| r.contains("03.png")),
            "{reports:?}"
        );
        let record = StageRecord::read(&dir.path().join("codes")).unwrap().unwrap();
        assert!(
            record.data.iter().any(|d| d.contains("skipped 1 unreadable")),
            "{record:?}"
        );
    }
}
