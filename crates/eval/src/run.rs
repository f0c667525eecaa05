//! Evaluation of a trained run (made by `train::run_pipeline`): the compositional benchmark on images it generates,
//! and its tokenizer's reconstruction of held-out images.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use image::RgbImage;
use serde::Serialize;
use token_shuffle_data::ImageCaption;
use token_shuffle_data::imaging::tile;
use token_shuffle_data::scenes::{Category, Scene, SceneCorpus, Split};
use token_shuffle_lm::{CfgSchedule, GenerateOptions, Sampler};
use token_shuffle_train::{
    ImageSource, ProbeResult, ReconstructionReport, TrainError, TrainedRun, TrainingImages, evaluate_reconstruction,
};

use crate::{BenchmarkReport, CompositionalBenchmark, DetectorConfig, EvalError};

/// How to evaluate a run.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// The benchmark's prompts and images per prompt.
    pub benchmark: CompositionalBenchmark,
    /// Sampling and guidance. Each batch of the benchmark samples with `seed + batch index`.
    pub generate: GenerateOptions,
    /// Images generated at once.
    pub batch_size: usize,
    /// Held-out images for the reconstruction metrics (0 skips them).
    pub reconstruction_images: usize,
    /// The detector's thresholds.
    pub detector: DetectorConfig,
}

impl EvalOptions {
    /// The benchmark taken during training (`cargo xtask train`, `ablate`): 4 prompts × 2 images per category
    /// drawn with prompt seed 1, not the report's seed 0, so that a run's curve is read off prompts of the same
    /// kind that the reported score does not use; CFG 3 half-linear, the library's sampler; no reconstruction.
    /// 48 images: a coarse curve (its intervals are wide), cheap enough to take every few hundred steps.
    pub fn during_training() -> Self {
        Self {
            benchmark: CompositionalBenchmark {
                seed: 1,
                prompts_per_category: 4,
                images_per_prompt: 2,
                seen_pairs: false,
            },
            generate: GenerateOptions {
                cfg_scale: 3.0,
                schedule: CfgSchedule::HalfLinear,
                sampler: Sampler::default(),
                seed: 0,
            },
            batch_size: 16,
            reconstruction_images: 0,
            detector: DetectorConfig::default(),
        }
    }
}

/// What [`evaluate_run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunEvaluation {
    /// The compositional benchmark.
    pub benchmark: BenchmarkReport,
    /// The benchmark on ground-truth renders of its prompts passed through the run's VQ tokenizer (one per prompt):
    /// the score of a perfect LM, so the ceiling that this tokenizer puts on [`Self::benchmark`].
    pub tokenizer_ceiling: BenchmarkReport,
    /// The tokenizer on held-out images (`None` when skipped).
    pub reconstruction: Option<ReconstructionReport>,
    /// Whether the prompts were the seen-pairs diagnostic ([`CompositionalBenchmark::seen_pairs`]), not the
    /// benchmark's held-out ones.
    pub seen_pairs: bool,
    /// Wall time of generation per image (batched as [`EvalOptions::batch_size`]), ms.
    pub generate_ms_per_image: f64,
    /// The first image of each prompt, one column per category (GenEval's order), one row per prompt.
    #[serde(skip)]
    pub samples: RgbImage,
}

/// Held-out images of `source` at `resolution` px: for scenes, `count` renders of the held-out split (seed
/// `seed`), which no training or validation scene shares; for Twemoji and folders, the validation part (at most
/// `count`), since those corpora have no other held-out set.
pub fn held_out_images(
    source: &ImageSource,
    resolution: u32,
    count: usize,
    seed: u64,
) -> Result<Vec<ImageCaption>, EvalError> {
    match source {
        ImageSource::Scenes => SceneCorpus::new(seed, Split::HeldOut, count)
            .scenes()
            .map(|scene| {
                let image = scene.render(resolution)?;
                Ok(ImageCaption {
                    id: format!("held-out/{}", scene.index),
                    caption: scene.caption,
                    image,
                })
            })
            .collect(),
        other => Ok(TrainingImages::load_valid(other, resolution, count, seed)?),
    }
}

/// The benchmark on images `run` generates, with the first image of each prompt (one column per category) and
/// the generation time per image in ms.
pub fn benchmark_run<B: Backend>(
    run: &TrainedRun<B>,
    options: &EvalOptions,
    device: &B::Device,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<(BenchmarkReport, RgbImage, f64), EvalError> {
    // The benchmark asks for images in prompt order, `images_per_prompt` in a row: image n belongs to prompt
    // n / images_per_prompt. (Captions may repeat across prompts, so they cannot be the key.)
    let per_prompt = options.benchmark.images_per_prompt.max(1);
    let mut first_images: Vec<RgbImage> = Vec::new();
    let mut generating = Duration::ZERO;
    let mut generated = 0usize;
    let mut batch_index = 0u64;
    let benchmark = options.benchmark.run(
        &options.detector,
        options.batch_size,
        |captions| -> Result<Vec<RgbImage>, EvalError> {
            let generate = GenerateOptions {
                seed: options.generate.seed.wrapping_add(batch_index),
                ..options.generate
            };
            batch_index += 1;
            let start = Instant::now();
            let images = run.generate_images(captions, &generate, device, &mut |_, _| {})?;
            generating += start.elapsed();
            for (n, image) in (generated..).zip(&images) {
                if n % per_prompt == 0 {
                    first_images.push(image.clone());
                }
            }
            generated += images.len();
            Ok(images)
        },
        &mut on_progress,
    )?;
    let samples = tile(&first_images, Category::ALL.len() as u32);
    let ms_per_image = generating.as_secs_f64() * 1e3 / generated.max(1) as f64;
    Ok((benchmark, samples, ms_per_image))
}

/// A probe for [`token_shuffle_train::run_pipeline_probed`]: the benchmark of `options` on the run as it stands
/// (overall score, its interval, and the score per category).
pub fn benchmark_probe<B: Backend>(
    options: EvalOptions,
    device: B::Device,
) -> impl FnMut(usize, &TrainedRun<B>) -> Result<ProbeResult, TrainError> {
    move |step, run| {
        let (report, _, _) = benchmark_run(run, &options, &device, |_, _| {}).map_err(|e| TrainError::Probe {
            step,
            message: e.to_string(),
        })?;
        Ok(ProbeResult {
            overall: report.overall,
            overall_interval: Some(report.overall_interval),
            categories: report
                .categories
                .iter()
                .map(|c| (c.category.name().to_string(), c.score()))
                .collect(),
        })
    }
}

/// Runs the benchmark on images `run` generates, and the reconstruction metrics on held-out images.
/// `on_progress(what, done, total)` reports each phase.
pub fn evaluate_run<B: Backend>(
    run: &TrainedRun<B>,
    options: &EvalOptions,
    device: &B::Device,
    mut on_progress: impl FnMut(&str, usize, usize),
) -> Result<RunEvaluation, EvalError> {
    let (benchmark, samples, generate_ms_per_image) = benchmark_run(run, options, device, |done, total| {
        on_progress("generating and judging", done, total)
    })?;

    // The same prompts, drawn perfectly and passed through the tokenizer. Captions name their spec (the prompt's
    // words are in them), so any scene with the caption is a fair drawing of it.
    let resolution = run
        .config
        .lm
        .stages
        .last()
        .map_or(run.config.tokenizer.resolution, |s| s.resolution) as u32;
    let scenes: HashMap<String, Scene> = options
        .benchmark
        .prompts()
        .into_iter()
        .map(|s| (s.caption.clone(), s))
        .collect();
    let ceiling_benchmark = CompositionalBenchmark {
        images_per_prompt: 1,
        ..options.benchmark
    };
    let tokenizer_ceiling = ceiling_benchmark.run(
        &options.detector,
        options.batch_size,
        |captions| -> Result<Vec<RgbImage>, EvalError> {
            let renders = captions
                .iter()
                .map(|c| {
                    Ok(ImageCaption {
                        id: c.clone(),
                        caption: c.clone(),
                        image: scenes[c].render(resolution)?,
                    })
                })
                .collect::<Result<Vec<_>, EvalError>>()?;
            Ok(token_shuffle_train::reconstruct(&run.vq, &renders, device)?)
        },
        |done, total| on_progress("judging renders through the tokenizer", done, total),
    )?;

    let reconstruction = if options.reconstruction_images == 0 {
        None
    } else {
        let tokenizer = &run.config.tokenizer;
        on_progress("reconstructing held-out images", 0, options.reconstruction_images);
        let source: ImageSource = run.config.data.resolve()?;
        let images = held_out_images(
            &source,
            tokenizer.resolution as u32,
            options.reconstruction_images,
            options.benchmark.seed,
        )?;
        let report = evaluate_reconstruction(&run.vq, &images, tokenizer.batch_size, device)?;
        on_progress("reconstructing held-out images", images.len(), images.len());
        Some(report)
    };
    Ok(RunEvaluation {
        benchmark,
        tokenizer_ceiling,
        reconstruction,
        seen_pairs: options.benchmark.seen_pairs,
        generate_ms_per_image,
        samples,
    })
}

impl RunEvaluation {
    /// The evaluation as Markdown: scores per category, reconstruction metrics, generation time.
    pub fn markdown(&self, name: &str) -> String {
        let mut out = String::from(if self.seen_pairs {
            "## Diagnostic: the benchmark's categories on validation prompts (pairs the model trained on; not the \
             benchmark's score)\n\n"
        } else {
            "## Compositional benchmark (held-out prompts)\n\n"
        });
        out += &BenchmarkReport::markdown_header("run");
        out += "\n";
        out += &self.benchmark.markdown_row(name);
        out += "\n";
        out += &self.tokenizer_ceiling.markdown_row("tokenizer ceiling");
        let images: usize = self.benchmark.categories.iter().map(|c| c.total).sum();
        out += &format!(
            "\n\n{images} images, {:.1} ms each to generate. The tokenizer ceiling is the benchmark on ground-truth \
             renders of the same prompts passed through the run's VQ tokenizer: what a perfect LM would score.\n",
            self.generate_ms_per_image
        );
        out += "\n### Colours, by the colour and by the shape the prompt names\n\n| | run | tokenizer ceiling |\n|---|---|---|\n";
        let [by_colour, by_shape] = self.benchmark.colours_by_colour_and_shape();
        let [ceiling_colour, ceiling_shape] = self.tokenizer_ceiling.colours_by_colour_and_shape();
        let ceilings: Vec<_> = ceiling_colour.into_iter().chain(ceiling_shape).collect();
        for (name, passed, total) in by_colour.into_iter().chain(by_shape) {
            let ceiling = ceilings
                .iter()
                .find(|c| c.0 == name)
                .map_or("–".into(), |c| format!("{}/{}", c.1, c.2));
            out += &format!("| {name} | {passed}/{total} | {ceiling} |\n");
        }
        if let Some(r) = &self.reconstruction {
            out += &format!("\n## Tokenizer on {} held-out images\n\n{}.\n", r.images, r.summary());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compositional::{CategoryScore, PromptResult};

    #[test]
    fn held_out_scenes_come_from_the_held_out_split() {
        let images = held_out_images(&ImageSource::Scenes, 32, 7, 3).unwrap();
        assert_eq!(images.len(), 7);
        let corpus = SceneCorpus::new(3, Split::HeldOut, 7);
        for (image, scene) in images.iter().zip(corpus.scenes()) {
            assert_eq!(image.caption, scene.caption);
            assert_eq!(image.image, scene.render(32).unwrap());
        }
    }

    /// The report writer on a fake evaluation: every number lands where the table says.
    #[test]
    fn the_report_states_scores_reconstruction_and_speed() {
        let prompts = vec![PromptResult {
            caption: "a circle".into(),
            spec: token_shuffle_data::scenes::PromptSpec::SingleObject {
                shape: token_shuffle_data::scenes::Shape::Circle,
            },
            passed: vec![true, false, true, true],
        }];
        let evaluation = RunEvaluation {
            benchmark: BenchmarkReport::from_prompts(prompts.clone()),
            tokenizer_ceiling: BenchmarkReport::from_prompts(
                prompts
                    .into_iter()
                    .map(|p| PromptResult {
                        passed: vec![true],
                        ..p
                    })
                    .collect(),
            ),
            reconstruction: Some(ReconstructionReport {
                step: 0,
                images: 10,
                psnr: 25.5,
                ssim: 0.8125,
                mse: 0.01,
                codebook_usage: 0.5,
                perplexity: 12.25,
            }),
            seen_pairs: false,
            generate_ms_per_image: 12.5,
            samples: RgbImage::new(1, 1),
        };
        assert_eq!(
            evaluation.benchmark.categories[0],
            CategoryScore {
                category: Category::SingleObject,
                passed: 3,
                total: 4
            }
        );
        let markdown = evaluation.markdown("fake");
        assert!(
            markdown.contains("| fake | 0.75 (0.30–0.95) | 0.00 (0.00–1.00) |") && markdown.contains("**0.125**"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| tokenizer ceiling | 1.00 (0.21–1.00) |") && markdown.contains("**0.167**"),
            "{markdown}"
        );
        assert!(markdown.contains("4 images, 12.5 ms each"), "{markdown}");
        assert!(
            markdown.contains("10 held-out images")
                && markdown.contains("PSNR 25.50 dB, SSIM 0.812, codebook usage 50.0%, perplexity 12.2"),
            "{markdown}"
        );
        let json = serde_json::to_value(&evaluation).unwrap();
        assert_eq!(json["benchmark"]["overall"], 0.125);
        assert!(json.get("samples").is_none(), "images stay out of the JSON");
    }
}
