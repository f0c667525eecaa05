//! # data — everything the tokenizer and the LM are fed
//!
//! - [`cache`]: the code cache LM training reads (code grids + caption ids), with fingerprints and atomic writes.
//! - [`folder`]: image folders with captions (manifest or sidecars), decoded in parallel, bad files reported.
//! - [`twemoji`]: the Twemoji corpus, embedded in the `twemoji-assets` crate, captioned with emoji names.
//! - [`imaging`]: decode, centre-crop, resize, and scale pixels to `[-1, 1]`.
//! - [`scenes`]: the synthetic scene corpus, the embedded default data set, with GenEval's categories and a
//!   held-out set for evaluation.
//!
//! Still to come (see the data issue): the BPE text tokenizer and burn `Dataset`/`Batcher` implementations.

pub mod cache;
mod error;
pub mod folder;
pub mod imaging;
pub mod rng;
pub mod scenes;
pub mod twemoji;

pub use error::DataError;

/// One example of a pixel data set: an id (a relative path, an emoji, a scene index), its caption, and its
/// square RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageCaption {
    /// Identifies the example within its data set.
    pub id: String,
    /// The caption (empty only where uncaptioned images were allowed).
    pub caption: String,
    /// The image, `resolution × resolution`.
    pub image: image::RgbImage,
}
