//! The code cache: per sample, its VQ code grid and its caption's token ids, written once by the tokenize step
//! and read by LM training in one read.
//!
//! A cache is only valid for the tokenizer, the VQ model and the resolution it was made with, so its header
//! records their fingerprints and [`CodeCache::open`] refuses a cache made with anything else. It is written to a
//! temporary file and renamed into place, and ends with a checksum of everything before it, so a killed write
//! or a truncated copy never passes for a valid cache.
//!
//! ```
//! use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
//!
//! let dir = std::env::temp_dir().join(format!("cache-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let key = CacheKey {
//!     tokenizer: fingerprint(b"tokenizer.json bytes"),
//!     vq_model: fingerprint(b"vq weights bytes"),
//!     resolution: 64,
//!     grid: [8, 8],
//! };
//! let mut cache = CodeCache::new(key.clone());
//! cache.push(&[7; 64], &[1, 2, 3])?;
//! cache.save(&dir.join("codes.bin"))?;
//! let back = CodeCache::open(&dir.join("codes.bin"), &key)?;
//! assert_eq!(back.sample(0), (&[7u32; 64][..], &[1u32, 2, 3][..]));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::DataError;

pub(crate) const MAGIC: &[u8; 8] = b"TSRCODE1";
pub(crate) const CHECKSUM_LEN: usize = 32;

/// A content fingerprint (BLAKE3, hex) of a tokenizer file, model weights, or any bytes.
pub fn fingerprint(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// [`fingerprint`] of a file's bytes, read through a small buffer (a code cache can be gigabytes).
///
/// # Errors
/// When the file cannot be read.
pub fn fingerprint_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path)?)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// What a cache was made with; a cache is valid only for the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// Fingerprint of the text tokenizer (its `tokenizer.json`).
    pub tokenizer: String,
    /// Fingerprint of the VQ model's weights.
    pub vq_model: String,
    /// Image resolution in pixels.
    pub resolution: u32,
    /// Code grid `[H', W']` per image.
    pub grid: [usize; 2],
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) key: CacheKey,
    pub(crate) samples: usize,
    pub(crate) text_ids: usize,
    /// Bytes per stored code: 2 when every code is below 65,536 (any codebook up to that size: 8 GB for a million
    /// 64×64 grids), else 4. Files written before this field store 4.
    #[serde(default = "four_bytes")]
    pub(crate) code_bytes: usize,
    /// The longest caption, in ids (absent in older files).
    #[serde(default)]
    pub(crate) longest_text: Option<usize>,
}

fn four_bytes() -> usize {
    4
}

impl Header {
    /// Where each part of the body starts (from the start of the file), and where the body ends.
    pub(crate) fn layout(&self, header_len: usize) -> Layout {
        let cells = self.key.grid[0] * self.key.grid[1];
        let codes = (16 + header_len) as u64;
        let offsets = codes + (self.code_bytes * self.samples * cells) as u64;
        let texts = offsets + 8 * (self.samples as u64 + 1);
        Layout {
            codes,
            offsets,
            texts,
            end: texts + 4 * self.text_ids as u64,
        }
    }
}

/// Byte positions of a cache file's parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) codes: u64,
    pub(crate) offsets: u64,
    pub(crate) texts: u64,
    pub(crate) end: u64,
}

/// Little-endian codes of `width` bytes each.
pub(crate) fn decode_codes(bytes: &[u8], width: usize, out: &mut Vec<u32>) {
    match width {
        2 => out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
        _ => out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()))),
    }
}

/// Code grids and caption ids of a dataset, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeCache {
    key: CacheKey,
    codes: Vec<u32>,
    text_offsets: Vec<usize>,
    text_ids: Vec<u32>,
}

impl CodeCache {
    /// An empty cache for `key`.
    pub fn new(key: CacheKey) -> Self {
        Self {
            key,
            codes: Vec::new(),
            text_offsets: vec![0],
            text_ids: Vec::new(),
        }
    }

    /// The key the cache was made with.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.text_offsets.len() - 1
    }

    /// Whether the cache holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a sample: its code grid (row-major, `H'·W'` codes) and its caption's token ids.
    ///
    /// # Errors
    /// [`DataError::CodeGrid`] when the grid does not have `H'·W'` codes.
    pub fn push(&mut self, codes: &[u32], text_ids: &[u32]) -> Result<(), DataError> {
        let expected = self.key.grid[0] * self.key.grid[1];
        if codes.len() != expected {
            return Err(DataError::CodeGrid {
                got: codes.len(),
                grid: self.key.grid,
            });
        }
        self.codes.extend_from_slice(codes);
        self.text_ids.extend_from_slice(text_ids);
        self.text_offsets.push(self.text_ids.len());
        Ok(())
    }

    /// Sample `i`: its code grid and its caption ids. Panics when `i >= len()`.
    pub fn sample(&self, i: usize) -> (&[u32], &[u32]) {
        let n = self.key.grid[0] * self.key.grid[1];
        (
            &self.codes[i * n..(i + 1) * n],
            &self.text_ids[self.text_offsets[i]..self.text_offsets[i + 1]],
        )
    }

    /// The longest caption, in ids.
    pub fn longest_text(&self) -> usize {
        self.text_offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
    }

    /// Writes the cache atomically: to a temporary file beside `path`, synced, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let code_bytes = if self.codes.iter().all(|&c| c <= u16::MAX as u32) {
            2
        } else {
            4
        };
        let header = serde_json::to_vec(&Header {
            key: self.key.clone(),
            samples: self.len(),
            text_ids: self.text_ids.len(),
            code_bytes,
            longest_text: Some(self.longest_text()),
        })
        .expect("the header serialises");
        let mut bytes = Vec::with_capacity(
            16 + header.len() + code_bytes * self.codes.len() + 4 * self.text_ids.len() + 8 * self.text_offsets.len(),
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        if code_bytes == 2 {
            bytes.extend(self.codes.iter().flat_map(|&c| (c as u16).to_le_bytes()));
        } else {
            bytes.extend(self.codes.iter().flat_map(|c| c.to_le_bytes()));
        }
        bytes.extend(self.text_offsets.iter().flat_map(|o| (*o as u64).to_le_bytes()));
        bytes.extend(self.text_ids.iter().flat_map(|t| t.to_le_bytes()));
        let checksum = blake3::hash(&bytes);
        bytes.extend_from_slice(checksum.as_bytes());

        crate::write_atomically(path, &bytes)
    }

    /// Reads a cache in one read and checks that it is whole and was made with `expected`.
    ///
    /// # Errors
    /// [`DataError::CorruptCache`] for a truncated, altered or foreign file; [`DataError::StaleCache`] when it
    /// was made with another tokenizer, VQ model, resolution or grid (it names which).
    pub fn open(path: &Path, expected: &CacheKey) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = |why: &str| DataError::CorruptCache {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        if bytes.len() < MAGIC.len() + 8 + CHECKSUM_LEN || &bytes[..8] != MAGIC {
            return Err(corrupt("not a code cache (bad magic or too short)"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes() != checksum {
            return Err(corrupt("checksum mismatch: the file is truncated or was altered"));
        }
        let header_len = u64::from_le_bytes(body[8..16].try_into().unwrap()) as usize;
        let header: Header = body
            .get(16..16 + header_len)
            .and_then(|h| serde_json::from_slice(h).ok())
            .ok_or_else(|| corrupt("unreadable header"))?;
        check_key(path, &header.key, expected)?;

        let layout = header.layout(header_len);
        if layout.end != body.len() as u64 || !matches!(header.code_bytes, 2 | 4) {
            return Err(corrupt("body length does not match the header"));
        }
        let part = |from: u64, to: u64| &body[from as usize..to as usize];
        let mut codes = Vec::new();
        decode_codes(part(layout.codes, layout.offsets), header.code_bytes, &mut codes);
        let text_offsets: Vec<usize> = part(layout.offsets, layout.texts)
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect();
        let mut text_ids = Vec::new();
        decode_codes(part(layout.texts, layout.end), 4, &mut text_ids);
        if text_offsets.windows(2).any(|w| w[0] > w[1]) || text_offsets.last() != Some(&text_ids.len()) {
            return Err(corrupt("caption offsets are inconsistent"));
        }
        Ok(Self {
            key: header.key,
            codes,
            text_offsets,
            text_ids,
        })
    }
}

pub(crate) fn check_key(path: &Path, cached: &CacheKey, expected: &CacheKey) -> Result<(), DataError> {
    let fields = [
        (
            "tokenizer fingerprint",
            cached.tokenizer.clone(),
            expected.tokenizer.clone(),
        ),
        (
            "VQ model fingerprint",
            cached.vq_model.clone(),
            expected.vq_model.clone(),
        ),
        (
            "resolution",
            cached.resolution.to_string(),
            expected.resolution.to_string(),
        ),
        (
            "code grid",
            format!("{:?}", cached.grid),
            format!("{:?}", expected.grid),
        ),
    ];
    match fields.into_iter().find(|(_, a, b)| a != b) {
        Some((field, cached, expected)) => Err(DataError::StaleCache {
            path: path.to_path_buf(),
            field,
            cached,
            expected,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn key() -> CacheKey {
        CacheKey {
            tokenizer: fingerprint(b"tok"),
            vq_model: fingerprint(b"vq"),
            resolution: 64,
            grid: [2, 3],
        }
    }

    fn sample_cache() -> CodeCache {
        let mut cache = CodeCache::new(key());
        cache.push(&[0, 1, 2, 3, 4, 8191], &[5, 6]).unwrap();
        cache.push(&[9; 6], &[]).unwrap();
        cache.push(&[1, 1, 2, 2, 3, 3], &[7, 8, 9, 10]).unwrap();
        cache
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("data-cache-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = temp_dir("round-trip");
        let cache = sample_cache();
        cache.save(&dir.join("c.bin")).unwrap();
        let back = CodeCache::open(&dir.join("c.bin"), &key()).unwrap();
        assert_eq!(back, cache);
        assert_eq!(back.sample(1), (&[9u32; 6][..], &[][..]));
        assert_eq!(back.sample(2).1, &[7, 8, 9, 10]);
        assert!(
            std::fs::read_dir(&dir).unwrap().count() == 1,
            "no temporary file left behind"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn stale_cache_is_refused_naming_the_field() {
        let dir = temp_dir("stale");
        sample_cache().save(&dir.join("c.bin")).unwrap();
        let other_tokenizer = CacheKey {
            tokenizer: fingerprint(b"other"),
            ..key()
        };
        let err = CodeCache::open(&dir.join("c.bin"), &other_tokenizer).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::StaleCache {
                    field: "tokenizer fingerprint",
                    ..
                }
            ),
            "{err}"
        );
        let other_resolution = CacheKey {
            resolution: 128,
            ..key()
        };
        let err = CodeCache::open(&dir.join("c.bin"), &other_resolution).unwrap_err();
        assert!(err.to_string().contains("resolution"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_or_altered_files_are_refused() {
        let dir = temp_dir("truncated");
        let path = dir.join("c.bin");
        sample_cache().save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [bytes.len() - 1, bytes.len() / 2, 10] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = CodeCache::open(&path, &key()).unwrap_err();
            assert!(matches!(err, DataError::CorruptCache { .. }), "cut at {cut}: {err}");
        }
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(matches!(
            CodeCache::open(&path, &key()),
            Err(DataError::CorruptCache { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_grid_size_is_refused() {
        let err = CodeCache::new(key()).push(&[1, 2, 3], &[]).unwrap_err();
        assert!(matches!(err, DataError::CodeGrid { got: 3, grid: [2, 3] }));
    }
}
