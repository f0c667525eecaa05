//! `cargo xtask bench code-cache`: the arguments and printing of `token_shuffle_eval::benches::code_cache`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use token_shuffle_eval::benches;

use crate::HEAP;

/// Arguments of `cargo xtask bench code-cache`.
#[derive(Args)]
pub struct CodeCacheBench {
    /// Data set sizes to build and read, in images (each run on its own, in this order).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    images: Vec<usize>,
    /// Side of each image's code grid (64: 1024 px at f = 16).
    #[arg(long, default_value_t = 64)]
    grid: usize,
    /// Codebook size the synthetic codes are drawn from (LlamaGen's VQ-16: 16,384, stored in 2 bytes).
    #[arg(long, default_value_t = 16_384)]
    codebook: u32,
    /// Images per shard file.
    #[arg(long, default_value_t = 10_000)]
    shard_images: usize,
    /// Training batches to read (random samples over the whole data set, as an epoch's order visits them).
    #[arg(long, default_value_t = 2_000)]
    batches: usize,
    /// Samples per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Where to write the shard files (deleted afterwards unless --keep). It needs ~8.2 GB per million 64×64 grids.
    #[arg(long, default_value = "runs/bench/code-cache")]
    dir: PathBuf,
    /// Keep the files.
    #[arg(long)]
    keep: bool,
    /// Empty the kernel's page cache before opening and again before reading (needs root: writes
    /// /proc/sys/vm/drop_caches), so that both read from the disk rather than from memory.
    #[arg(long)]
    drop_caches: bool,
}

impl CodeCacheBench {
    pub fn run(self) -> Result<()> {
        let bench = benches::CodeCacheBench {
            images: self.images,
            grid: self.grid,
            codebook: self.codebook,
            shard_images: self.shard_images,
            batches: self.batches,
            batch_size: self.batch_size,
            dir: self.dir,
            keep: self.keep,
            drop_caches: self.drop_caches,
        };
        let report = bench.run(&HEAP, |row| eprintln!("{}", row.row()))?;
        println!("{}", report.table);
        let out = PathBuf::from("runs/bench/code-cache.md");
        std::fs::create_dir_all("runs/bench")?;
        std::fs::write(&out, &report.table).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
        Ok(())
    }
}
