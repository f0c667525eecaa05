use std::path::PathBuf;

use thiserror::Error;

/// Why data could not be produced. Every variant names the file, value or setting at fault.
#[derive(Debug, Error)]
pub enum DataError {
    /// A resolution outside what the source supports.
    #[error("resolution {resolution} px is not supported: use {allowed}")]
    Resolution {
        /// The requested resolution.
        resolution: u32,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An output path that is not written because writing it would lose something (a directory, a device, a
    /// run's own file) or cannot be written as asked.
    #[error("{}: not written: {why}", path.display())]
    OutputRefused {
        /// The path as given.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
    /// A code cache that is truncated, altered, or not a cache.
    #[error("code cache {}: {why}; delete it and run the tokenize step again", path.display())]
    CorruptCache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A code cache made with another tokenizer, VQ model, resolution or grid.
    #[error(
        "code cache {} is stale: its {field} is {cached}, this run's is {expected}; delete it (or point to the \
         matching one) and run the tokenize step again", path.display()
    )]
    StaleCache {
        /// The cache file.
        path: PathBuf,
        /// Which part of the key differs.
        field: &'static str,
        /// The cache's value.
        cached: String,
        /// This run's value.
        expected: String,
    },
    /// A code grid of the wrong size for the cache.
    #[error("a code grid of {got} codes does not fit the cache's {grid:?} grid")]
    CodeGrid {
        /// Number of codes given.
        got: usize,
        /// The cache's grid.
        grid: [usize; 2],
    },
    /// An image without a caption, where captions are required.
    #[error(
        "{} has no caption in {source_of_captions} ({count} image(s) lack one): add captions, or allow \
         uncaptioned images (`\"allow_uncaptioned\": true` in a run config)", path.display()
    )]
    MissingCaption {
        /// The first image without a caption.
        path: PathBuf,
        /// How many images lack one.
        count: usize,
        /// Where captions were looked for.
        source_of_captions: &'static str,
    },
    /// A caption file that cannot be used (not UTF-8, unreadable).
    #[error("caption file {}: {why}; fix or remove it", path.display())]
    BadCaption {
        /// The caption file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A malformed line of a captions manifest.
    #[error("{}:{line}: {why} (expected fields `path` and `caption`)", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// Webdataset shards that cannot be used: a malformed pattern, missing shards, a file that is not a tar.
    #[error("shards {spec}: {why}")]
    Shards {
        /// The shards as named (a pattern, directory or file).
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// No loadable image in a folder.
    #[error("no loadable PNG, JPEG or WebP image under {}: {summary}", root.display())]
    NoImages {
        /// The folder.
        root: PathBuf,
        /// What loading found.
        summary: String,
    },
    /// The text tokenizer could not be trained, loaded, or applied.
    #[error("text tokenizer, {what}: {why}")]
    Tokenizer {
        /// What was being done, or the file.
        what: String,
        /// The tokenizer's message.
        why: String,
    },
}
