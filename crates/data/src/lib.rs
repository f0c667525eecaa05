//! # token-shuffle-data — everything the tokenizer and the LM are fed
//!
//! ```toml
//! [dependencies]
//! token-shuffle-data = { git = "https://github.com/token-shuffle-rs/token-shuffle-rs" }
//! ```
//!
//! - [`scenes`]: the synthetic scene corpus, the embedded default data set, with GenEval's categories and a
//!   held-out set for evaluation.
//! - [`folder`]: image folders with captions (manifest or sidecars), decoded in parallel, bad files reported.
//! - [`shards`]: image-text data in the webdataset layout (tar shards), read shard by shard, decoded with rayon.
//! - [`twemoji`]: the Twemoji corpus, embedded in the `twemoji-assets` crate, captioned with emoji names.
//! - [`imaging`]: decode, centre-crop, resize, and scale pixels to `[-1, 1]`.
//! - [`text`]: the byte-level BPE text tokenizer, trained on captions, or any `tokenizer.json`.
//! - [`cache`]: the code cache LM training reads (code grids + caption ids), with fingerprints and atomic writes.
//! - [`codes`]: code caches on disk read sample by sample (one file per shard): memory independent of the data
//!   set's size.
//! - [`files`]: atomic writes (through a `.partial` name and a rename) and PNG saving.
//! - [`batch`]: burn `Dataset`s and `Batcher`s for pixel batches (tokenizer) and code batches (LM).
//!
//! ## Example
//! ```
//! use token_shuffle_data::scenes::{SceneCorpus, Split};
//! use token_shuffle_data::text::TextTokenizer;
//!
//! // Generated scenes (nothing is downloaded): image, caption and ground truth of scene 3.
//! let corpus = SceneCorpus::new(42, Split::Train, 1000);
//! let scene = corpus.scene(3);
//! assert_eq!(scene.render(64)?.dimensions(), (64, 64));
//! // A byte-level BPE trained on captions turns a prompt into ids for the LM.
//! let captions: Vec<String> = (0..200).map(|i| corpus.scene(i).caption).collect();
//! let text = TextTokenizer::train(captions.iter().map(String::as_str), 300)?;
//! assert!(!text.encode(&scene.caption)?.is_empty());
//! # Ok::<(), token_shuffle_data::DataError>(())
//! ```

pub mod batch;
pub mod cache;
pub mod codes;
mod error;
pub mod files;
pub mod folder;
pub mod imaging;
pub mod rng;
pub mod scenes;
pub mod shards;
pub mod text;
pub mod twemoji;

pub use error::DataError;
pub use files::{replace_atomically, save_png, save_user_image, write_atomically, write_user_file};

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
