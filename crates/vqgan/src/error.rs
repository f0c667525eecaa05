use std::path::PathBuf;

/// Errors of the VQ tokenizer. Each names what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum VqError {
    /// An image side of 0 px.
    #[error(
        "an image size of {height}×{width} px holds no image: give a resolution of at least {factor} px (this VQ \
         model's downsample factor), a multiple of it"
    )]
    EmptyImage {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// The model's downsample factor.
        factor: usize,
    },
    /// An image side is not a multiple of the downsample factor.
    #[error(
        "image size {height}×{width} is not divisible by this VQ model's downsample factor {factor}: \
         resize or crop images to a multiple of {factor} (e.g. {}×{})",
        height.div_ceil(*factor) * factor, width.div_ceil(*factor) * factor
    )]
    ImageSize {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// The model's downsample factor.
        factor: usize,
    },
    /// The model configuration cannot be built.
    #[error("VQ model config: {0}")]
    Config(String),
    /// Weights could not be read or written.
    #[error("{}: {message}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A weights file lacks tensors the model needs (a different model, or a truncated file).
    #[error(
        "{}: the file has no tensor {}{} ({} missing in all); was it saved from a model with this config?",
        path.display(), missing[..missing.len().min(5)].join(", "), if missing.len() > 5 { ", …" } else { "" },
        missing.len()
    )]
    MissingTensors {
        /// The weights file.
        path: PathBuf,
        /// The tensors it lacks.
        missing: Vec<String>,
    },
}
