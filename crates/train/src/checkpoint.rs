//! Training checkpoints: the model and optimizer records (burn's named MessagePack format, full precision, which
//! keeps parameter ids so that the optimizer state finds its parameters again) and a `state.json`, written into
//! `step-NNNNNNNN.partial/` and renamed when complete, so a run killed mid-write leaves no half checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;

impl CheckpointState {
    /// Checks each file of the checkpoint in `dir` against its recorded checksum.
    ///
    /// # Errors
    /// What is wrong with the first file that fails.
    pub fn verify(&self, dir: &Path) -> Result<(), String> {
        for (name, sum) in &self.files {
            match std::fs::read(dir.join(name)) {
                Err(e) => return Err(format!("{name} cannot be read ({e})")),
                Ok(bytes) if &token_shuffle_data::cache::fingerprint(&bytes) != sum => {
                    return Err(format!("{name} does not match its checksum (altered or truncated)"));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// Says what a failed write of `what` means: burn's recorders wrap an I/O error in their own words (a full disk
/// reads "invalid value write: … MessagePack …"), so a full disk is recognised by the OS error it carries and named
/// as such. Nothing half-written is left looking valid either way (writes go to a `.partial` name first).
pub(crate) fn write_failure(what: &str, error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    if text.contains("os error 28") || text.contains("No space left") || text.contains("StorageFull") {
        format!(
            "writing the {what} failed: no space left on device; free some space (or put the run on another disk) \
             and run the same command again, which resumes from the last complete checkpoint"
        )
    } else {
        format!("writing the {what} failed: {text}")
    }
}

/// Writes `record` (a module's or an optimizer's) to `<path>.mpk` in burn's named MessagePack format, the same bytes
/// `NamedMpkFileRecorder<FullPrecisionSettings>` writes and reads back. The bytes are made in memory and written
/// here, so that an I/O error keeps its OS error: burn's file recorder turns a full disk into "invalid value
/// write: error while writing multi-byte MessagePack value". `what` names the record in the error.
///
/// # Errors
/// A message from [`write_failure`].
pub(crate) fn write_record<B: burn::tensor::backend::Backend, R: burn::record::Record<B>>(
    record: R,
    path: &Path,
    what: &str,
) -> Result<(), String> {
    use burn::record::{BurnRecord, FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, Recorder};
    // The file recorder's own metadata (it names the recorder), so that the bytes are exactly what it writes.
    let item = BurnRecord::<_, B>::new::<NamedMpkFileRecorder<FullPrecisionSettings>>(
        record.into_item::<FullPrecisionSettings>(),
    );
    let bytes = Recorder::<B>::save_item(&NamedMpkBytesRecorder::<FullPrecisionSettings>::new(), item, ())
        .map_err(|e| write_failure(what, e))?;
    write_synced(&path.with_extension("mpk"), &bytes).map_err(|e| write_failure(what, e))
}

/// Writes `bytes` into a new file at `path`, synced on the descriptor that wrote it.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The lines of the metrics file at `path` (one JSON object per line, `{"kind": {"step": …}}`) that cover steps up
/// to `step`: what a run resumed from the checkpoint after `step` keeps (it writes the rest again).
pub(crate) fn metrics_up_to(path: &Path, step: usize) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    old.lines()
        .filter(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let logged = value
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v["step"].as_u64());
            logged.is_some_and(|s| s as usize <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Rewrites the metrics file at `path` with `kept` (the lines a resumed run keeps, from [`metrics_up_to`]) and
/// opens it for appending.
pub(crate) fn reopen_metrics(path: &Path, kept: &str) -> Result<std::fs::File, TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Atomically: a crash here must not leave a metrics file shorter than the checkpoint it resumes from.
    token_shuffle_data::write_atomically(path, kept.as_bytes())?;
    std::fs::OpenOptions::new().append(true).open(path).map_err(io)
}

/// What a checkpoint records besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps completed.
    pub step: usize,
    /// Stage the saved model was trained in (the next step may start the following one).
    pub stage: usize,
    /// The run config as JSON: a checkpoint resumes only the run it was written by.
    pub config: serde_json::Value,
    /// BLAKE3 (hex) of each file of the checkpoint, by name, filled in by [`Checkpoints::save`] and checked on
    /// resume. (Empty in checkpoints written before checksums existed; those are not checked.)
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

/// The checkpoints of one run, in `dir`.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
}

impl Checkpoints {
    /// Checkpoints in `dir`, keeping the latest `keep` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    /// Where the checkpoint after `step` steps lives.
    pub fn path(&self, step: usize) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(usize, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        found.sort();
        found
    }

    /// The latest complete checkpoint.
    pub fn latest(&self) -> Option<(usize, PathBuf)> {
        self.list().pop()
    }

    /// Writes a checkpoint: `write` fills the temporary directory; it is renamed into place when `write`
    /// succeeds, and older checkpoints beyond `keep` are removed.
    pub fn save(
        &self,
        state: &CheckpointState,
        write: impl FnOnce(&Path) -> Result<(), TrainError>,
    ) -> Result<PathBuf, TrainError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        let target = self.path(state.step);
        token_shuffle_data::replace_atomically(&target, |partial| {
            std::fs::create_dir_all(partial).map_err(io(partial))?;
            write(partial)?;
            let mut state = state.clone();
            for entry in std::fs::read_dir(partial).map_err(io(partial))? {
                let path = entry.map_err(io(partial))?.path();
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                state.files.insert(name, token_shuffle_data::cache::fingerprint(&bytes));
            }
            let state_path = partial.join("state.json");
            let json = serde_json::to_vec_pretty(&state).expect("checkpoint state serialises");
            std::fs::write(&state_path, json).map_err(io(&state_path))
        })?;
        let all = self.list();
        for (_, old) in all.iter().take(all.len().saturating_sub(self.keep)) {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        }
        Ok(target)
    }

    /// The newest checkpoint whose state reads and whose files match their checksums, with its state, and the
    /// newer ones skipped (each with why). A checkpoint of another config is an error, not skipped.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] for a checkpoint written by another config.
    #[allow(clippy::type_complexity)]
    pub fn latest_valid(
        &self,
        config: &serde_json::Value,
    ) -> Result<(Option<(PathBuf, CheckpointState)>, Vec<(PathBuf, String)>), TrainError> {
        let mut skipped = Vec::new();
        for (_, path) in self.list().into_iter().rev() {
            let state = match self.state(&path, config) {
                Ok(state) => state,
                Err(TrainError::Checkpoint { message, .. }) if message.starts_with("unreadable state") => {
                    skipped.push((path, message));
                    continue;
                }
                Err(TrainError::Io { source, .. }) => {
                    skipped.push((path, format!("its state.json cannot be read ({source})")));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match state.verify(&path) {
                Err(why) => skipped.push((path, why)),
                Ok(()) => return Ok((Some((path, state)), skipped)),
            }
        }
        Ok((None, skipped))
    }

    /// Reads a checkpoint's state and checks that it belongs to the run `config`.
    pub fn state(&self, path: &Path, config: &serde_json::Value) -> Result<CheckpointState, TrainError> {
        let state_path = path.join("state.json");
        let bytes = std::fs::read(&state_path).map_err(|source| TrainError::Io {
            path: state_path.clone(),
            source,
        })?;
        let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: state_path.clone(),
            message: format!("unreadable state ({e}); delete this checkpoint to resume from the one before"),
        })?;
        // A checkpoint written before the LM's derived fields left the format is compared in today's form.
        // Fields added to the format since the checkpoint was written take today's values (laid under it).
        let stored = serde_json::from_value::<crate::LmTrainingConfig>(config.clone())
            .ok()
            .and_then(|current| {
                crate::config_file::parse_with_defaults(
                    &state.config.to_string(),
                    &current,
                    crate::config_file::migrate_lm_training,
                )
                .ok()
            })
            .and_then(|c| serde_json::to_value(c).ok())
            .unwrap_or_else(|| state.config.clone());
        // Fields that change only logging (`log_every`, …) may differ: they do not change what is resumed.
        let (stored, config) = (crate::lm::decisive_lm(&stored), crate::lm::decisive_lm(config));
        if stored != config {
            let field = differing_field(&stored, &config).unwrap_or_else(|| "?".into());
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                message: format!(
                    "written by a run with another config (first difference: `{field}`); resume with that config \
                     or start a new run directory"
                ),
            });
        }
        Ok(state)
    }
}

/// The path of the first field where two JSON values differ.
fn differing_field(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => differing_field(u, v).map(|inner| {
                    if inner.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}.{inner}")
                    }
                }),
                _ => Some(k.clone()),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (u, v))| {
                differing_field(u, v).map(|inner| {
                    if inner.is_empty() {
                        format!("{i}")
                    } else {
                        format!("{i}.{inner}")
                    }
                })
            })
        }
        _ => (a != b).then(String::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_as_such() {
        let full = std::io::Error::from_raw_os_error(28);
        let wrapped = format!("invalid value write: MessagePack error ({full})");
        let message = write_failure("model", wrapped);
        assert!(
            message.contains("no space left on device") && message.contains("resumes"),
            "{message}"
        );
        let other = write_failure("model", "permission denied");
        assert_eq!(other, "writing the model failed: permission denied");
        // Our own write keeps the OS error, which burn's file recorder loses (/dev/full: every write is ENOSPC).
        if Path::new("/dev/full").exists() {
            let err = write_synced(Path::new("/dev/full"), &[0; 4096]).unwrap_err();
            let message = write_failure("optimizer state", err);
            assert!(message.contains("no space left on device"), "{message}");
        }
    }

    #[test]
    fn records_are_written_as_burns_file_recorder_writes_them() {
        use burn::module::Module;
        use burn::record::Recorder as _;
        type B = token_shuffle_test_support::TestBackend;
        let device = Default::default();
        let linear = burn::nn::LinearConfig::new(3, 2).init::<B>(&device);
        // burn initialises parameters at first use: read them once, so that both copies hold the same values.
        let _ = (linear.weight.val(), linear.bias.as_ref().map(burn::module::Param::val));
        let dir = tempfile::tempdir().unwrap();
        write_record::<B, _>(linear.clone().into_record(), &dir.path().join("ours"), "model").unwrap();
        burn::record::NamedMpkFileRecorder::<burn::record::FullPrecisionSettings>::new()
            .record(linear.into_record(), dir.path().join("burns"))
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("ours.mpk")).unwrap(),
            std::fs::read(dir.path().join("burns.mpk")).unwrap()
        );
    }
    use serde_json::json;

    #[test]
    fn keeps_the_latest_and_ignores_partial_ones() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path(), 2);
        let config = json!({ "a": 1 });
        for step in [10, 20, 30] {
            let state = CheckpointState {
                step,
                stage: 0,
                config: config.clone(),
                files: Default::default(),
            };
            checkpoints
                .save(&state, |d| {
                    std::fs::write(d.join("w"), [step as u8])
                        .map_err(|source| TrainError::Io { path: d.into(), source })
                })
                .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("step-00000040.partial")).unwrap();
        let steps: Vec<usize> = checkpoints.list().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, [20, 30]);
        let (step, path) = checkpoints.latest().unwrap();
        assert_eq!(step, 30);
        assert_eq!(std::fs::read(path.join("w")).unwrap(), [30]);
        assert_eq!(checkpoints.state(&path, &config).unwrap().step, 30);
    }

    #[test]
    fn a_checkpoint_of_another_config_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path(), 1);
        let state = CheckpointState {
            step: 5,
            stage: 0,
            config: json!({ "lm": { "window": 2 }, "seed": 0 }),
            files: Default::default(),
        };
        let path = checkpoints.save(&state, |_| Ok(())).unwrap();
        let err = checkpoints
            .state(&path, &json!({ "lm": { "window": 4 }, "seed": 0 }))
            .unwrap_err();
        assert!(err.to_string().contains("`lm.window`"), "{err}");
        std::fs::write(path.join("state.json"), b"{ not json").unwrap();
        let err = checkpoints.state(&path, &state.config).unwrap_err();
        assert!(err.to_string().contains("unreadable state"), "{err}");
    }
}
