//! The ablation runner: the paper's Figures 8–10, rerunnable. Each variant of the Token-Shuffle LM (window s,
//! fusion, MLP blocks) is trained on the same data with the same budget, evaluated with the compositional
//! benchmark, and compared in one table and one loss plot.
//!
//! Every variant is a complete run directory (`<dir>/<variant>/`, loadable by `train::TrainedRun` and
//! `cargo xtask generate`). The tokenizer, the text tokenizer and the code caches do not depend on the variant:
//! they are made once, in the first variant's directory, and copied into the others, whose pipelines then skip
//! those steps. A rerun skips whatever is finished, and an interrupted LM resumes from its checkpoint.

use std::path::Path;

use crate::report::{BarGroup, PALETTE, PALETTE_NAMES, Panel, Series, bar_chart, line_chart, read_metric};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::Serialize;
use token_shuffle::Fusion;
use token_shuffle_data::scenes::Category;
use token_shuffle_train::{PipelineEvent, ReconstructionReport, RunConfig, TrainedRun, run_pipeline_probed};

use crate::EvalError;
use crate::error::io;
use crate::run::{EvalOptions, RunEvaluation, evaluate_run};
use crate::speed::SpeedBench;

/// One variant of the LM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Variant {
    /// Window s of every stage.
    pub window: usize,
    /// How a window is fused.
    pub fusion: Fusion,
    /// Residual MLP blocks on each side (unused by [`Fusion::Linear`] and by s = 1).
    pub mlp_blocks: usize,
}

impl Variant {
    /// A short name, also the variant's directory: `s1`, `s2-mlp2`, `s2-linear`, `s4-last-token2`.
    pub fn name(&self) -> String {
        match (self.window, self.fusion) {
            (1, _) => "s1".into(),
            (s, fusion) if fusion.uses_mlp_blocks() => format!("s{s}-{}{}", fusion.name(), self.mlp_blocks),
            (s, fusion) => format!("s{s}-{}", fusion.name()),
        }
    }

    /// `base` with this variant's LM: the window of every stage, the fusion and the MLP blocks.
    pub fn apply(&self, base: &RunConfig) -> RunConfig {
        let mut config = base.clone();
        config.lm.model.fusion = self.fusion;
        config.lm.model.shuffle_mlp_blocks = self.mlp_blocks;
        for stage in &mut config.lm.stages {
            stage.window = self.window;
        }
        config
    }
}

/// Every combination of the options, without duplicates: s = 1 has no fusion (one variant), and linear fusion
/// has no MLP blocks (one variant per window).
pub fn variants(windows: &[usize], fusions: &[Fusion], mlp_blocks: &[usize]) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    for &window in windows {
        for &fusion in fusions {
            for &blocks in mlp_blocks {
                let variant = match (window, fusion) {
                    (1, _) => Variant {
                        window,
                        fusion: Fusion::ResidualMlp,
                        mlp_blocks: 0,
                    },
                    (_, fusion) if !fusion.uses_mlp_blocks() => Variant {
                        window,
                        fusion,
                        mlp_blocks: 0,
                    },
                    _ => Variant {
                        window,
                        fusion,
                        mlp_blocks: blocks,
                    },
                };
                if !out.contains(&variant) {
                    out.push(variant);
                }
            }
        }
    }
    out
}

/// How much LM training each variant gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum LmBudget {
    /// The base config's steps for every variant: equal steps, so s = 4 sees as many images as s = 1 in a
    /// fraction of its time.
    Steps,
    /// The same training wall-clock time for every variant, in minutes: each variant's steps are these minutes
    /// divided by its own training step time, measured on the device right before it trains (the paper's
    /// question: which s is better at equal compute?). Once a variant's LM has started, its steps are the ones
    /// in its `run.json`, so a rerun resumes instead of measuring again.
    Minutes(f64),
}

impl LmBudget {
    /// `config` with its LM steps set by this budget. For [`LmBudget::Minutes`], a variant whose LM has started
    /// (`lm/` exists) keeps the steps of its `run.json`; otherwise its step time is measured with the [`SpeedBench`] (random codes at its
    /// grid, captions of 16 ids, one warm-up and five timed steps, median), and each stage gets its share of the
    /// budget in proportion to its steps in `config`.
    ///
    /// # Errors
    /// [`EvalError::Config`] for a budget that is not a positive finite number of minutes; errors of the bench.
    pub fn apply<B: AutodiffBackend>(
        &self,
        config: RunConfig,
        run_dir: &Path,
        device: &B::Device,
    ) -> Result<(RunConfig, Option<f64>), EvalError> {
        let LmBudget::Minutes(minutes) = *self else {
            return Ok((config, None));
        };
        if !(minutes.is_finite() && minutes > 0.0) {
            return Err(EvalError::Config(format!(
                "--minutes {minutes} must be a positive number of minutes"
            )));
        }
        let mut config = config;
        // A variant whose LM has started keeps the steps it started with (its checkpoints belong to them).
        if run_dir.join("lm").exists()
            && let Ok(saved) = RunConfig::load_file(&run_dir.join("run.json"))
        {
            for (stage, saved) in config.lm.stages.iter_mut().zip(&saved.lm.stages) {
                stage.steps = saved.steps;
            }
            return Ok((config, None));
        }
        let downsample = config.tokenizer.model.downsample_factor();
        let total_steps = config.lm.total_steps().max(1) as f64;
        let micro_batches = config.lm.gradient_accumulation.max(1) as f64;
        let mut step_ms_mean = 0.0;
        for stage in &mut config.lm.stages {
            let bench = SpeedBench {
                lm: config.lm.model.clone(),
                grid: stage.resolution / downsample,
                windows: vec![stage.window],
                batch_size: config.lm.batch_size,
                text_len: 16.min(config.lm.model.max_text_len),
                warmup: 1,
                repeats: 5,
            };
            let report = bench.run::<B, std::alloc::System>("budget", device, None, |_, _| {})?;
            let step_ms = report.rows[0].train_step_ms * micro_batches;
            let share = stage.steps as f64 / total_steps;
            step_ms_mean += share * step_ms;
            stage.steps = ((minutes * 60e3 * share / step_ms).floor() as usize).max(1);
        }
        Ok((config, Some(step_ms_mean)))
    }
}

/// What the runner reports as it goes.
#[derive(Debug, Clone)]
pub enum AblationEvent {
    /// A variant begins.
    Variant {
        /// Its index (from 0).
        index: usize,
        /// Variants in all.
        total: usize,
        /// Its name (`s2-mlp2`).
        name: String,
    },
    /// Its LM steps were set from its measured step time (see [`LmBudget::Minutes`]).
    Budget {
        /// Measured training step time, ms (mean over stages, weighted by their steps).
        step_ms: f64,
        /// LM steps it gets in all.
        steps: usize,
    },
    /// Its training pipeline.
    Pipeline(PipelineEvent),
    /// Its evaluation.
    Eval {
        /// What is in progress.
        what: String,
        /// Items done.
        done: usize,
        /// Items in all.
        total: usize,
    },
}

/// One variant, trained and evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct VariantResult {
    /// The variant.
    pub variant: Variant,
    /// Its name (and directory).
    pub name: String,
    /// Trainable parameters of its LM.
    pub parameters: usize,
    /// Image cross-entropy of the last logged training step (nats per code).
    pub final_train_ce: f64,
    /// Image cross-entropy on the validation codes at the end.
    pub final_valid_ce: f64,
    /// Median training images per second over the logged steps.
    pub train_images_per_s: f64,
    /// LM training steps it got (all stages).
    pub lm_steps: usize,
    /// Its LM training time, minutes: the images it trained on at its median training speed (validation and
    /// checkpoints not counted), so that an equal-time budget can be checked.
    pub train_minutes: f64,
    /// The benchmark, reconstruction and generation time.
    pub evaluation: RunEvaluation,
    /// The colour of its curves in `loss.png`.
    pub colour: &'static str,
}

/// The ablation's results.
#[derive(Debug, Clone, Serialize)]
pub struct AblationReport {
    /// One entry per variant, in the order run.
    pub variants: Vec<VariantResult>,
}

impl AblationReport {
    /// The table: final losses, scores per category, speeds.
    pub fn markdown(&self) -> String {
        let categories: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
        let mut out = format!(
            "| variant | curve | params | LM steps | train min | train CE | valid CE | train img/s | generate ms / image | \
             {} | overall (95%) |\n|{}\n",
            categories.join(" | "),
            "---|".repeat(9 + categories.len() + 1)
        );
        for v in &self.variants {
            let scores: Vec<String> = v
                .evaluation
                .benchmark
                .categories
                .iter()
                .map(|c| format!("{:.2}", c.score()))
                .collect();
            let (low, high) = v.evaluation.benchmark.overall_interval;
            out += &format!(
                "| {} | {} | {} | {} | {:.1} | {:.4} | {:.4} | {:.1} | {:.1} | {} | **{:.3}** ({low:.2}–{high:.2}) |\n",
                v.name,
                v.colour,
                v.parameters,
                v.lm_steps,
                v.train_minutes,
                v.final_train_ce,
                v.final_valid_ce,
                v.train_images_per_s,
                v.evaluation.generate_ms_per_image,
                scores.join(" | "),
                v.evaluation.benchmark.overall
            );
        }
        out
    }
}

/// Copies the directory `from` to `to` unless `to` exists, atomically, so that an interrupted copy is never taken
/// for a finished one.
fn copy_missing_dir(from: &Path, to: &Path) -> Result<(), EvalError> {
    if to.exists() || !from.exists() {
        return Ok(());
    }
    token_shuffle_data::replace_atomically(to, |partial| copy_dir(from, partial))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), EvalError> {
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(io(from))?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(io(&target))?;
        }
    }
    Ok(())
}

/// Trains and evaluates each variant of `base` in `dir`, then writes `dir/ablation.md` (the table),
/// `dir/ablation.json` and `dir/loss.png` (left: training image CE, right: validation image CE, one colour per
/// variant as the table says).
///
/// # Errors
/// [`EvalError::Config`] when there is no variant or more than the plot has colours; training and evaluation
/// errors.
pub fn run_ablation<B: AutodiffBackend>(
    base: &RunConfig,
    variants: &[Variant],
    dir: &Path,
    budget: LmBudget,
    eval: &EvalOptions,
    device: &B::Device,
    mut on_event: impl FnMut(&AblationEvent),
) -> Result<AblationReport, EvalError> {
    check_variants(base, variants)?;
    let _lock = token_shuffle_train::RunLock::acquire(dir)?;
    let mut results: Vec<VariantResult> = Vec::new();
    let mut curves: [Vec<Series>; 3] = Default::default();
    for (index, variant) in variants.iter().enumerate() {
        on_event(&AblationEvent::Variant {
            index,
            total: variants.len(),
            name: variant.name(),
        });
        let run_dir = dir.join(variant.name());
        // The steps that do not depend on the variant, made once by the first.
        for part in ["tokenizer", "text", "codes"] {
            copy_missing_dir(&dir.join(variants[0].name()).join(part), &run_dir.join(part))?;
        }
        let config = train_variant::<B>(base, variant, &run_dir, budget, device, &mut on_event)?;
        // Every variant has the first one's tokenizer: its held-out reconstruction is measured once.
        let first = results.first().map(|first| &first.evaluation.reconstruction);
        let evaluated = evaluate_variant::<B::InnerBackend>(&run_dir, eval, first, device, &mut on_event)?;
        let (result, variant_curves) = variant_result(variant, index, &config, &run_dir, evaluated);
        for (all, curve) in curves.iter_mut().zip(variant_curves) {
            all.push(curve);
        }
        results.push(result);
    }
    let report = AblationReport { variants: results };
    write_figures(&report, curves, dir)?;
    write_tables(&report, budget, eval, dir)?;
    Ok(report)
}

/// Checks that the variants fit the figures and that each makes a valid run of `base`.
fn check_variants(base: &RunConfig, variants: &[Variant]) -> Result<(), EvalError> {
    if variants.is_empty() || variants.len() > PALETTE.len() {
        return Err(EvalError::Config(format!(
            "an ablation takes 1 to {} variants, not {}",
            PALETTE.len(),
            variants.len()
        )));
    }
    for variant in variants {
        variant
            .apply(base)
            .check()
            .map_err(|e| EvalError::Config(format!("variant {}: {e}", variant.name())))?;
    }
    Ok(())
}

/// Trains `variant` of `base` in `run_dir` with its share of the budget, the benchmark probed during training;
/// returns the config it ran.
fn train_variant<B: AutodiffBackend>(
    base: &RunConfig,
    variant: &Variant,
    run_dir: &Path,
    budget: LmBudget,
    device: &B::Device,
    on_event: &mut impl FnMut(&AblationEvent),
) -> Result<RunConfig, EvalError> {
    let (config, measured) = budget.apply::<B>(variant.apply(base), run_dir, device)?;
    if let Some(step_ms) = measured {
        on_event(&AblationEvent::Budget {
            step_ms,
            steps: config.lm.total_steps(),
        });
    }
    let mut probe = crate::benchmark_probe::<B::InnerBackend>(EvalOptions::during_training(), device.clone());
    run_pipeline_probed::<B>(
        &config,
        run_dir,
        token_shuffle_train::Parallel::local(std::slice::from_ref(device)),
        Default::default(),
        Some(&mut probe),
        |e| on_event(&AblationEvent::Pipeline(e.clone())),
    )?;
    Ok(config)
}

/// Evaluates the trained run in `run_dir` (its held-out reconstruction taken from `first_reconstruction` when
/// the variants share a tokenizer that was measured already) and writes its samples; returns the evaluation and
/// the LM's parameter count.
fn evaluate_variant<B: Backend>(
    run_dir: &Path,
    eval: &EvalOptions,
    first_reconstruction: Option<&Option<ReconstructionReport>>,
    device: &B::Device,
    on_event: &mut impl FnMut(&AblationEvent),
) -> Result<(RunEvaluation, usize), EvalError> {
    let run = TrainedRun::<B>::load(run_dir, device)?;
    let options = EvalOptions {
        reconstruction_images: if first_reconstruction.is_some() {
            0
        } else {
            eval.reconstruction_images
        },
        ..*eval
    };
    let mut evaluation = evaluate_run(&run, &options, device, |what, done, total| {
        on_event(&AblationEvent::Eval {
            what: what.to_string(),
            done,
            total,
        })
    })?;
    if let Some(reconstruction) = first_reconstruction {
        evaluation.reconstruction = reconstruction.clone();
    }
    token_shuffle_data::save_png(&evaluation.samples, &run_dir.join("eval-samples.png"))?;
    Ok((evaluation, run.lm.num_params()))
}

/// The table row of a trained and evaluated variant, and its curves (training CE, validation CE, benchmark
/// during training) from its metrics.
fn variant_result(
    variant: &Variant,
    index: usize,
    config: &RunConfig,
    run_dir: &Path,
    (evaluation, parameters): (RunEvaluation, usize),
) -> (VariantResult, [Series; 3]) {
    let metrics = run_dir.join("lm/metrics.jsonl");
    let (train_ce, valid_ce) = (
        read_metric(&metrics, "train", "image_ce"),
        read_metric(&metrics, "valid", "image_ce"),
    );
    let last = |points: &[(f64, f64)]| points.last().map_or(f64::NAN, |p| p.1);
    let mut speeds: Vec<f64> = read_metric(&metrics, "train", "images_per_second")
        .into_iter()
        .map(|p| p.1)
        .collect();
    speeds.sort_by(f64::total_cmp);
    let train_images_per_s = speeds.get(speeds.len() / 2).copied().unwrap_or(f64::NAN);
    let lm_steps = config.lm.total_steps();
    let images = (lm_steps * config.lm.batch_size * config.lm.gradient_accumulation.max(1)) as f64;
    let result = VariantResult {
        variant: *variant,
        name: variant.name(),
        parameters,
        final_train_ce: last(&train_ce),
        final_valid_ce: last(&valid_ce),
        train_images_per_s,
        lm_steps,
        train_minutes: images / train_images_per_s / 60.0,
        evaluation,
        colour: PALETTE_NAMES[index],
    };
    let series = |points| Series {
        name: variant.name(),
        points,
        colour: PALETTE[index],
    };
    let score = read_metric(&metrics, "benchmark", "result/overall");
    (result, [series(train_ce), series(valid_ce), series(score)])
}

/// `loss.png` (training and validation CE, the benchmark during training) and `benchmark.png` (held-out scores
/// per category) in `dir`.
fn write_figures(report: &AblationReport, curves: [Vec<Series>; 3], dir: &Path) -> Result<(), EvalError> {
    let panel = |title: &str, y_label: &str, log_y, series| Panel {
        title: title.into(),
        x_label: "LM step".into(),
        y_label: y_label.into(),
        log_y,
        series,
    };
    let figure = |e: String| EvalError::Config(format!("drawing the ablation's figures: {e}"));
    let [train, valid, score] = curves;
    let curves = line_chart(&[
        panel("Training", "image cross-entropy (nats / code)", true, train),
        panel("Validation", "image cross-entropy (nats / code)", true, valid),
        panel(
            "Benchmark during training",
            "overall score (validation-seed prompts)",
            false,
            score,
        ),
    ])
    .map_err(figure)?;
    token_shuffle_data::save_png(&curves, &dir.join("loss.png"))?;
    let categories: Vec<String> = Category::ALL.iter().map(|c| c.name().to_string()).collect();
    let groups: Vec<BarGroup> = report
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| BarGroup {
            name: v.name.clone(),
            values: v.evaluation.benchmark.categories.iter().map(|c| c.score()).collect(),
            intervals: Some(v.evaluation.benchmark.categories.iter().map(|c| c.interval()).collect()),
            colour: PALETTE[i],
        })
        .collect();
    let bars = bar_chart(
        "Held-out benchmark per category (95% intervals)",
        "score",
        1.0,
        &categories,
        &groups,
    )
    .map_err(figure)?;
    token_shuffle_data::save_png(&bars, &dir.join("benchmark.png"))?;
    Ok(())
}

/// `ablation.md` (the table, with what the budget was) and `ablation.json` in `dir`.
fn write_tables(report: &AblationReport, budget: LmBudget, eval: &EvalOptions, dir: &Path) -> Result<(), EvalError> {
    let budget_text = match budget {
        LmBudget::Steps => "the same LM steps".to_string(),
        LmBudget::Minutes(m) => format!(
            "the same LM training time ({m} min; each variant's steps are the budget over its step time, measured \
             before it trained)"
        ),
    };
    let markdown = format!(
        "# Ablation\n\nEach variant trained with the same data and batch and {budget_text}; scores from the \
         compositional benchmark ({} held-out prompts per category, {} images each), with 95% intervals. `loss.png`: \
         training and validation image cross-entropy and the benchmark on validation-seed prompts against LM \
         steps, one colour per variant; `benchmark.png`: the held-out scores per category.\n\n{}",
        eval.benchmark.prompts_per_category,
        eval.benchmark.images_per_prompt,
        report.markdown()
    );
    std::fs::write(dir.join("ablation.md"), markdown).map_err(io(&dir.join("ablation.md")))?;
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(dir.join("ablation.json"), json).map_err(io(&dir.join("ablation.json")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::config::Config;
    use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
    use token_shuffle_test_support::TestBackend;

    use crate::{CompositionalBenchmark, DetectorConfig};

    #[test]
    fn variants_are_the_combinations_that_differ() {
        let all = variants(
            &[1, 2],
            &[Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken],
            &[0, 2],
        );
        let names: Vec<String> = all.iter().map(Variant::name).collect();
        assert_eq!(
            names,
            [
                "s1",
                "s2-mlp0",
                "s2-mlp2",
                "s2-linear",
                "s2-last-token0",
                "s2-last-token2"
            ]
        );
        assert_eq!("last-token".parse(), Ok(Fusion::LastToken));
        assert!(
            "resampler"
                .parse::<Fusion>()
                .unwrap_err()
                .contains("mlp, linear or last-token")
        );
    }

    #[test]
    fn a_time_budget_sets_the_steps_from_the_measured_step_time_once() {
        let base = RunConfig::tiny();
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let steps = |minutes: f64| {
            let (config, step_ms) = LmBudget::Minutes(minutes)
                .apply::<Autodiff<TestBackend>>(base.clone(), dir.path(), &device)
                .unwrap();
            let step_ms = step_ms.expect("measured: no run.json yet");
            let steps = config.lm.total_steps();
            let expected = (minutes * 60e3 / step_ms).floor().max(1.0) as usize;
            assert_eq!(steps, expected, "{minutes} min at {step_ms} ms per step");
            steps
        };
        // Ten times the budget buys about ten times the steps (two measurements: noisy, hence the wide band).
        let (short, long) = (steps(0.02), steps(0.2));
        assert!(long >= 3 * short && long <= 30 * short.max(1), "{short} vs {long}");

        // A variant whose LM has started keeps its steps: a rerun resumes rather than measuring again. (A run.json
        // alone, as in a directory seeded with another run's tokenizer, does not count.)
        let mut saved = base.clone();
        saved.lm.stages[0].steps = 1234;
        saved.save(dir.path().join("run.json")).unwrap();
        let (config, measured) = LmBudget::Minutes(0.02)
            .apply::<Autodiff<TestBackend>>(base.clone(), dir.path(), &device)
            .unwrap();
        assert!(measured.is_some(), "no lm/ yet: measured ({})", config.lm.total_steps());
        std::fs::create_dir_all(dir.path().join("lm")).unwrap();
        let (config, measured) = LmBudget::Minutes(5.0)
            .apply::<Autodiff<TestBackend>>(base.clone(), dir.path(), &device)
            .unwrap();
        assert_eq!((config.lm.total_steps(), measured), (1234, None));

        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = LmBudget::Minutes(bad)
                .apply::<Autodiff<TestBackend>>(base.clone(), dir.path(), &device)
                .unwrap_err()
                .to_string();
            assert!(err.contains("positive number of minutes"), "{err}");
        }
        assert_eq!(
            LmBudget::Steps
                .apply::<Autodiff<TestBackend>>(base.clone(), dir.path(), &device)
                .unwrap()
                .0
                .lm
                .total_steps(),
            2
        );
    }

    /// Two variants of the tiniest run, a few steps each: both are trained (the tokenizer once), evaluated, and
    /// reported in the table, the JSON and the plot.
    #[test]
    fn two_variants_are_trained_evaluated_and_compared() {
        let base = RunConfig::tiny();
        let dir = tempfile::tempdir().unwrap();
        let eval = EvalOptions {
            benchmark: CompositionalBenchmark {
                seed: 0,
                prompts_per_category: 1,
                images_per_prompt: 2,
                seen_pairs: false,
            },
            generate: GenerateOptions {
                cfg_scale: 2.0,
                schedule: CfgSchedule::HalfLinear,
                sampler: Sampler::default(),
                seed: 0,
            },
            batch_size: 4,
            reconstruction_images: 4,
            detector: DetectorConfig::default(),
        };
        let chosen = variants(&[1, 2], &[Fusion::ResidualMlp], &[1]);
        let mut trained_tokenizers = 0;
        let report = run_ablation::<Autodiff<TestBackend>>(
            &base,
            &chosen,
            dir.path(),
            LmBudget::Steps,
            &eval,
            &Default::default(),
            |e| {
                if let AblationEvent::Pipeline(PipelineEvent::Phase {
                    name: "tokenizer",
                    skipped: false,
                    ..
                }) = e
                {
                    trained_tokenizers += 1;
                }
            },
        )
        .unwrap();
        assert_eq!(
            trained_tokenizers, 1,
            "the second variant reuses the first one's tokenizer"
        );
        let names: Vec<&str> = report.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2-mlp1"]);
        for v in &report.variants {
            assert!(
                v.final_train_ce.is_finite() && v.final_valid_ce.is_finite() && v.train_images_per_s > 0.0,
                "{v:?}"
            );
            assert!(v.evaluation.benchmark.categories.iter().all(|c| c.total == 2));
            assert!(
                v.evaluation.tokenizer_ceiling.categories.iter().all(|c| c.total == 1),
                "one render per prompt"
            );
            assert_eq!(v.evaluation.reconstruction.as_ref().map(|r| r.images), Some(4));
            // One 32 px sample per prompt, a column per category.
            assert_eq!(v.evaluation.samples.dimensions(), (6 * 32, 32));
            assert!(dir.path().join(&v.name).join("eval-samples.png").exists());
        }
        // s = 1 has no shuffle layers; s = 2 adds them.
        assert!(report.variants[0].parameters < report.variants[1].parameters);
        let table = std::fs::read_to_string(dir.path().join("ablation.md")).unwrap();
        assert!(
            table.contains("| s1 | blue |") && table.contains("| s2-mlp1 | orange |"),
            "{table}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("ablation.json")).unwrap()).unwrap();
        assert_eq!(json["variants"].as_array().unwrap().len(), 2);
        // The plot holds both colours.
        let plot = image::open(dir.path().join("loss.png")).unwrap().to_rgb8();
        for colour in &PALETTE[..2] {
            assert!(plot.pixels().any(|p| p == colour), "no curve in {colour:?}");
        }
    }
}
