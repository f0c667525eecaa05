//! The newcomer's demo report (`cargo xtask demo`): samples from validation and held-out captions, the loss
//! curves, the held-out benchmark, and what each step reached, from a finished run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use image::RgbImage;
use token_shuffle_data::scenes::{Category, SceneCorpus, Split};
use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
use token_shuffle_train::{ReconstructionReport, TrainedRun};

use crate::error::io;
use crate::report::{loss_curves, read_metric};
use crate::run::{EvalOptions, RunEvaluation, evaluate_run};
use crate::{CompositionalBenchmark, DetectorConfig, EvalError};

/// The demo's figures and report.
pub struct DemoReport {
    /// 8 images from validation captions over 8 from held-out ones.
    pub samples: RgbImage,
    /// The run's loss curves.
    pub loss: RgbImage,
    /// The held-out benchmark (its `samples`: the first image of each prompt).
    pub evaluation: RunEvaluation,
    /// `report.md`.
    pub markdown: String,
}

/// How the demo samples: CFG 3 with the half-linear schedule, sampling seed 1.
fn demo_sampling() -> GenerateOptions {
    GenerateOptions {
        cfg_scale: 3.0,
        schedule: CfgSchedule::HalfLinear,
        sampler: Sampler::default(),
        seed: 1,
    }
}

/// The demo report of the finished run in `dir`, whose pipeline started at `started` (the report's time counts
/// to its end). `on_phase` names each phase as it starts.
///
/// # Errors
/// Loading the run, generation, the benchmark, and a missing or unreadable `tokenizer/done.json`.
pub fn demo_report<B: Backend>(
    dir: &Path,
    started: Instant,
    device: &B::Device,
    mut on_phase: impl FnMut(&str),
) -> Result<DemoReport, EvalError> {
    let run = TrainedRun::<B>::load(dir, device)?;
    // Captions of validation scenes (never trained on) and of the held-out set (combinations never seen).
    let prompts: Vec<String> = [Split::Valid, Split::HeldOut]
        .into_iter()
        .flat_map(|split| {
            SceneCorpus::new(7, split, 8)
                .scenes()
                .map(|s| s.caption)
                .collect::<Vec<_>>()
        })
        .collect();
    on_phase("generating the samples");
    let generated = Instant::now();
    let samples = run.generate(&prompts, &demo_sampling(), 8, device, &mut |_, _| {})?;
    let generation_s = generated.elapsed().as_secs_f32();
    let loss = loss_curves(dir).map_err(|e| EvalError::Config(format!("drawing the loss curves: {e}")))?;
    let size = CompositionalBenchmark::default();
    on_phase(&format!(
        "benchmark: generating and judging {} images of held-out prompts",
        size.prompts_per_category * size.images_per_prompt * Category::ALL.len()
    ));
    let options = EvalOptions {
        benchmark: size,
        generate: demo_sampling(),
        batch_size: 16,
        reconstruction_images: 0,
        detector: DetectorConfig::default(),
    };
    let evaluation = evaluate_run(&run, &options, device, |_, _, _| {})?;
    let done = dir.join("tokenizer/done.json");
    let bytes = std::fs::read(&done).map_err(io(&done))?;
    let tokenizer: ReconstructionReport = serde_json::from_slice(&bytes)
        .map_err(|e| EvalError::Config(format!("{}: not a tokenizer report ({e})", done.display())))?;
    let lm_valid = read_metric(&dir.join("lm/metrics.jsonl"), "valid", "image_ce");
    let (first, last) = (
        lm_valid.first().map_or(f64::NAN, |v| v.1),
        lm_valid.last().map_or(f64::NAN, |v| v.1),
    );

    let minutes = started.elapsed().as_secs_f32() / 60.0;
    let mut markdown = String::from("# Demo run\n\n");
    markdown += &format!(
        "Everything ran on the CPU (Flex backend) in {minutes:.1} min (steps already done in an earlier run are \
         skipped, so a rerun is faster).\n\n"
    );
    markdown += &format!(
        "- Tokenizer ({} steps): validation {} — `tokenizer/reconstructions.png` shows originals over \
         reconstructions.\n",
        run.config.tokenizer.steps,
        tokenizer.summary()
    );
    markdown += &format!(
        "- LM ({} steps, s = {}): validation image cross-entropy {first:.3} → {last:.3} nats per code (uniform over \
         {} codes: {:.3}).\n",
        run.config.lm.total_steps(),
        run.lm.window(),
        run.config.lm.model.codebook,
        (run.config.lm.model.codebook as f64).ln()
    );
    markdown += &format!(
        "- `samples.png`: {} images generated in {generation_s:.1} s (CFG 3.0, half-linear, seed 1); row 1 from \
         validation captions, row 2 from held-out ones:\n\n",
        prompts.len()
    );
    for (i, prompt) in prompts.iter().enumerate() {
        markdown += &format!("  {}. {prompt}\n", i + 1);
    }
    markdown += "\n- `loss.png`: the tokenizer's pixel loss, the LM's image cross-entropy (training and validation, \
                 log scale) and the benchmark score on validation-seed prompts over LM training.\n\n";
    markdown += &evaluation.markdown("demo");
    markdown += "\n`benchmark.png`: the first image of each benchmark prompt, one column per category in the table's \
                 order. `cargo xtask eval --run runs/demo` reruns the benchmark with other settings.\n";
    Ok(DemoReport {
        samples,
        loss,
        evaluation,
        markdown,
    })
}

impl DemoReport {
    /// Writes `samples.png`, `loss.png`, `benchmark.png` and `report.md` into the run directory `dir`; returns
    /// their paths.
    ///
    /// # Errors
    /// [`EvalError::Io`] or an image error naming the file.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
        let files = ["samples.png", "loss.png", "benchmark.png", "report.md"].map(|name| dir.join(name));
        token_shuffle_data::save_png(&self.samples, &files[0])?;
        token_shuffle_data::save_png(&self.loss, &files[1])?;
        token_shuffle_data::save_png(&self.evaluation.samples, &files[2])?;
        std::fs::write(&files[3], &self.markdown).map_err(io(&files[3]))?;
        Ok(files.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use token_shuffle_test_support::TestBackend;
    use token_shuffle_train::{RunConfig, run_pipeline};

    #[test]
    fn the_demo_report_of_a_finished_run_names_each_step_and_writes_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        run_pipeline::<Autodiff<TestBackend>>(&RunConfig::tiny(), dir.path(), &device, |_| {}).unwrap();
        let mut phases = Vec::new();
        let report =
            demo_report::<TestBackend>(dir.path(), Instant::now(), &device, |p| phases.push(p.to_string())).unwrap();
        assert_eq!(phases.len(), 2, "{phases:?}");
        let markdown = &report.markdown;
        assert!(
            markdown.contains("(Flex backend) in 0.") && markdown.contains("- Tokenizer (2 steps)"),
            "{markdown}"
        );
        assert!(
            markdown.contains("16 images generated") && markdown.contains("  16. "),
            "{markdown}"
        );
        // 16 prompts in 8 columns: two rows of square images.
        assert_eq!(report.samples.width(), 4 * report.samples.height());
        let files = report.save(dir.path()).unwrap();
        assert!(files.iter().all(|f| f.is_file()), "{files:?}");
    }

    #[test]
    fn a_run_without_its_tokenizer_report_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        run_pipeline::<Autodiff<TestBackend>>(&RunConfig::tiny(), dir.path(), &device, |_| {}).unwrap();
        std::fs::write(dir.path().join("tokenizer/done.json"), b"{").unwrap();
        let error = demo_report::<TestBackend>(dir.path(), Instant::now(), &device, |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("done.json"), "{error}");
    }
}
