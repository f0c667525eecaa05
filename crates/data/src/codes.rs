//! Code caches read from disk sample by sample, so that LM training over a data set of any size needs memory for
//! its batches only.
//!
//! A large data set is cached as many files (one per webdataset shard, or per fixed-size chunk), each an ordinary
//! [`CodeCache`] file. [`CodeFile`] checks one file whole when it is opened (the checksum and fingerprints
//! [`CodeCache::open`] checks, streamed through a small buffer) and then reads one sample with three positioned
//! reads; [`CodeShards`] puts files end to end; [`Codes`] is what training takes: a cache in memory or on disk.
//!
//! ```
//! use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
//! use token_shuffle_data::codes::{CodeShards, Codes};
//!
//! let dir = std::env::temp_dir().join(format!("codes-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let key = CacheKey { tokenizer: fingerprint(b"t"), vq_model: fingerprint(b"v"), resolution: 32, grid: [2, 2] };
//! let mut paths = Vec::new();
//! for shard in 0..3u32 {
//!     let mut cache = CodeCache::new(key.clone());
//!     cache.push(&[shard; 4], &[shard, 7])?;
//!     paths.push(dir.join(format!("{shard}.bin")));
//!     cache.save(paths.last().unwrap())?;
//! }
//! let codes = Codes::from(CodeShards::open(&paths, &key)?);
//! let (mut grid, mut text) = (Vec::new(), Vec::new());
//! codes.read(2, &mut grid, &mut text)?;
//! assert_eq!((codes.len(), grid, text), (3, vec![2; 4], vec![2, 7]));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::cache::{CHECKSUM_LEN, CacheKey, CodeCache, Header, Layout, MAGIC, check_key, decode_codes};

/// One code cache file, checked whole when opened and then read one sample at a time.
#[derive(Debug)]
pub struct CodeFile {
    path: PathBuf,
    file: File,
    key: CacheKey,
    samples: usize,
    code_bytes: usize,
    longest_text: Option<usize>,
    layout: Layout,
}

impl CodeFile {
    /// Opens `path`, checking its checksum (the file is read once, through a 1 MiB buffer) and that it was made with
    /// `expected`.
    ///
    /// # Errors
    /// As [`CodeCache::open`]: [`DataError::CorruptCache`] for a truncated, altered or foreign file,
    /// [`DataError::StaleCache`] naming the field made with something else, [`DataError::Io`].
    pub fn open(path: &Path, expected: &CacheKey) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let corrupt = |why: &str| DataError::CorruptCache {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let mut file = File::open(path).map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        if length < (MAGIC.len() + 8 + CHECKSUM_LEN) as u64 {
            return Err(corrupt("not a code cache (bad magic or too short)"));
        }
        let body_length = length - CHECKSUM_LEN as u64;
        let mut hasher = blake3::Hasher::new();
        let mut start = [0u8; 16];
        file.read_exact(&mut start).map_err(io)?;
        if &start[..8] != MAGIC {
            return Err(corrupt("not a code cache (bad magic or too short)"));
        }
        hasher.update(&start);
        let header_len = u64::from_le_bytes(start[8..16].try_into().unwrap());
        if header_len > body_length - 16 {
            return Err(corrupt("unreadable header"));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        hasher.update(&header);
        let mut rest = (&mut file).take(body_length - 16 - header_len);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = rest.read(&mut buffer).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let mut checksum = [0u8; CHECKSUM_LEN];
        file.read_exact(&mut checksum).map_err(io)?;
        if hasher.finalize().as_bytes() != &checksum {
            return Err(corrupt("checksum mismatch: the file is truncated or was altered"));
        }
        let header: Header = serde_json::from_slice(&header).map_err(|_| corrupt("unreadable header"))?;
        check_key(path, &header.key, expected)?;
        let layout = header.layout(header_len as usize);
        if layout.end != body_length || !matches!(header.code_bytes, 2 | 4) {
            return Err(corrupt("body length does not match the header"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            key: header.key,
            samples: header.samples,
            code_bytes: header.code_bytes,
            longest_text: header.longest_text,
            layout,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples
    }

    /// Whether the file holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Appends sample `i`'s code grid to `codes` and its caption ids to `text`.
    ///
    /// # Panics
    /// When `i >= len()`.
    ///
    /// # Errors
    /// [`DataError::Io`] when the file cannot be read (it was checked when opened), or
    /// [`DataError::CorruptCache`] when it changed since.
    pub fn read(&self, i: usize, codes: &mut Vec<u32>, text: &mut Vec<u32>) -> Result<(), DataError> {
        assert!(i < self.samples, "sample {i} of a cache of {}", self.samples);
        let io = |source| DataError::Io {
            path: self.path.clone(),
            source,
        };
        let cells = self.key.grid[0] * self.key.grid[1];
        let mut grid = vec![0u8; cells * self.code_bytes];
        let at = self.layout.codes + (i * cells * self.code_bytes) as u64;
        self.file.read_exact_at(&mut grid, at).map_err(io)?;
        decode_codes(&grid, self.code_bytes, codes);
        let mut offsets = [0u8; 16];
        self.file
            .read_exact_at(&mut offsets, self.layout.offsets + 8 * i as u64)
            .map_err(io)?;
        let from = u64::from_le_bytes(offsets[..8].try_into().unwrap());
        let to = u64::from_le_bytes(offsets[8..].try_into().unwrap());
        if from > to || self.layout.texts + 4 * to > self.layout.end {
            return Err(DataError::CorruptCache {
                path: self.path.clone(),
                why: format!("caption offsets of sample {i} are inconsistent (the file changed since it was opened?)"),
            });
        }
        let mut ids = vec![0u8; 4 * (to - from) as usize];
        self.file
            .read_exact_at(&mut ids, self.layout.texts + 4 * from)
            .map_err(io)?;
        decode_codes(&ids, 4, text);
        Ok(())
    }
}

/// Code cache files read as one data set, in the order given.
#[derive(Debug)]
pub struct CodeShards {
    key: CacheKey,
    files: Vec<CodeFile>,
    /// Index of each file's first sample (and the total at the end).
    starts: Vec<usize>,
}

impl CodeShards {
    /// Opens every file of `paths` (each checked as [`CodeFile::open`] does).
    ///
    /// # Errors
    /// The first file that fails to open, named.
    pub fn open(paths: &[PathBuf], expected: &CacheKey) -> Result<Self, DataError> {
        let files = paths
            .iter()
            .map(|path| CodeFile::open(path, expected))
            .collect::<Result<Vec<_>, _>>()?;
        let mut starts = vec![0];
        for file in &files {
            starts.push(starts.last().unwrap() + file.len());
        }
        Ok(Self {
            key: expected.clone(),
            files,
            starts,
        })
    }
}

/// The code grids and captions LM training reads: a cache in memory, or cache files on disk.
#[derive(Debug)]
pub enum Codes {
    /// One cache, read whole into memory.
    Memory(CodeCache),
    /// Cache files read sample by sample.
    Files(CodeShards),
}

impl From<CodeCache> for Codes {
    fn from(cache: CodeCache) -> Self {
        Codes::Memory(cache)
    }
}

impl From<CodeShards> for Codes {
    fn from(shards: CodeShards) -> Self {
        Codes::Files(shards)
    }
}

impl Codes {
    /// What the codes were made with.
    pub fn key(&self) -> &CacheKey {
        match self {
            Codes::Memory(cache) => cache.key(),
            Codes::Files(shards) => &shards.key,
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Codes::Memory(cache) => cache.len(),
            Codes::Files(shards) => *shards.starts.last().expect("starts with 0"),
        }
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends sample `i`'s code grid to `codes` and its caption ids to `text`.
    ///
    /// # Panics
    /// When `i >= len()`.
    ///
    /// # Errors
    /// As [`CodeFile::read`] (never, in memory).
    pub fn read(&self, i: usize, codes: &mut Vec<u32>, text: &mut Vec<u32>) -> Result<(), DataError> {
        match self {
            Codes::Memory(cache) => {
                let (grid, ids) = cache.sample(i);
                codes.extend_from_slice(grid);
                text.extend_from_slice(ids);
                Ok(())
            }
            Codes::Files(shards) => {
                let file = shards.starts.partition_point(|&start| start <= i) - 1;
                shards.files[file].read(i - shards.starts[file], codes, text)
            }
        }
    }

    /// The longest caption, in ids (from the files' headers; read sample by sample from files written before
    /// headers recorded it).
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn longest_text(&self) -> Result<usize, DataError> {
        match self {
            Codes::Memory(cache) => Ok(cache.longest_text()),
            Codes::Files(shards) => {
                let mut longest = 0;
                for file in &shards.files {
                    longest = longest.max(match file.longest_text {
                        Some(n) => n,
                        None => {
                            let (mut codes, mut text) = (Vec::new(), Vec::new());
                            let mut n = 0;
                            for i in 0..file.len() {
                                text.clear();
                                codes.clear();
                                file.read(i, &mut codes, &mut text)?;
                                n = n.max(text.len());
                            }
                            n
                        }
                    });
                }
                Ok(longest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::fingerprint;

    fn key() -> CacheKey {
        CacheKey {
            tokenizer: fingerprint(b"t"),
            vq_model: fingerprint(b"v"),
            resolution: 48,
            grid: [3, 2],
        }
    }

    /// Three files, the codes of the last one too wide for 2 bytes.
    fn write_files(dir: &Path) -> (Vec<PathBuf>, CodeCache) {
        let mut all = CodeCache::new(key());
        let mut paths = Vec::new();
        for (f, samples) in [(0u32, 3u32), (1, 0), (2, 4)] {
            let mut cache = CodeCache::new(key());
            for s in 0..samples {
                let wide = if f == 2 { 70_000 } else { 0 };
                let grid: Vec<u32> = (0..6).map(|c| wide + 100 * f + 10 * s + c).collect();
                let text: Vec<u32> = (0..s).map(|t| t + f).collect();
                cache.push(&grid, &text).unwrap();
                all.push(&grid, &text).unwrap();
            }
            paths.push(dir.join(format!("{f}.bin")));
            cache.save(paths.last().unwrap()).unwrap();
        }
        (paths, all)
    }

    #[test]
    fn files_on_disk_read_like_the_cache_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, all) = write_files(dir.path());
        let files = Codes::from(CodeShards::open(&paths, &key()).unwrap());
        let memory = Codes::from(all);
        assert_eq!(files.len(), 7);
        for i in 0..7 {
            let (mut a, mut b) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
            files.read(i, &mut a.0, &mut a.1).unwrap();
            memory.read(i, &mut b.0, &mut b.1).unwrap();
            assert_eq!(a, b, "sample {i}");
        }
        assert_eq!(files.longest_text().unwrap(), 3);
        assert_eq!(memory.longest_text().unwrap(), 3);
        // Narrow codes are stored in 2 bytes: the first file is smaller per sample than the last.
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&paths[0]) < size(&paths[2]));
        assert_eq!(
            CodeCache::open(&paths[0], &key()).unwrap().sample(2).0,
            &[20, 21, 22, 23, 24, 25]
        );
    }

    #[test]
    fn a_damaged_or_stale_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = write_files(dir.path());
        let mut bytes = std::fs::read(&paths[2]).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&paths[2], &bytes).unwrap();
        let err = CodeShards::open(&paths, &key()).unwrap_err();
        assert!(
            matches!(&err, DataError::CorruptCache { path, .. } if path == &paths[2]),
            "{err}"
        );
        std::fs::write(&paths[2], &bytes[..bytes.len() - 5]).unwrap();
        assert!(matches!(
            CodeFile::open(&paths[2], &key()),
            Err(DataError::CorruptCache { .. })
        ));
        let stale = CacheKey {
            resolution: 64,
            ..key()
        };
        let err = CodeFile::open(&paths[0], &stale).unwrap_err();
        assert!(err.to_string().contains("resolution"), "{err}");
    }
}
