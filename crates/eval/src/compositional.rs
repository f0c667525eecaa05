//! The compositional benchmark: GenEval's six categories, asked of a generator with the scene grammar's
//! held-out prompts, judged by the model-independent [`detect`]or.
//!
//! **Judging** ([`judge`]) follows GenEval's rules on the detected objects; objects the prompt does not mention
//! are ignored, as in GenEval:
//!
//! | category | passes when |
//! |---|---|
//! | single object | at least one object of the shape |
//! | two objects | at least one object of each shape |
//! | counting | exactly `count` objects of the shape |
//! | colours | at least one object of the shape, and every object of that shape has the colour |
//! | position | an object of the first shape and one of the second whose centres stand in the relation, with the offset along its axis above [`POSITION_MARGIN`] and above the offset across it |
//! | colour attribution | an object of the first colour and shape, and one of the second |
//!
//! The score of a category is the fraction of its images that pass; the overall score is the mean of the six
//! category scores (GenEval's convention, so that no category weighs more for having more prompts).
//!
//! **Calibration** ([`calibrate`]) runs the same judge on ground-truth renders (the detector should pass ≥ 98%),
//! on renders paired with another prompt of their category, and on uniform noise. For the last two the chance
//! level is what the judge says of the *true* objects (an oracle detector): the detector should stay near it.

use std::collections::BTreeMap;

use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use token_shuffle_data::scenes::{Category, Colour, PromptSpec, Scene, SceneCorpus, Shape, Split};

use crate::{Detection, DetectorConfig, EvalError, detect};

/// Smallest offset of two centres along a relation's axis (in image widths) for a position prompt to pass.
/// The scene grammar draws position scenes with an offset of at least 0.2.
pub const POSITION_MARGIN: f64 = 0.05;

/// Whether the objects satisfy the prompt (rules in the module docs).
pub fn judge(spec: &PromptSpec, objects: &[Detection]) -> bool {
    let of = |shape: Shape| objects.iter().filter(move |o| o.shape == shape);
    match *spec {
        PromptSpec::SingleObject { shape } => of(shape).next().is_some(),
        PromptSpec::TwoObjects { shapes: [a, b] } => of(a).next().is_some() && of(b).next().is_some(),
        PromptSpec::Counting { shape, count } => of(shape).count() == count,
        PromptSpec::Colours { shape, colour } => of(shape).next().is_some() && of(shape).all(|o| o.colour == colour),
        PromptSpec::Position {
            first,
            relation,
            second,
        } => of(first).any(|a| of(second).any(|b| relation.holds(a.center, b.center, POSITION_MARGIN))),
        PromptSpec::ColourAttribution { first, second } => [first, second]
            .iter()
            .all(|&(colour, shape)| of(shape).any(|o| o.colour == colour)),
    }
}

/// The benchmark's prompts and sampling: `prompts_per_category` held-out prompts of each category (the first
/// scenes of the held-out split of `seed`, whose categories come in turn), `images_per_prompt` images each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompositionalBenchmark {
    /// Seed of the held-out scene corpus the prompts come from.
    pub seed: u64,
    /// Prompts per category.
    pub prompts_per_category: usize,
    /// Images generated per prompt.
    pub images_per_prompt: usize,
    /// Prompts from the validation scenes of `seed` instead of the held-out ones: the colour × shape pairs, counts
    /// and relations the model trained on. A diagnostic reported beside the benchmark, never its score: it tells
    /// "cannot bind a colour at all" from "cannot bind it to a shape it never saw it with".
    pub seen_pairs: bool,
}

impl Default for CompositionalBenchmark {
    /// 32 prompts per category, 4 images each: 768 images. Sized so that two runs 0.05 apart overall are told
    /// apart: on run-small the overall 95% interval is ±0.025 at this size (0.387, 0.36–0.41) against ±0.045 at 8
    /// prompts (0.380, 0.33–0.42), so a 0.05 difference exceeds the ~±0.035 interval of a difference here but not
    /// the ~±0.064 one at 8 (docs/BENCHMARKS.md). 42 s for lm-mini on 2 cores.
    fn default() -> Self {
        Self {
            seed: 0,
            prompts_per_category: 32,
            images_per_prompt: 4,
            seen_pairs: false,
        }
    }
}

/// The score of one category.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CategoryScore {
    /// The category.
    pub category: Category,
    /// Images that passed.
    pub passed: usize,
    /// Images judged.
    pub total: usize,
}

impl CategoryScore {
    /// The 95% Wilson score interval of the pass rate (`[0, 1]` when nothing was judged): the benchmark is small
    /// (32 images per category by default), so a score is read with its interval.
    pub fn interval(&self) -> (f64, f64) {
        if self.total == 0 {
            return (0.0, 1.0);
        }
        const Z: f64 = 1.959_964;
        let (n, p) = (self.total as f64, self.score());
        let centre = p + Z * Z / (2.0 * n);
        let spread = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt();
        let scale = 1.0 + Z * Z / n;
        (
            ((centre - spread) / scale).max(0.0),
            ((centre + spread) / scale).min(1.0),
        )
    }

    /// Fraction of images that passed (0 when none were judged).
    pub fn score(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.passed as f64 / self.total as f64
        }
    }
}

/// What the judge said of one prompt's images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptResult {
    /// The caption the generator was given.
    pub caption: String,
    /// What it asks for.
    pub spec: PromptSpec,
    /// One verdict per image.
    pub passed: Vec<bool>,
}

/// The benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchmarkReport {
    /// The six categories, in GenEval's order.
    pub categories: Vec<CategoryScore>,
    /// Mean of the category scores.
    pub overall: f64,
    /// 95% interval of `overall`: a seeded bootstrap over prompts (resampled within each category, 2000 times).
    pub overall_interval: (f64, f64),
    /// Every prompt's verdicts.
    pub prompts: Vec<PromptResult>,
}

impl BenchmarkReport {
    /// Scores per category and overall, from per-prompt verdicts.
    pub fn from_prompts(prompts: Vec<PromptResult>) -> Self {
        let categories: Vec<CategoryScore> = Category::ALL
            .iter()
            .map(|&category| {
                let verdicts = prompts
                    .iter()
                    .filter(|p| p.spec.category() == category)
                    .flat_map(|p| &p.passed);
                let (passed, total) = verdicts.fold((0, 0), |(p, t), &v| (p + v as usize, t + 1));
                CategoryScore {
                    category,
                    passed,
                    total,
                }
            })
            .collect();
        let overall = categories.iter().map(CategoryScore::score).sum::<f64>() / categories.len() as f64;
        let overall_interval = bootstrap_overall(&prompts);
        Self {
            categories,
            overall,
            overall_interval,
            prompts,
        }
    }

    /// The colours category's verdicts grouped by the colour the prompt names, then by its shape: `(name,
    /// passed, judged)`, in vocabulary order, groups without a prompt left out.
    pub fn colours_by_colour_and_shape(&self) -> [Vec<(&'static str, usize, usize)>; 2] {
        // Each colour prompt's [colour, shape] names and verdicts.
        let colours: Vec<([&'static str; 2], &[bool])> = self
            .prompts
            .iter()
            .filter_map(|p| match p.spec {
                PromptSpec::Colours { shape, colour } => Some(([colour.name(), shape.name()], p.passed.as_slice())),
                _ => None,
            })
            .collect();
        let group = |part: usize, names: Vec<&'static str>| {
            names
                .into_iter()
                .filter_map(|name| {
                    let verdicts = colours.iter().filter(|c| c.0[part] == name).flat_map(|c| c.1.iter());
                    let (passed, total) = verdicts.fold((0, 0), |(p, t), &v| (p + usize::from(v), t + 1));
                    (total > 0).then_some((name, passed, total))
                })
                .collect()
        };
        [
            group(0, Colour::ALL.iter().map(|c| c.name()).collect()),
            group(1, Shape::ALL.iter().map(|s| s.name()).collect()),
        ]
    }

    /// The score of `category`.
    pub fn score(&self, category: Category) -> f64 {
        self.categories
            .iter()
            .find(|c| c.category == category)
            .map_or(0.0, CategoryScore::score)
    }

    /// A Markdown table: one row, a column per category and the overall score, each with its 95% interval.
    pub fn markdown_row(&self, name: &str) -> String {
        let cells: Vec<String> = self
            .categories
            .iter()
            .map(|c| {
                let (low, high) = c.interval();
                format!("{:.2} ({low:.2}–{high:.2})", c.score())
            })
            .collect();
        let (low, high) = self.overall_interval;
        format!(
            "| {name} | {} | **{:.3}** ({low:.2}–{high:.2}) |",
            cells.join(" | "),
            self.overall
        )
    }

    /// The header matching [`Self::markdown_row`].
    pub fn markdown_header(first: &str) -> String {
        let names: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
        format!(
            "| {first} | {} | overall |\n|---|{}---|",
            names.join(" | "),
            "---|".repeat(names.len())
        )
    }
}

/// The 2.5th and 97.5th percentiles of the overall score over 2000 bootstrap resamples of the prompts, drawn with
/// replacement within each category (so every resample keeps the benchmark's design: the mean of six categories).
/// Seeded: the same verdicts give the same interval.
fn bootstrap_overall(prompts: &[PromptResult]) -> (f64, f64) {
    const RESAMPLES: usize = 2000;
    // Per category, each prompt's (passed, judged).
    let groups: Vec<Vec<(usize, usize)>> = Category::ALL
        .iter()
        .map(|&category| {
            prompts
                .iter()
                .filter(|p| p.spec.category() == category)
                .map(|p| (p.passed.iter().filter(|&&v| v).count(), p.passed.len()))
                .collect()
        })
        .collect();
    let mut rng = token_shuffle_data::rng::SplitMix64::new(0x5EED, 0);
    let mut overall: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let scores = groups.iter().map(|group| {
                let (mut passed, mut judged) = (0, 0);
                for _ in 0..group.len() {
                    let (p, j) = group[rng.below(group.len())];
                    passed += p;
                    judged += j;
                }
                if judged == 0 {
                    0.0
                } else {
                    passed as f64 / judged as f64
                }
            });
            scores.sum::<f64>() / groups.len() as f64
        })
        .collect();
    overall.sort_by(f64::total_cmp);
    (overall[RESAMPLES * 25 / 1000], overall[RESAMPLES * 975 / 1000 - 1])
}

impl CompositionalBenchmark {
    /// The prompts: held-out scenes (validation scenes with [`Self::seen_pairs`]), `prompts_per_category` of each
    /// category.
    pub fn prompts(&self) -> Vec<Scene> {
        SceneCorpus::new(
            self.seed,
            if self.seen_pairs { Split::Valid } else { Split::HeldOut },
            self.prompts_per_category * Category::ALL.len(),
        )
        .scenes()
        .collect()
    }

    /// Checks the sizes: at least one prompt per category and one image per prompt.
    ///
    /// # Errors
    /// [`EvalError::Config`] naming the count that is 0.
    pub fn check(&self) -> Result<(), EvalError> {
        for (name, value) in [
            (
                "prompts per category (--prompts-per-category)",
                self.prompts_per_category,
            ),
            ("images per prompt (--images-per-prompt)", self.images_per_prompt),
        ] {
            if value == 0 {
                return Err(EvalError::Config(format!(
                    "{name} is 0; the benchmark needs at least 1"
                )));
            }
        }
        Ok(())
    }

    /// Runs the benchmark: asks `generate` for images of batches of at most `batch_size` captions (a caption
    /// repeated once per image it needs, in the order of [`Self::prompts`]), detects and judges each image.
    /// `on_progress(done, total)` counts images.
    ///
    /// # Errors
    /// [`EvalError::Config`] before any image is asked for when a prompt or image count is 0; whatever
    /// `generate` returns; [`EvalError::Generator`] when it returns the wrong number of images.
    pub fn run<E: From<EvalError>>(
        &self,
        detector: &DetectorConfig,
        batch_size: usize,
        mut generate: impl FnMut(&[String]) -> Result<Vec<RgbImage>, E>,
        mut on_progress: impl FnMut(usize, usize),
    ) -> Result<BenchmarkReport, E> {
        self.check()?;
        let prompts = self.prompts();
        let requests: Vec<(usize, String)> = prompts
            .iter()
            .enumerate()
            .flat_map(|(i, scene)| std::iter::repeat_n((i, scene.caption.clone()), self.images_per_prompt))
            .collect();
        let mut passed: Vec<Vec<bool>> = vec![Vec::new(); prompts.len()];
        for chunk in requests.chunks(batch_size.max(1)) {
            let captions: Vec<String> = chunk.iter().map(|(_, c)| c.clone()).collect();
            let images = generate(&captions)?;
            if images.len() != captions.len() {
                return Err(
                    EvalError::Generator(format!("asked for {} images, got {}", captions.len(), images.len())).into(),
                );
            }
            let verdicts: Vec<bool> = images
                .par_iter()
                .zip(chunk)
                .map(|(image, (i, _))| judge(&prompts[*i].spec, &detect(image, detector)))
                .collect();
            for ((i, _), verdict) in chunk.iter().zip(verdicts) {
                passed[*i].push(verdict);
            }
            on_progress(passed.iter().map(Vec::len).sum(), requests.len());
        }
        let results = prompts
            .into_iter()
            .zip(passed)
            .map(|(scene, passed)| PromptResult {
                caption: scene.caption,
                spec: scene.spec,
                passed,
            })
            .collect();
        Ok(BenchmarkReport::from_prompts(results))
    }
}

/// How the detector does against its oracle on one category.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CategoryCalibration {
    /// The category.
    pub category: Category,
    /// Pass rate on ground-truth renders with their own prompt (should be ≥ 0.98).
    pub truth: f64,
    /// Pass rate on renders paired with another prompt of the category.
    pub wrong_caption: f64,
    /// The oracle's pass rate on those same pairs: the chance level `wrong_caption` should stay near.
    pub wrong_caption_chance: f64,
    /// Pass rate on renders paired with their prompt changed in one detail ([`near_miss`]); chance is 0.
    pub near_miss: f64,
    /// Pass rate on uniform noise images with the category's prompts (chance: 0, noise holds no object).
    pub noise: f64,
}

/// The detector's calibration at one resolution, per category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Image side in pixels.
    pub resolution: u32,
    /// One entry per category, in GenEval's order.
    pub categories: Vec<CategoryCalibration>,
}

impl Calibration {
    /// A Markdown table of the calibration.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "| {} px | truth | wrong caption | its chance | near miss | noise |\n|---|---|---|---|---|---|\n",
            self.resolution
        );
        for c in &self.categories {
            out += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                c.category.name(),
                c.truth,
                c.wrong_caption,
                c.wrong_caption_chance,
                c.near_miss,
                c.noise
            );
        }
        out
    }
}

/// Calibrates the detector at `resolution` on the benchmark's prompts (one render each): see the module docs.
///
/// The wrong caption of a scene is the next prompt of its category (in the benchmark's order) that states
/// something else. Noise images are uniform in RGB, drawn from the benchmark's seed.
pub fn calibrate(
    benchmark: &CompositionalBenchmark,
    resolution: u32,
    detector: &DetectorConfig,
) -> Result<Calibration, EvalError> {
    calibrate_through(benchmark, resolution, detector, Ok)
}

/// As [`calibrate`], with the ground-truth renders passed through `transform` (in batches) before detection: e.g.
/// a VQ tokenizer's encode–decode round trip, which asks whether the detector still reads what the tokenizer
/// keeps. Noise images are not transformed.
pub fn calibrate_through(
    benchmark: &CompositionalBenchmark,
    resolution: u32,
    detector: &DetectorConfig,
    mut transform: impl FnMut(Vec<RgbImage>) -> Result<Vec<RgbImage>, EvalError>,
) -> Result<Calibration, EvalError> {
    let scenes = benchmark.prompts();
    let per_category = Category::ALL.len();
    let wrong: Vec<PromptSpec> = (0..scenes.len())
        .map(|i| {
            let mut j = (i + per_category) % scenes.len();
            while scenes[j].spec == scenes[i].spec && j != i {
                j = (j + per_category) % scenes.len();
            }
            scenes[j].spec
        })
        .collect();
    struct Verdicts {
        truth: bool,
        wrong: bool,
        wrong_oracle: bool,
        near_miss: bool,
        noise: bool,
    }
    let mut verdicts: Vec<Verdicts> = Vec::with_capacity(scenes.len());
    // In chunks, so that large renders are not all held at once.
    for (chunk, wrong) in scenes.chunks(32).zip(wrong.chunks(32)) {
        let renders = chunk
            .par_iter()
            .map(|scene| scene.render(resolution))
            .collect::<Result<Vec<_>, _>>()?;
        let images = transform(renders)?;
        if images.len() != chunk.len() {
            return Err(EvalError::Generator(format!(
                "the transform returned {} images for {}",
                images.len(),
                chunk.len()
            )));
        }
        let judged: Vec<Verdicts> = chunk
            .par_iter()
            .zip(images)
            .zip(wrong)
            .map(|((scene, image), wrong)| {
                let found = detect(&image, detector);
                let oracle: Vec<Detection> = scene.objects.iter().map(Detection::from).collect();
                let noise = detect(&noise_image(resolution, benchmark.seed ^ scene.index), detector);
                Verdicts {
                    truth: judge(&scene.spec, &found),
                    wrong: judge(wrong, &found),
                    wrong_oracle: judge(wrong, &oracle),
                    near_miss: judge(&near_miss(&scene.spec), &found),
                    noise: judge(&scene.spec, &noise),
                }
            })
            .collect();
        verdicts.extend(judged);
    }
    let mut by_category: BTreeMap<Category, Vec<&Verdicts>> = BTreeMap::new();
    for (scene, v) in scenes.iter().zip(&verdicts) {
        by_category.entry(scene.spec.category()).or_default().push(v);
    }
    let categories = Category::ALL
        .iter()
        .map(|&category| {
            let vs = by_category.get(&category).map_or(&[][..], Vec::as_slice);
            let rate = |f: fn(&Verdicts) -> bool| vs.iter().filter(|v| f(v)).count() as f64 / vs.len().max(1) as f64;
            CategoryCalibration {
                category,
                truth: rate(|v| v.truth),
                wrong_caption: rate(|v| v.wrong),
                wrong_caption_chance: rate(|v| v.wrong_oracle),
                near_miss: rate(|v| v.near_miss),
                noise: rate(|v| v.noise),
            }
        })
        .collect();
    Ok(Calibration { resolution, categories })
}

/// The prompt changed in the one detail its category tests, so that the true objects never satisfy it: another
/// shape (single object), the third shape for the second (two objects), one more or one fewer (counting), the next
/// colour (colours), the converse relation (position), the two colours swapped (colour attribution).
pub fn near_miss(spec: &PromptSpec) -> PromptSpec {
    let next_shape =
        |s: Shape| Shape::ALL[(Shape::ALL.iter().position(|&t| t == s).expect("a shape") + 1) % Shape::ALL.len()];
    match *spec {
        PromptSpec::SingleObject { shape } => PromptSpec::SingleObject {
            shape: next_shape(shape),
        },
        PromptSpec::TwoObjects { shapes: [a, b] } => {
            let third = Shape::ALL
                .into_iter()
                .find(|&s| s != a && s != b)
                .expect("three shapes");
            PromptSpec::TwoObjects { shapes: [a, third] }
        }
        PromptSpec::Counting { shape, count } => PromptSpec::Counting {
            shape,
            count: if count < 4 { count + 1 } else { count - 1 },
        },
        PromptSpec::Colours { shape, colour } => {
            let next =
                Colour::ALL[(Colour::ALL.iter().position(|&c| c == colour).expect("a colour") + 1) % Colour::ALL.len()];
            PromptSpec::Colours { shape, colour: next }
        }
        PromptSpec::Position {
            first,
            relation,
            second,
        } => PromptSpec::Position {
            first,
            relation: relation.converse(),
            second,
        },
        PromptSpec::ColourAttribution { first, second } => PromptSpec::ColourAttribution {
            first: (second.0, first.1),
            second: (first.0, second.1),
        },
    }
}

/// An image of uniform RGB noise.
pub fn noise_image(resolution: u32, seed: u64) -> RgbImage {
    let mut rng = token_shuffle_data::rng::SplitMix64::new(seed, 0x4e6f697365);
    RgbImage::from_fn(resolution, resolution, |_, _| {
        image::Rgb(std::array::from_fn(|_| rng.below(256) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_shuffle_data::scenes::Relation;

    #[test]
    fn the_seen_pairs_diagnostic_asks_the_same_categories_with_no_held_out_combination() {
        let held_out = CompositionalBenchmark::default();
        let seen = CompositionalBenchmark {
            seen_pairs: true,
            ..held_out
        };
        let category_of =
            |b: &CompositionalBenchmark| b.prompts().iter().map(|s| s.spec.category()).collect::<Vec<_>>();
        assert_eq!(category_of(&seen), category_of(&held_out));
        for scene in seen.prompts() {
            assert!(!scene.spec.is_held_out(), "{}", scene.caption);
        }
        for scene in held_out.prompts() {
            assert_eq!(
                scene.spec.is_held_out(),
                scene.spec.category().has_held_out_part(),
                "{}",
                scene.caption
            );
        }
    }

    #[test]
    fn colour_verdicts_are_grouped_by_colour_and_by_shape() {
        let colours = |colour, shape, passed: Vec<bool>| PromptResult {
            caption: String::new(),
            spec: PromptSpec::Colours { shape, colour },
            passed,
        };
        let report = BenchmarkReport::from_prompts(vec![
            colours(Colour::Yellow, Shape::Circle, vec![false, false]),
            colours(Colour::Yellow, Shape::Square, vec![true, false]),
            colours(Colour::Blue, Shape::Circle, vec![true, true]),
            PromptResult {
                caption: String::new(),
                spec: PromptSpec::SingleObject { shape: Shape::Triangle },
                passed: vec![true],
            },
        ]);
        let [by_colour, by_shape] = report.colours_by_colour_and_shape();
        let mut by_colour = by_colour;
        by_colour.sort();
        assert_eq!(by_colour, [("blue", 2, 2), ("yellow", 1, 4)]);
        assert_eq!(
            by_shape,
            [("circle", 2, 4), ("square", 1, 2)],
            "no triangle: only colour prompts count"
        );
    }

    fn at(shape: Shape, colour: Colour, center: [f64; 2]) -> Detection {
        Detection {
            shape,
            colour,
            center,
            size: 0.2,
            fit: 1.0,
        }
    }

    #[test]
    fn the_judge_applies_geneval_rules() {
        use Colour::*;
        use Shape::*;
        let scene = [
            at(Circle, Red, [0.2, 0.5]),
            at(Square, Blue, [0.8, 0.5]),
            at(Circle, Red, [0.5, 0.2]),
        ];
        assert!(judge(&PromptSpec::SingleObject { shape: Circle }, &scene));
        assert!(!judge(&PromptSpec::SingleObject { shape: Triangle }, &scene));
        assert!(judge(
            &PromptSpec::TwoObjects {
                shapes: [Square, Circle]
            },
            &scene
        ));
        assert!(judge(
            &PromptSpec::Counting {
                shape: Circle,
                count: 2
            },
            &scene
        ));
        assert!(
            !judge(
                &PromptSpec::Counting {
                    shape: Circle,
                    count: 1
                },
                &scene
            ),
            "counting is exact"
        );
        assert!(judge(
            &PromptSpec::Colours {
                shape: Circle,
                colour: Red
            },
            &scene
        ));
        assert!(!judge(
            &PromptSpec::Colours {
                shape: Square,
                colour: Red
            },
            &scene
        ));
        let left = PromptSpec::Position {
            first: Circle,
            relation: Relation::LeftOf,
            second: Square,
        };
        assert!(judge(&left, &scene));
        assert!(!judge(
            &PromptSpec::Position {
                first: Circle,
                relation: Relation::RightOf,
                second: Square
            },
            &scene
        ));
        // Centres 0.03 apart: under the margin.
        let close = [at(Circle, Red, [0.47, 0.5]), at(Square, Blue, [0.5, 0.5])];
        assert!(!judge(&left, &close));
        assert!(judge(
            &PromptSpec::ColourAttribution {
                first: (Blue, Square),
                second: (Red, Circle)
            },
            &scene
        ));
        assert!(
            !judge(
                &PromptSpec::ColourAttribution {
                    first: (Red, Square),
                    second: (Blue, Circle)
                },
                &scene
            ),
            "colours swapped"
        );
    }

    #[test]
    fn scores_are_means_over_images_then_over_categories() {
        let prompts: Vec<PromptResult> = CompositionalBenchmark {
            seed: 1,
            prompts_per_category: 2,
            images_per_prompt: 2,
            seen_pairs: false,
        }
        .prompts()
        .into_iter()
        .map(|scene| {
            // Single-object prompts pass 3 of 4 images; every other category passes nothing.
            let passed = if scene.spec.category() == Category::SingleObject {
                vec![true, scene.index == 0]
            } else {
                vec![false, false]
            };
            PromptResult {
                caption: scene.caption,
                spec: scene.spec,
                passed,
            }
        })
        .collect();
        let report = BenchmarkReport::from_prompts(prompts);
        assert_eq!(
            report.categories[0],
            CategoryScore {
                category: Category::SingleObject,
                passed: 3,
                total: 4
            }
        );
        assert!((report.overall - 0.75 / 6.0).abs() < 1e-12);
        assert!(
            report
                .markdown_row("x")
                .starts_with("| x | 0.75 (0.30–0.95) | 0.00 (0.00–0.49) |"),
            "{}",
            report.markdown_row("x")
        );
        let (low, high) = report.overall_interval;
        assert!(
            low <= report.overall && report.overall <= high && high > low,
            "{low} {high}"
        );
    }

    #[test]
    fn wilson_intervals_match_the_textbook_values() {
        let score = |passed, total| {
            CategoryScore {
                category: Category::Colours,
                passed,
                total,
            }
            .interval()
        };
        let close = |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 5e-4 && (b - d).abs() < 5e-4;
        // Wilson (1927) 95% intervals, as statsmodels' proportion_confint(method="wilson") gives them.
        assert!(close(score(16, 32), (0.3364, 0.6636)), "{:?}", score(16, 32));
        assert!(close(score(0, 32), (0.0, 0.1072)), "{:?}", score(0, 32));
        assert!(close(score(32, 32), (0.8928, 1.0)), "{:?}", score(32, 32));
        assert_eq!(score(0, 0), (0.0, 1.0));
    }

    #[test]
    fn ground_truth_renders_score_full_marks_and_a_wrong_count_of_images_is_named() {
        let benchmark = CompositionalBenchmark {
            seed: 2,
            prompts_per_category: 3,
            images_per_prompt: 2,
            seen_pairs: false,
        };
        let truth: BTreeMap<String, Scene> = benchmark
            .prompts()
            .into_iter()
            .map(|s| (s.caption.clone(), s))
            .collect();
        let render = |captions: &[String]| -> Result<Vec<RgbImage>, EvalError> {
            Ok(captions.iter().map(|c| truth[c].render(64).unwrap()).collect())
        };
        let mut progress = Vec::new();
        let report = benchmark
            .run(&DetectorConfig::default(), 5, render, |done, total| {
                progress.push((done, total))
            })
            .unwrap();
        assert_eq!(report.overall, 1.0, "{report:?}");
        assert_eq!(progress.last(), Some(&(36, 36)));
        assert!(report.prompts.iter().all(|p| p.passed.len() == 2));

        let short = |_: &[String]| -> Result<Vec<RgbImage>, EvalError> { Ok(Vec::new()) };
        let err = benchmark
            .run(&DetectorConfig::default(), 4, short, |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("asked for 4 images, got 0"), "{err}");

        let none = CompositionalBenchmark {
            images_per_prompt: 0,
            seen_pairs: false,
            ..benchmark
        };
        let never = |_: &[String]| -> Result<Vec<RgbImage>, EvalError> { panic!("nothing is generated") };
        let err = none.run(&DetectorConfig::default(), 4, never, |_, _| {}).unwrap_err();
        assert!(
            err.to_string().contains("images per prompt (--images-per-prompt) is 0"),
            "{err}"
        );
    }

    #[test]
    fn calibration_judges_the_transformed_renders() {
        let benchmark = CompositionalBenchmark {
            seed: 3,
            prompts_per_category: 4,
            images_per_prompt: 1,
            seen_pairs: false,
        };
        // Blank images hold nothing: every prompt fails, whatever the renders were.
        let blank = |images: Vec<RgbImage>| -> Result<Vec<RgbImage>, EvalError> {
            Ok(images
                .iter()
                .map(|i| {
                    RgbImage::from_pixel(
                        i.width(),
                        i.height(),
                        image::Rgb(token_shuffle_data::scenes::BACKGROUND),
                    )
                })
                .collect())
        };
        let calibration = calibrate_through(&benchmark, 64, &DetectorConfig::default(), blank).unwrap();
        assert!(
            calibration
                .categories
                .iter()
                .all(|c| c.truth == 0.0 && c.wrong_caption == 0.0),
            "{calibration:?}"
        );
        let lossy = |mut images: Vec<RgbImage>| -> Result<Vec<RgbImage>, EvalError> {
            images.pop();
            Ok(images)
        };
        let err = calibrate_through(&benchmark, 64, &DetectorConfig::default(), lossy).unwrap_err();
        assert!(err.to_string().contains("returned 23 images for 24"), "{err}");
    }

    /// The calibration the issue asks for: ≥ 98% of prompts pass on ground-truth renders at 64, 256 and 1024 px in
    /// every category; on noise and on wrong captions the pass rate stays near chance.
    #[test]
    fn the_detector_is_calibrated() {
        let detector = DetectorConfig::default();
        for (resolution, prompts) in [(64, 50), (256, 50), (1024, 20)] {
            let benchmark = CompositionalBenchmark {
                seed: 7,
                prompts_per_category: prompts,
                images_per_prompt: 1,
                seen_pairs: false,
            };
            let calibration = calibrate(&benchmark, resolution, &detector).unwrap();
            println!("{}", calibration.markdown());
            for c in &calibration.categories {
                let name = format!("{} px, {}", resolution, c.category.name());
                assert!(c.truth >= 0.98, "{name}: truth {}", c.truth);
                assert!(
                    (c.wrong_caption - c.wrong_caption_chance).abs() <= 0.05,
                    "{name}: wrong captions {} vs chance {}",
                    c.wrong_caption,
                    c.wrong_caption_chance
                );
                assert!(c.near_miss <= 0.02, "{name}: near misses {}", c.near_miss);
                assert!(c.noise <= 0.02, "{name}: noise {}", c.noise);
            }
        }
    }
}
