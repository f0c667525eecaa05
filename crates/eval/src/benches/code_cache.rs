//! `bench code-cache`: a synthetic code cache of up to a million images written as shard files and read as LM
//! training reads it, to show that the memory it needs does not grow with the data set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use token_shuffle_data::cache::{CacheKey, CodeCache, fingerprint};
use token_shuffle_data::codes::{CodeShards, Codes};
use token_shuffle_data::rng::SplitMix64;

use crate::EvalError;
use crate::error::io;
use crate::memory::PeakAlloc;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CodeCacheBench {
    /// Data set sizes to build and read, in images (each on its own, in this order).
    pub images: Vec<usize>,
    /// Side of each image's code grid.
    pub grid: usize,
    /// Codebook size the synthetic codes are drawn from.
    pub codebook: u32,
    /// Images per shard file.
    pub shard_images: usize,
    /// Training batches to read (random samples over the whole data set, as an epoch's order visits them).
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Where to write the shard files (one directory per size, which must not exist).
    pub dir: PathBuf,
    /// Keep the files afterwards.
    pub keep: bool,
    /// Empty the kernel's page cache before opening and before reading (needs root).
    pub drop_caches: bool,
}

/// One data set size, measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Images in the data set.
    pub images: usize,
    /// Shard files written.
    pub shards: usize,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Seconds to build them.
    pub build_s: f64,
    /// Peak heap while building, bytes.
    pub build_heap: usize,
    /// Seconds to open them (checksums included).
    pub open_s: f64,
    /// Milliseconds per training batch read.
    pub batch_ms: f64,
    /// Peak heap while opening and reading, bytes.
    pub read_heap: usize,
}

impl Measured {
    /// Its row of the Markdown table.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.2} GB | {:.1} s | {:.0} MiB | {:.1} s | {:.3} | {:.1} MiB |",
            self.images,
            self.shards,
            self.bytes as f64 / 1e9,
            self.build_s,
            mib(self.build_heap),
            self.open_s,
            self.batch_ms,
            mib(self.read_heap)
        )
    }
}

/// Every size, measured, and the table.
#[derive(Debug, Clone, Serialize)]
pub struct CodeCacheReport {
    /// In the order of [`CodeCacheBench::images`].
    pub rows: Vec<Measured>,
    /// The Markdown table with what was run.
    pub table: String,
}

impl CodeCacheBench {
    /// Builds and reads each size in turn; `heap` must be the program's global allocator. `on_row` sees each
    /// size's row as it is measured.
    ///
    /// # Errors
    /// [`EvalError::Config`] for a size of zero or an existing directory; I/O and cache errors.
    pub fn run<A>(&self, heap: &PeakAlloc<A>, mut on_row: impl FnMut(&Measured)) -> Result<CodeCacheReport, EvalError> {
        if self.images.is_empty() || self.grid == 0 || self.shard_images == 0 || self.batch_size == 0 {
            return Err(EvalError::Config(
                "--images, --grid, --shard-images and --batch-size must be positive".into(),
            ));
        }
        let key = CacheKey {
            tokenizer: fingerprint(b"synthetic text tokenizer"),
            vq_model: fingerprint(b"synthetic VQ"),
            resolution: (self.grid * 16) as u32,
            grid: [self.grid, self.grid],
        };
        let mut rows = Vec::new();
        for &images in &self.images {
            let dir = self.dir.join(format!("{images}"));
            if dir.exists() {
                return Err(EvalError::Config(format!(
                    "{} exists: remove it (the benchmark writes its own files there)",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let measured = self.measure(heap, &key, images, &dir);
            if !self.keep {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            let m = measured?;
            on_row(&m);
            rows.push(m);
        }
        let rss = peak_rss_kib().map_or("unknown".into(), |kib| format!("{:.0} MiB", kib as f64 / 1024.0));
        let mut table = format!(
            "| images | shard files | bytes on disk | build | peak heap, build | open (checksums) | read, ms / batch of {} | peak heap, read |\n|---|---|---|---|---|---|---|---|\n",
            self.batch_size
        );
        for m in &rows {
            table += &m.row();
            table.push('\n');
        }
        table += &format!(
            "\n{}×{} codes of a {}-code book ({} bytes each), {} images per shard file, {} random batches, page \
             cache {}; peak RSS of the whole process: {rss}.\n",
            self.grid,
            self.grid,
            self.codebook,
            if self.codebook <= 65_536 { 2 } else { 4 },
            self.shard_images,
            self.batches,
            if self.drop_caches {
                "emptied before opening and before reading (cold reads from disk)"
            } else {
                "as the build left it (warm where the files fit in memory)"
            }
        );
        Ok(CodeCacheReport { rows, table })
    }

    fn measure<A>(
        &self,
        heap: &PeakAlloc<A>,
        key: &CacheKey,
        images: usize,
        dir: &Path,
    ) -> Result<Measured, EvalError> {
        let cells = self.grid * self.grid;
        let shards = images.div_ceil(self.shard_images);
        let mut paths = Vec::with_capacity(shards);
        let started = Instant::now();
        let (built, build_heap) = heap.peak_during(|| -> Result<(), EvalError> {
            let mut grid = vec![0u32; cells];
            for shard in 0..shards {
                let mut rng = SplitMix64::new(images as u64, shard as u64);
                let mut cache = CodeCache::new(key.clone());
                let count = self.shard_images.min(images - shard * self.shard_images);
                for _ in 0..count {
                    grid.iter_mut()
                        .for_each(|c| *c = rng.below(self.codebook as usize) as u32);
                    let caption: Vec<u32> = (0..8 + rng.below(24)).map(|_| rng.below(4096) as u32).collect();
                    cache.push(&grid, &caption)?;
                }
                let path = dir.join(format!("{shard:05}.bin"));
                cache.save(&path)?;
                paths.push(path);
            }
            Ok(())
        });
        built?;
        let build_s = started.elapsed().as_secs_f64();
        let bytes = paths
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()))
            .sum::<std::io::Result<u64>>()
            .map_err(io(dir))?;

        // The heap held while reading, above what was held before: the open files' state and one batch.
        self.drop_page_cache()?;
        let started = Instant::now();
        let (read, read_heap) = heap.peak_during(|| -> Result<(f64, f64), EvalError> {
            let codes = Codes::from(CodeShards::open(&paths, key)?);
            let open_s = started.elapsed().as_secs_f64();
            self.drop_page_cache()?;
            let mut rng = SplitMix64::new(7, images as u64);
            let (mut grids, mut texts) = (Vec::new(), Vec::new());
            let reading = Instant::now();
            for _ in 0..self.batches {
                grids.clear();
                texts.clear();
                for _ in 0..self.batch_size {
                    codes.read(rng.below(codes.len()), &mut grids, &mut texts)?;
                }
            }
            Ok((open_s, reading.elapsed().as_secs_f64()))
        });
        let (open_s, batch_s) = read?;
        Ok(Measured {
            images,
            shards,
            bytes,
            build_s,
            build_heap,
            open_s,
            batch_ms: 1e3 * batch_s / self.batches.max(1) as f64,
            read_heap,
        })
    }
}

impl CodeCacheBench {
    /// With --drop-caches, writes back dirty pages and empties the page cache.
    fn drop_page_cache(&self) -> Result<(), EvalError> {
        if self.drop_caches {
            let synced = std::process::Command::new("sync").status();
            if !synced.is_ok_and(|s| s.success()) {
                return Err(EvalError::Config("--drop-caches: `sync` failed".into()));
            }
            std::fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| {
                EvalError::Config(format!(
                    "--drop-caches needs root (it writes /proc/sys/vm/drop_caches: {e}); run without it"
                ))
            })?;
        }
        Ok(())
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The process's peak resident set (VmHWM), in KiB, where /proc has it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
