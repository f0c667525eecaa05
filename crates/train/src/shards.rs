//! Webdataset shards into per-shard code caches: in the pipeline's code step, or by `cargo xtask encode --shard
//! K/N` processes that share a run's shards without talking to each other.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use token_shuffle_data::cache::{CacheKey, CodeCache};
use token_shuffle_data::codes::{CodeFile, CodeShards, Codes};
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_vqgan::VqModel;

use crate::encoding::{cache_key, encode_cache};
use crate::error::io;
use crate::events::PipelineEvent;
use crate::lock::FileLock;
use crate::stage::{self, StageName, StageRecord};
use crate::weights::load_vq;
use crate::{ImageSource, RunConfig, TrainError};

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
pub(crate) struct ShardEncoding<'a, B: Backend> {
    vq: &'a VqModel<B>,
    text: &'a TextTokenizer,
    key: &'a CacheKey,
    codes_dir: &'a Path,
    allow_uncaptioned: bool,
    batch_size: usize,
}

impl<'a, B: Backend> ShardEncoding<'a, B> {
    /// Encoding for a run of `config` with these tokenizers, into the caches of `key` under `codes_dir`.
    pub(crate) fn new(
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
    pub(crate) fn encode(
        &self,
        shards: &[PathBuf],
        slice: ShardSlice,
        device: &B::Device,
        on_event: &mut dyn FnMut(&PipelineEvent),
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
pub(crate) fn shard_codes(
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
/// [`run_pipeline`](crate::run_pipeline) reports for a changed config, bad shards and I/O.
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
    let ImageSource::Shards { paths: shards, .. } = config.data.resolve()? else {
        return Err(TrainError::Config(format!(
            "`{what}` encodes webdataset shards, but the run's data is {:?}: `cargo xtask train` encodes it",
            config.data.name()
        )));
    };
    let plan = stage::plan(config);
    stage::check_on_disk::<B>(dir, &plan, config, device)?;
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
