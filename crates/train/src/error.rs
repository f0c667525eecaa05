use std::path::{Path, PathBuf};

/// Errors of a training run. Each names what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run configuration cannot be trained.
    #[error("training config: {0}")]
    Config(String),
    /// A loss became NaN or infinite; the last good weights on disk are untouched.
    #[error(
        "the {part} loss is {value} at step {step}: training stopped, the last saved weights are untouched; \
         to try a lower learning rate, start a new run directory (this one's checkpoints belong to its config), \
         or check the data"
    )]
    NonFiniteLoss {
        /// The step (counting from 1).
        step: usize,
        /// Which loss part: image cross-entropy, z-loss, text cross-entropy.
        part: &'static str,
        /// Its value.
        value: f32,
    },
    /// A checkpoint cannot be resumed from.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint (or run file).
        path: PathBuf,
        /// What is wrong, and what to do.
        message: String,
    },
    /// Another process is writing into the run directory.
    #[error(
        "{} is already in use by process {owner}: wait for it to finish or stop it (a killed process releases \
         the directory by itself), or use another directory",
        dir.display()
    )]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// The id of the process that holds it, as it wrote it.
        owner: String,
    },
    /// A directory that is not (or not yet) a finished run.
    #[error("{}: {why}", dir.display())]
    NotARun {
        /// The directory given as a run.
        dir: PathBuf,
        /// What is missing or wrong, and what to do.
        why: String,
    },
    /// The measurement taken during training (see [`crate::LmTrainingConfig::benchmark_every`]) failed; the
    /// checkpoints on disk are untouched.
    #[error(
        "the benchmark during training failed after step {step}: {message}; the checkpoints are untouched: fix it, \
         or set lm.benchmark_every to 0, and run again"
    )]
    Probe {
        /// The step it measured.
        step: usize,
        /// What went wrong.
        message: String,
    },
    /// A step already in the run directory was made from another config; nothing was written.
    #[error(
        "{}: its {stage} step is from another config: {difference}. Nothing was changed. Use a new --run \
         directory, or `--restart-from {stage}` to delete that step and the ones after it and make them again",
        dir.display()
    )]
    ChangedConfig {
        /// The run directory.
        dir: PathBuf,
        /// The first step that differs (tokenizer, text, codes, lm).
        stage: &'static str,
        /// The first differing field and its two values.
        difference: String,
    },
    /// A file of the run that fails its integrity check.
    #[error("{}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        why: String,
    },
    /// LM weights that could not be written or read.
    #[error("LM weights {}: {message}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong, and what to do.
        message: String,
    },
    /// A multi-node job failed: it did not form, its ranks disagree, or a rank stopped (see
    /// [`token_shuffle_distributed::ClusterError`]).
    #[error("{error}{}", match checkpoint {
        Some(path) => format!(" (the last checkpoint is {})", path.display()),
        None => String::new(),
    })]
    Cluster {
        /// What went wrong, naming the ranks.
        error: token_shuffle_distributed::ClusterError,
        /// The newest checkpoint in the run directory, the one a rerun resumes from.
        checkpoint: Option<PathBuf>,
    },
    /// The LM failed (a configuration it cannot build).
    #[error(transparent)]
    Lm(#[from] token_shuffle_lm::LmError),
    /// The tokenizer failed (a configuration it cannot build, weights it cannot read or write).
    #[error(transparent)]
    Vq(#[from] token_shuffle_vqgan::VqError),
    /// Loading data failed.
    #[error(transparent)]
    Data(#[from] token_shuffle_data::DataError),
    /// A file of the run could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The [`TrainError::Io`] of an operation on `path`, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + use<> {
    let path = path.to_path_buf();
    move |source| TrainError::Io { path, source }
}
