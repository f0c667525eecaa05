//! # data — everything the tokenizer and the LM are fed
//!
//! - [`scenes`]: the synthetic scene corpus, the embedded default data set, with GenEval's categories and a
//!   held-out set for evaluation.
//! - [`folder`]: image folders with captions (manifest or sidecars), decoded in parallel, bad files reported.
//! - [`twemoji`]: the Twemoji corpus, embedded in the `twemoji-assets` crate, captioned with emoji names.
//! - [`imaging`]: decode, centre-crop, resize, and scale pixels to `[-1, 1]`.
//! - [`text`]: the byte-level BPE text tokenizer, trained on captions, or any `tokenizer.json`.
//! - [`cache`]: the code cache LM training reads (code grids + caption ids), with fingerprints and atomic writes.
//! - [`files`]: atomic writes (through a `.partial` name and a rename) and PNG saving.
//! - [`batch`]: burn `Dataset`s and `Batcher`s for pixel batches (tokenizer) and code batches (LM).

pub mod batch;
pub mod cache;
mod error;
pub mod files;
pub mod folder;
pub mod imaging;
pub mod rng;
pub mod scenes;
pub mod text;
pub mod twemoji;

pub use error::DataError;
pub use files::{replace_atomically, save_png, write_atomically};

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
