//! `cargo xtask`: the project's command line. It parses arguments and calls library functions; nothing else.

mod backend;
mod bench;
mod cache_bench;
mod count;
mod dashboard;
mod evaluation;
mod export_hf;
mod hf_check;
mod highres;
mod pretrain_text;
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
    /// Write a trained run's LM as a HuggingFace checkpoint (config.json, model.safetensors, tokenizer.json).
    ExportHf(export_hf::ExportHf),
    /// Load a HuggingFace checkpoint (Llama, Qwen2, Mistral) as the LM's initialisation; with `--reference`,
    /// compare its logits with the reference implementation's.
    HfCheck(hf_check::HfCheck),
    /// Pretrain a text LM on the scene grammar's training captions and write it as a HuggingFace checkpoint, for a
    /// run to start from (`lm.init`).
    PretrainText(pretrain_text::PretrainText),
    /// Run a whole training pipeline: tokenizer, text tokenizer, code caches, LM (finished steps are skipped).
    Train(run::Train),
    /// Generate images from a trained run.
    Generate(run::Generate),
    /// Train a VQ tokenizer (e.g. `--config configs/vq-tiny.json --data scenes`).
    TrainTokenizer(train_tokenizer::TrainTokenizer),
}

fn main() -> Result<()> {
    report_interrupts();
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
        Command::ExportHf(command) => command.run(),
        Command::HfCheck(command) => command.run(),
        Command::PretrainText(command) => command.run(),
        Command::Train(command) => command.run(),
        Command::Generate(command) => command.run(),
    }
}

/// On Ctrl-C (SIGINT) or SIGTERM: says what happened and how to go on, then exits as the signal would have
/// (130 / 143). Nothing needs cleaning up first: every file of a run is written under a temporary name and renamed
/// whole, and a run's lock goes with its process.
fn report_interrupts() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return; // Without a handler the signal ends the process as before, only without the message.
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!(
                "\ninterrupted ({name}); nothing half-written is left: run the same command again to go on (training \
                 resumes from its last checkpoint)"
            );
            std::process::exit(128 + signal);
        }
    });
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
