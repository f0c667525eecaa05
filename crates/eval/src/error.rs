use std::path::{Path, PathBuf};

/// What can go wrong in an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A setting that cannot work, with what to change.
    #[error("{0}")]
    Config(String),
    /// The backend failed (a device error while synchronising).
    #[error("backend: {0}")]
    Backend(String),
    /// The image generator under test misbehaved.
    #[error("the generator under test: {0}")]
    Generator(String),
    /// Training or loading a run failed.
    #[error(transparent)]
    Train(#[from] token_shuffle_train::TrainError),
    /// The LM refused its input.
    #[error(transparent)]
    Lm(#[from] token_shuffle_lm::LmError),
    /// Data could not be made.
    #[error(transparent)]
    Data(#[from] token_shuffle_data::DataError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The [`EvalError::Io`] of an operation on `path`, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + use<> {
    let path = path.to_path_buf();
    move |source| EvalError::Io { path, source }
}
