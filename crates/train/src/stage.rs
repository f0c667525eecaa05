//! Stage records (`<stage>/stage.json`): what each step of a run was made from, and what it wrote.
//!
//! Each step of the pipeline — the VQ tokenizer, the text tokenizer, the code caches, the LM — depends on parts of
//! the run config and on the steps before it. Its record holds those inputs (so that a difference can be named field
//! by field), a fingerprint of them chained with the earlier steps' fingerprints, and, once the step has finished,
//! a BLAKE3 checksum of every file it wrote. [`check`] compares a run directory with a config before anything is
//! written: a step made from other inputs is refused, naming the field and both values, unless the user restarts
//! from it ([`restart`]); a step whose files do not match their checksums is never called up to date
//! ([`StageRecord::is_finished`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use token_shuffle_data::cache::{fingerprint, fingerprint_file};

use crate::error::io;
use crate::{RunConfig, TrainError};

/// A step of the pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StageName {
    /// The VQ tokenizer (`tokenizer/`).
    Tokenizer,
    /// The text tokenizer (`text/`).
    Text,
    /// The code caches (`codes/`).
    Codes,
    /// The LM (`lm/`).
    Lm,
}

impl StageName {
    /// Every stage, in the order the pipeline runs them.
    pub const ALL: [StageName; 4] = [Self::Tokenizer, Self::Text, Self::Codes, Self::Lm];

    /// Its name on the command line, which is also its directory in the run.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenizer => "tokenizer",
            Self::Text => "text",
            Self::Codes => "codes",
            Self::Lm => "lm",
        }
    }

    /// The files a finished stage has written, relative to its directory, for a run of `config`.
    fn outputs(self, config: &RunConfig) -> Vec<String> {
        match self {
            Self::Tokenizer => vec!["model.safetensors".into()],
            Self::Text => vec!["tokenizer.json".into()],
            // Webdataset shards: two cache files per shard (see `shard_cache_names`).
            Self::Codes if let crate::DataSource::Shards(spec) = &config.data => {
                let shards = token_shuffle_data::shards::shard_paths(spec).unwrap_or_default();
                resolutions(config)
                    .into_iter()
                    .flat_map(|r| shards.iter().flat_map(move |s| shard_cache_names(r, s)))
                    .collect()
            }
            Self::Codes => resolutions(config)
                .into_iter()
                .flat_map(|r| [format!("train-{r}.bin"), format!("valid-{r}.bin")])
                .collect(),
            Self::Lm => vec!["model.mpk".into()],
        }
    }
}

impl std::str::FromStr for StageName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|stage| stage.name() == s)
            .ok_or_else(|| format!("unknown stage {s:?}: one of tokenizer, text, codes, lm"))
    }
}

/// The code cache files (train, valid) of webdataset shard `shard` at `resolution` px, relative to the codes step's
/// directory: `shards-<px>/<shard name>.train.bin`.
pub(crate) fn shard_cache_names(resolution: usize, shard: &Path) -> [String; 2] {
    let name = shard
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    [
        format!("shards-{resolution}/{name}.train.bin"),
        format!("shards-{resolution}/{name}.valid.bin"),
    ]
}

pub(crate) fn resolutions(config: &RunConfig) -> BTreeSet<usize> {
    config.lm.stages.iter().map(|s| s.resolution).collect()
}

/// What a stage was made from and, once finished, what it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Everything the stage depends on: its config sections and the fingerprints of the stages before it.
    pub inputs: Value,
    /// BLAKE3 of [`Self::inputs`] (hex).
    pub fingerprint: String,
    /// Each file the finished stage wrote (relative to its directory) and its BLAKE3 (hex); empty while the stage
    /// has not finished.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// What loading its images found, for steps that load a corpus (Twemoji, a folder): counts and the skipped
    /// files by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<String>,
}

/// Normalises a JSON value through its text form, so that a record read back from disk compares equal to one made
/// in memory (an f32 field widened to f64 in memory reads back as the shorter decimal it was written as).
pub(crate) fn normalised(value: Value) -> Value {
    serde_json::from_str(&value.to_string()).expect("JSON text parses")
}

/// A stage's inputs without what changes only logging (the LM's [`crate::LOGGING_ONLY_LM_FIELDS`]): what decides
/// the stage's files, and so what its fingerprint covers.
fn decisive(inputs: &Value) -> Value {
    let mut decisive = inputs.clone();
    if let Some(lm) = decisive.get_mut("lm") {
        *lm = crate::lm::decisive_lm(lm);
    }
    decisive
}

/// The fingerprint of `inputs`: BLAKE3 of their decisive part ([`decisive`]).
fn fingerprint_of(inputs: &Value) -> String {
    fingerprint(decisive(inputs).to_string().as_bytes())
}

fn record(inputs: Value) -> StageRecord {
    let inputs = normalised(inputs);
    StageRecord {
        fingerprint: fingerprint_of(&inputs),
        inputs,
        outputs: BTreeMap::new(),
        data: Vec::new(),
    }
}

/// The record each stage of a run of `config` must carry (without outputs), in pipeline order.
pub fn plan(config: &RunConfig) -> Vec<(StageName, StageRecord)> {
    plan_from(config, None)
}

/// [`plan`] for a run that starts from a pretrained checkpoint (`lm.init`) whose files have the fingerprint
/// `pretrained` ([`crate::Pretrained::fingerprint`]): the LM step's record holds it.
pub fn plan_from(config: &RunConfig, pretrained: Option<&str>) -> Vec<(StageName, StageRecord)> {
    let tokenizer = record(json!({ "data": config.data.name(), "tokenizer": config.tokenizer }));
    let text = match &config.lm.init {
        // The checkpoint's own tokenizer, copied (its content is in the LM step's `pretrained` fingerprint).
        Some(init) => record(json!({ "tokenizer_json": init.join("tokenizer.json") })),
        // A BPE trained on the captions of the LM's training images, drawn with the tokenizer's seed.
        None => record(json!({
            "data": config.data.name(),
            "lm_images": config.lm_images,
            "text_vocab_size": config.text_vocab_size,
            "allow_uncaptioned": config.allow_uncaptioned,
            "seed": config.tokenizer.seed,
        })),
    };
    let codes = record(json!({
        "tokenizer": tokenizer.fingerprint,
        "text": text.fingerprint,
        "data": config.data.name(),
        "lm_images": config.lm_images,
        "valid_images": config.tokenizer.valid_images,
        "seed": config.tokenizer.seed,
        "resolutions": resolutions(config),
    }));
    let mut lm = json!({ "codes": codes.fingerprint, "lm": config.lm });
    if let Some(pretrained) = pretrained {
        lm["pretrained"] = pretrained.into();
    }
    let lm = record(lm);
    StageName::ALL.into_iter().zip([tokenizer, text, codes, lm]).collect()
}

/// The first field where `a` and `b` differ (a dotted path, empty when they differ at the top), with both values.
pub(crate) fn first_difference(a: &Value, b: &Value) -> Option<(String, Value, Value)> {
    let join = |outer: String, (inner, x, y): (String, Value, Value)| {
        let path = if inner.is_empty() {
            outer
        } else {
            format!("{outer}.{inner}")
        };
        (path, x, y)
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(u, v).map(|d| join(k.clone(), d)),
                (u, v) => Some((
                    k.clone(),
                    u.cloned().unwrap_or(Value::Null),
                    v.cloned().unwrap_or(Value::Null),
                )),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(u, v).map(|d| join(i.to_string(), d))),
        _ => (a != b).then(|| (String::new(), a.clone(), b.clone())),
    }
}

impl StageRecord {
    /// Whether this record (read from disk) was made from the inputs `wanted` asks for. The fingerprint is
    /// computed again from the recorded inputs, so that records written before logging-only fields left the
    /// fingerprint still match.
    fn made_from(&self, wanted: &StageRecord) -> bool {
        fingerprint_of(&self.inputs) == wanted.fingerprint
    }

    fn path(stage_dir: &Path) -> PathBuf {
        stage_dir.join("stage.json")
    }

    /// The record in `stage_dir`, if it has one.
    ///
    /// # Errors
    /// [`TrainError::Corrupt`] for a record that cannot be read.
    pub fn read(stage_dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = Self::path(stage_dir);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TrainError::Io { path, source }),
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TrainError::Corrupt {
                    path,
                    why: format!("unreadable stage record ({e})"),
                }),
        }
    }

    /// Writes the record (atomically), creating `stage_dir`.
    ///
    /// # Errors
    /// [`TrainError::Io`].
    pub fn write(&self, stage_dir: &Path) -> Result<(), TrainError> {
        std::fs::create_dir_all(stage_dir).map_err(io(stage_dir))?;
        let json = serde_json::to_vec_pretty(self).expect("a stage record serialises");
        token_shuffle_data::write_atomically(&Self::path(stage_dir), &json).map_err(TrainError::Data)
    }

    /// Records the stage finished: the checksum of each of `files` (relative to `stage_dir`) is written into the
    /// record.
    ///
    /// # Errors
    /// [`TrainError::Io`] when a file cannot be read.
    pub fn finish(mut self, stage_dir: &Path, files: &[String]) -> Result<Self, TrainError> {
        self.outputs = files
            .iter()
            .map(|file| {
                let path = stage_dir.join(file);
                Ok((file.clone(), fingerprint_file(&path).map_err(io(&path))?))
            })
            .collect::<Result<_, TrainError>>()?;
        self.write(stage_dir)?;
        Ok(self)
    }

    /// Checks every recorded file against its checksum.
    ///
    /// # Errors
    /// [`TrainError::Corrupt`] naming the first file that is missing or altered, and `stage` to restart from.
    pub fn verify(&self, stage_dir: &Path, stage: StageName) -> Result<(), TrainError> {
        for (file, sum) in &self.outputs {
            let path = stage_dir.join(file);
            let why = match fingerprint_file(&path) {
                Err(e) => format!("cannot be read ({e})"),
                Ok(found) if &found != sum => {
                    "does not match the checksum recorded when it was written (altered or truncated)".into()
                }
                Ok(_) => continue,
            };
            return Err(TrainError::Corrupt {
                path,
                why: format!(
                    "{why}; make it again with `--restart-from {}` (deletes the {} step and the steps after it)",
                    stage.name(),
                    stage.name()
                ),
            });
        }
        Ok(())
    }

    /// Whether the stage in `stage_dir` has finished with this record's inputs and its files verify.
    ///
    /// # Errors
    /// [`TrainError::Corrupt`] when it finished but a file fails its checksum; reading errors.
    pub fn is_finished(&self, stage_dir: &Path, stage: StageName) -> Result<bool, TrainError> {
        match Self::read(stage_dir)? {
            Some(found) if found.made_from(self) && !found.outputs.is_empty() => {
                found.verify(stage_dir, stage)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Deletes stage `from` and every stage after it in `dir`; returns the directories deleted.
///
/// # Errors
/// [`TrainError::NotARun`] (nothing deleted) when `dir` has step folders but no `run.json` and no step record;
/// [`TrainError::Io`].
pub fn restart(dir: &Path, from: StageName) -> Result<Vec<PathBuf>, TrainError> {
    // Only a run's own steps are deleted: a directory that merely has a folder named like a step is not a run.
    let is_run = dir.join("run.json").is_file()
        || StageName::ALL
            .iter()
            .any(|stage| StageRecord::path(&dir.join(stage.name())).is_file());
    let present = StageName::ALL
        .iter()
        .any(|stage| *stage >= from && dir.join(stage.name()).exists());
    if present && !is_run {
        return Err(TrainError::NotARun {
            dir: dir.to_path_buf(),
            why: "has no run.json and no step records, so `--restart-from` deletes nothing there; give the \
                  directory of a run"
                .into(),
        });
    }
    let mut deleted = Vec::new();
    for stage in StageName::ALL.into_iter().filter(|s| *s >= from) {
        let stage_dir = dir.join(stage.name());
        if stage_dir.exists() {
            std::fs::remove_dir_all(&stage_dir).map_err(io(&stage_dir))?;
            deleted.push(stage_dir);
        }
    }
    Ok(deleted)
}

/// Checks the stages already in `dir` against `plan` (from [`plan`]) before anything is written.
///
/// A stage directory without a record was made before records existed: it is compared through the run's
/// `run.json` (`legacy`, the config it was last run with) and, when that agrees, given its record (finished, with
/// the checksums of its files as they are, when its files are all there and `usable` accepts them: weights must
/// load, have the config's shapes and be finite, or the step is made again rather than recorded as finished).
///
/// # Errors
/// [`TrainError::ChangedConfig`] for the first stage made from other inputs (nothing is written then);
/// [`TrainError::Corrupt`] for an unreadable record.
pub fn check(
    dir: &Path,
    plan: &[(StageName, StageRecord)],
    config: &RunConfig,
    legacy: Option<&RunConfig>,
    usable: &mut dyn FnMut(StageName, &Path) -> bool,
) -> Result<(), TrainError> {
    let legacy_plan = legacy.map(self::plan);
    let mut adopt = Vec::new();
    for (index, (stage, wanted)) in plan.iter().enumerate() {
        let stage_dir = dir.join(stage.name());
        if !stage_dir.exists() {
            continue;
        }
        let found = match StageRecord::read(&stage_dir)? {
            Some(found) => found,
            None => {
                let Some(old) = legacy_plan.as_ref().map(|p| p[index].1.clone()) else {
                    return Err(TrainError::ChangedConfig {
                        dir: dir.to_path_buf(),
                        stage: stage.name(),
                        difference: "it has no record of what it was made from (no stage.json, no run.json)".into(),
                    });
                };
                adopt.push((*stage, old.clone()));
                old
            }
        };
        if !found.made_from(wanted) {
            let difference = match first_difference(&decisive(&found.inputs), &decisive(&wanted.inputs)) {
                Some((field, on_disk, asked)) => {
                    format!("it was made with `{field}` = {on_disk}, the config says {asked}")
                }
                None => "it was made from other inputs".into(),
            };
            return Err(TrainError::ChangedConfig {
                dir: dir.to_path_buf(),
                stage: stage.name(),
                difference,
            });
        }
    }
    for (stage, record) in adopt {
        let stage_dir = dir.join(stage.name());
        let files = stage.outputs(config);
        let legacy_done = match stage {
            StageName::Tokenizer | StageName::Lm => stage_dir.join("done.json").exists(),
            StageName::Text | StageName::Codes => true,
        } && files.iter().all(|f| stage_dir.join(f).exists())
            && usable(stage, &stage_dir);
        if legacy_done {
            record.finish(&stage_dir, &files)?;
        } else {
            record.write(&stage_dir)?;
        }
    }
    Ok(())
}

/// Checks that `config` — a run's `run.json`, read to build its models — still describes every step recorded in
/// `dir`, so that generation never builds a model other than the one its weights were trained as.
///
/// # Errors
/// [`TrainError::NotARun`] naming the first step and field that differ, with both values; [`TrainError::Corrupt`]
/// for an unreadable record.
pub fn check_describes(dir: &Path, config: &RunConfig) -> Result<(), TrainError> {
    for (stage, wanted) in plan(config) {
        let Some(mut found) = StageRecord::read(&dir.join(stage.name()))? else {
            continue;
        };
        // Which files a pretrained LM started from does not change the model its weights are built as.
        if let Some(inputs) = found.inputs.as_object_mut() {
            inputs.remove("pretrained");
        }
        if !found.made_from(&wanted) {
            let difference = match first_difference(&decisive(&found.inputs), &decisive(&wanted.inputs)) {
                Some((field, made, now)) => format!(
                    "its {} step was made with `{field}` = {made}, run.json now says {now}",
                    stage.name()
                ),
                None => format!(
                    "its {} step was made from other inputs than run.json now gives",
                    stage.name()
                ),
            };
            return Err(TrainError::NotARun {
                dir: dir.to_path_buf(),
                why: format!(
                    "run.json was edited after training: {difference}. Put run.json back as it was (the models are \
                     built from it); to train with the new value, use a new --run directory or `--restart-from {}`",
                    stage.name()
                ),
            });
        }
    }
    Ok(())
}

/// The files stage `stage` of a run of `config` writes (for [`StageRecord::finish`]).
pub fn outputs(stage: StageName, config: &RunConfig) -> Vec<String> {
    stage.outputs(config)
}

/// Checks the steps already in `dir` against `plan` ([`stage::check`]), with the config the run was last started
/// with (`run.json`) for steps made before stage records existed.
pub(crate) fn check_on_disk<B: burn::tensor::backend::Backend>(
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
        StageName::Tokenizer => {
            crate::weights::load_vq_checked::<B>(config, &stage_dir.join("model.safetensors"), device).is_ok()
        }
        StageName::Text => token_shuffle_data::text::TextTokenizer::load(&stage_dir.join("tokenizer.json")).is_ok(),
        // Code caches check their own header and size whenever they are opened.
        StageName::Codes => true,
        StageName::Lm => {
            crate::weights::load_lm_checked::<B>(config, config.lm.stages.len() - 1, &stage_dir.join("model"), device)
                .is_ok()
        }
    };
    check(dir, plan, config, legacy.as_ref(), &mut usable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_deletes_only_the_steps_of_a_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lm")).unwrap();
        std::fs::write(dir.path().join("lm/mine.txt"), b"not a run's").unwrap();
        let err = restart(dir.path(), StageName::Tokenizer).unwrap_err().to_string();
        assert!(err.contains("no run.json"), "{err}");
        assert!(dir.path().join("lm/mine.txt").exists(), "nothing deleted");

        std::fs::write(dir.path().join("run.json"), b"{}").unwrap();
        let deleted = restart(dir.path(), StageName::Codes).unwrap();
        assert_eq!(deleted, [dir.path().join("lm")]);
        // Nothing to delete is not an error, in a run or not.
        assert!(
            restart(tempfile::tempdir().unwrap().path(), StageName::Lm)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_lm_record_made_before_a_field_existed_matches_its_default_and_no_other_value() {
        let config = RunConfig::tiny();
        let lm = |c: &RunConfig| plan(c)[StageName::Lm as usize].1.clone();
        let mut old = lm(&config);
        let fields = old.inputs["lm"].as_object_mut().unwrap();
        fields.remove("init");
        fields.remove("pretrained_learning_rate_scale");
        fields["model"].as_object_mut().unwrap().remove("text_head");
        fields["model"].as_object_mut().unwrap().remove("text_bos");
        let decoder = fields["model"]["decoder"].as_object_mut().unwrap();
        for field in ["head_dim", "qkv_bias", "rope_scaling"] {
            decoder.remove(field);
        }
        assert!(
            old.made_from(&lm(&config)),
            "the defaults are what the old record was made with"
        );
        let mut changed = config.clone();
        changed.lm.model.decoder.qkv_bias = true;
        assert!(!old.made_from(&lm(&changed)));
        let mut changed = config;
        changed.lm.pretrained_learning_rate_scale = 0.5;
        assert!(!old.made_from(&lm(&changed)));
    }

    #[test]
    fn logging_only_fields_leave_the_fingerprint_as_it_was() {
        let config = RunConfig::tiny();
        let mut chattier = config.clone();
        chattier.lm.log_every += 1;
        chattier.lm.benchmark_every += 5;
        chattier.lm.keep_checkpoints += 1;
        let mut other = config.clone();
        other.lm.seed += 1;
        let lm = |c: &RunConfig| plan(c)[StageName::Lm as usize].1.clone();
        assert_eq!(lm(&config).fingerprint, lm(&chattier).fingerprint);
        assert!(lm(&chattier).made_from(&lm(&config)));
        assert_ne!(lm(&config).fingerprint, lm(&other).fingerprint);
        // A record written before these fields left the fingerprint (its fingerprint covers them) still matches.
        let mut old = lm(&config);
        old.fingerprint = fingerprint(old.inputs.to_string().as_bytes());
        assert_ne!(old.fingerprint, lm(&config).fingerprint);
        assert!(old.made_from(&lm(&chattier)));
    }
}
