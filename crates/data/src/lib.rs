//! # data — everything the tokenizer and the LM are fed
//!
//! - [`cache`]: the code cache LM training reads (code grids + caption ids), with fingerprints and atomic writes.
//! - [`scenes`]: the synthetic scene corpus, the embedded default data set, with GenEval's categories and a
//!   held-out set for evaluation.
//!
//! Still to come (see the data issue): image folders with captions, the Twemoji corpus, the BPE text tokenizer, and burn `Dataset`/`Batcher` implementations.

pub mod cache;
mod error;
pub mod rng;
pub mod scenes;

pub use error::DataError;
