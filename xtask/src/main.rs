//! `cargo xtask`: the project's command line. It parses arguments and calls library functions; nothing else.

mod backend;
mod bench;
mod cache_bench;
mod count;
mod dashboard;
mod evaluation;
mod highres;
mod run;
mod train_tokenizer;

use anyhow::Result;
use clap::{Parser, Subcommand};

use backend::{BackendKind, BackendTask, run_on};

/// mimalloc, counting heap bytes so that `cargo xtask bench` can report peak memory on CPU backends.
///
/// mimalloc rather than the system allocator: Flex allocates a fresh buffer for most tensor ops, and glibc's malloc
/// returns large blocks to the kernel on free (mmap/munmap), so every step page-faults its memory in again; with
/// mimalloc a training step of lm-tiny at s = 2 took ~25% less time (docs/BENCHMARKS.md).
#[global_allocator]
pub static HEAP: token_shuffle_eval::memory::PeakAlloc<mimalloc::MiMalloc> =
    token_shuffle_eval::memory::PeakAlloc::wrapping(mimalloc::MiMalloc);

/// token-shuffle-rs: Token-Shuffle for autoregressive image generation, in Rust on burn.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the backends compiled into this binary and check that each one finds a device.
    Backends,
    /// Run a benchmark and print ratios measured side by side in one run (default: the LM at s = 1, 2, 4).
    Bench(bench::BenchCommand),
    /// Train and evaluate variants of the LM (window, fusion, MLP blocks) alike; table and loss plot.
    Ablate(evaluation::Ablate),
    /// The benchmark of a run under each CFG schedule and scale: one table, a curve per schedule, one picture.
    Cfg(evaluation::CfgSweep),
    /// Check the benchmark's detector on ground-truth renders, wrong captions and noise (pass rates per category).
    CalibrateDetector(evaluation::CalibrateDetector),
    /// Count an LM preset's parameters, sequence length and FLOPs per image (analytically; nothing is built).
    Count(count::Count),
    /// Run the demo: train a tiny tokenizer and LM on synthetic scenes on the CPU, generate samples, write a report.
    Demo(run::Demo),
    /// Encode a run's webdataset shards into per-shard code caches, a slice of them per process (`--shard K/N`), or
    /// check them all (`--merge`).
    Encode(run::Encode),
    /// Evaluate a trained run: the compositional benchmark on generated images, the tokenizer on held-out images.
    Eval(evaluation::Eval),
    /// Run a whole training pipeline: tokenizer, text tokenizer, code caches, LM (finished steps are skipped).
    Train(run::Train),
    /// Generate images from a trained run.
    Generate(run::Generate),
    /// Train a VQ tokenizer (e.g. `--config configs/vq-tiny.json --data scenes`).
    TrainTokenizer(train_tokenizer::TrainTokenizer),
}

/// mimalloc's `mi_option_purge_delay` (mimalloc v3's `mimalloc.h`: the 16th entry of `mi_option_e`; the test
/// below checks the index against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep the memory it has been given instead of handing freed pages back to the OS (unless
/// `MIMALLOC_PURGE_DELAY` says otherwise). A training step frees and reallocates the same large tensors every
/// step; purged, they come back as fresh pages the kernel faults in and zeroes. Never purging made lm-tiny's s = 1
/// training step ~13% faster for ~3.5% more peak RSS (docs/BENCHMARKS.md).
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option's value, which mimalloc reads at its next purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> Result<()> {
    keep_freed_pages();
    match Cli::parse().command {
        Command::Backends => list_backends(),
        Command::Bench(bench) => bench.run(),
        Command::Count(count) => count.run(),
        Command::Eval(command) => command.run(),
        Command::Encode(command) => command.run(),
        Command::CalibrateDetector(command) => command.run(),
        Command::Ablate(command) => command.run(),
        Command::Cfg(command) => command.run(),
        Command::TrainTokenizer(command) => command.run(),
        Command::Demo(command) => command.run(),
        Command::Train(command) => command.run(),
        Command::Generate(command) => command.run(),
    }
}

fn list_backends() -> Result<()> {
    struct Probe;
    impl BackendTask for Probe {
        type Output = String;
        fn run<B: burn::tensor::backend::Backend>(self, _: BackendKind, device: B::Device) -> Result<String> {
            Ok(format!("{device:?}"))
        }
    }
    for kind in BackendKind::ALL {
        let status = if kind.compiled_in() {
            match run_on(kind, Probe) {
                Ok(device) => format!("ready, device {device}"),
                Err(err) => format!("compiled in, unusable: {err}"),
            }
        } else {
            format!("not compiled in (cargo feature `{}`)", kind.feature())
        };
        println!("{:<9} {status}", kind.name());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads one option's value.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                get(),
                1000,
                "mimalloc v3's default purge delay, in ms: is index 15 still purge_delay?"
            );
            keep_freed_pages();
            assert_eq!(get(), -1);
        }
    }
}
