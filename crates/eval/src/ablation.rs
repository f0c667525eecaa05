//! The ablation runner: the paper's Figures 8–10, rerunnable. Each variant of the Token-Shuffle LM (window s,
//! fusion, MLP blocks) is trained on the same data with the same budget, evaluated with the compositional
//! benchmark, and compared in one table and one loss plot.
//!
//! Every variant is a complete run directory (`<dir>/<variant>/`, loadable by `train::TrainedRun` and
//! `cargo xtask generate`). The tokenizer, the text tokenizer and the code caches do not depend on the variant:
//! they are made once, in the first variant's directory, and copied into the others, whose pipelines then skip
//! those steps. A rerun skips whatever is finished, and an interrupted LM resumes from its checkpoint.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use token_shuffle::Fusion;
use token_shuffle_data::scenes::Category;
use token_shuffle_train::report::{Curve, PALETTE, PALETTE_NAMES, plot, read_metric};
use token_shuffle_train::{PipelineEvent, RunConfig, TrainedRun, run_pipeline_probed};

use crate::EvalError;
use crate::run::{EvalOptions, RunEvaluation, evaluate_run};

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
            (s, Fusion::Linear) => format!("s{s}-linear"),
            (s, Fusion::ResidualMlp) => format!("s{s}-mlp{}", self.mlp_blocks),
            (s, Fusion::LastToken) => format!("s{s}-last-token{}", self.mlp_blocks),
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
                    (_, Fusion::Linear) => Variant {
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

/// Parses a fusion name of the command line: `mlp`, `linear` or `last-token`.
pub fn parse_fusion(name: &str) -> Result<Fusion, String> {
    match name {
        "mlp" => Ok(Fusion::ResidualMlp),
        "linear" => Ok(Fusion::Linear),
        "last-token" => Ok(Fusion::LastToken),
        other => Err(format!("unknown fusion {other:?}: use mlp, linear or last-token")),
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
            "| variant | curve | params | train CE | valid CE | train img/s | generate ms / image | {} | overall |\n|{}\n",
            categories.join(" | "),
            "---|".repeat(7 + categories.len() + 1)
        );
        for v in &self.variants {
            let scores: Vec<String> = v
                .evaluation
                .benchmark
                .categories
                .iter()
                .map(|c| format!("{:.2}", c.score()))
                .collect();
            out += &format!(
                "| {} | {} | {} | {:.4} | {:.4} | {:.1} | {:.1} | {} | **{:.3}** |\n",
                v.name,
                v.colour,
                v.parameters,
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
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
    eval: &EvalOptions,
    device: &B::Device,
    mut on_event: impl FnMut(&AblationEvent),
) -> Result<AblationReport, EvalError> {
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
    let _lock = token_shuffle_train::RunLock::acquire(dir)?;
    let shared = dir.join(variants[0].name());
    let mut results: Vec<VariantResult> = Vec::new();
    let (mut train_curves, mut valid_curves) = (Vec::new(), Vec::new());
    for (index, variant) in variants.iter().enumerate() {
        let name = variant.name();
        on_event(&AblationEvent::Variant {
            index,
            total: variants.len(),
            name: name.clone(),
        });
        let run_dir = dir.join(&name);
        // The steps that do not depend on the variant, made once by the first.
        for part in ["tokenizer", "text", "codes"] {
            copy_missing_dir(&shared.join(part), &run_dir.join(part))?;
        }
        let config = variant.apply(base);
        let mut probe = crate::benchmark_probe::<B::InnerBackend>(EvalOptions::during_training(), device.clone());
        run_pipeline_probed::<B>(&config, &run_dir, device, Some(&mut probe), |e| {
            on_event(&AblationEvent::Pipeline(e.clone()))
        })?;

        let run = TrainedRun::<B::InnerBackend>::load(&run_dir, device)?;
        // Every variant has the first one's tokenizer: its held-out reconstruction is measured once.
        let first_reconstruction = results.first().map(|first| first.evaluation.reconstruction.clone());
        let options = if first_reconstruction.is_some() {
            EvalOptions {
                reconstruction_images: 0,
                ..*eval
            }
        } else {
            *eval
        };
        let mut evaluation = evaluate_run(&run, &options, device, |what, done, total| {
            on_event(&AblationEvent::Eval {
                what: what.to_string(),
                done,
                total,
            })
        })?;
        if let Some(reconstruction) = first_reconstruction {
            evaluation.reconstruction = reconstruction;
        }
        token_shuffle_data::save_png(&evaluation.samples, &run_dir.join("eval-samples.png"))?;

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
        results.push(VariantResult {
            variant: *variant,
            name,
            parameters: run.lm.num_params(),
            final_train_ce: last(&train_ce),
            final_valid_ce: last(&valid_ce),
            train_images_per_s: speeds.get(speeds.len() / 2).copied().unwrap_or(f64::NAN),
            evaluation,
            colour: PALETTE_NAMES[index],
        });
        train_curves.push(Curve {
            points: train_ce,
            colour: PALETTE[index],
        });
        valid_curves.push(Curve {
            points: valid_ce,
            colour: PALETTE[index],
        });
    }
    let report = AblationReport { variants: results };
    token_shuffle_data::save_png(&plot(&[train_curves, valid_curves]), &dir.join("loss.png"))?;
    let markdown = format!(
        "# Ablation\n\nEach variant trained with the same data, steps and batch; scores from the compositional benchmark \
         ({} held-out prompts per category, {} images each). `loss.png`: training (left) and validation (right) image \
         cross-entropy against steps, one colour per variant.\n\n{}",
        eval.benchmark.prompts_per_category,
        eval.benchmark.images_per_prompt,
        report.markdown()
    );
    std::fs::write(dir.join("ablation.md"), markdown).map_err(io(&dir.join("ablation.md")))?;
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(dir.join("ablation.json"), json).map_err(io(&dir.join("ablation.json")))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
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
        assert_eq!(parse_fusion("last-token"), Ok(Fusion::LastToken));
        assert!(
            parse_fusion("resampler")
                .unwrap_err()
                .contains("mlp, linear or last-token")
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
        let report =
            run_ablation::<Autodiff<TestBackend>>(&base, &chosen, dir.path(), &eval, &Default::default(), |e| {
                if let AblationEvent::Pipeline(PipelineEvent::Phase {
                    name: "tokenizer",
                    skipped: false,
                    ..
                }) = e
                {
                    trained_tokenizers += 1;
                }
            })
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
