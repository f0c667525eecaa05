//! The synthetic scene corpus: the embedded default data set, generated, never downloaded.
//!
//! Scenes of simple shapes ([`Shape`]) in named colours ([`Colour`]) on a plain background, each with a caption
//! from varied templates and its ground truth (every object's shape, colour and box). Scene `i` of a
//! [`SceneCorpus`] is a pure function of `(seed, split, i)`: the same on every machine. Categories come in turn,
//! covering GenEval's six ([`Category`]), and a documented held-out set ([`HELD_OUT`]) never appears in the
//! training split, so that evaluation measures generalisation.
//!
//! ```
//! use token_shuffle_data::scenes::{SceneCorpus, Split};
//!
//! let corpus = SceneCorpus::new(42, Split::Train, 1000);
//! let scene = corpus.scene(3);
//! let image = scene.render(64)?; // 64×64 sRGB, anti-aliased
//! assert_eq!(image.dimensions(), (64, 64));
//! println!("{}: {:?}", scene.caption, scene.objects);
//! # Ok::<(), token_shuffle_data::DataError>(())
//! ```

mod caption;
mod layout;
mod render;
mod vocab;

pub use caption::{FRAMES, prompt_words};
pub use layout::{HELD_OUT, HeldOut, PromptSpec, SceneObject, Split};
pub use render::{render_objects, signed_distance};
pub use vocab::{BACKGROUND, Category, Colour, Relation, Shape};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// The resolutions scenes can be rendered at.
pub const RESOLUTIONS: std::ops::RangeInclusive<u32> = 32..=2048;

/// Checks that scenes can be rendered at `resolution`.
///
/// # Errors
/// [`DataError::Resolution`] outside [`RESOLUTIONS`].
pub fn check_resolution(resolution: u32) -> Result<(), DataError> {
    if RESOLUTIONS.contains(&resolution) {
        Ok(())
    } else {
        Err(DataError::Resolution {
            resolution,
            allowed: "32 to 2048 px for synthetic scenes",
        })
    }
}

/// One generated scene: its prompt, its objects and its caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Index in its corpus.
    pub index: u64,
    /// Split it belongs to.
    pub split: Split,
    /// What the caption states.
    pub spec: PromptSpec,
    /// Every object, with its ground-truth shape, colour and box.
    pub objects: Vec<SceneObject>,
    /// The caption.
    pub caption: String,
}

impl Scene {
    /// Renders the scene at `resolution × resolution` pixels.
    ///
    /// # Errors
    /// [`DataError::Resolution`] outside [`RESOLUTIONS`].
    pub fn render(&self, resolution: u32) -> Result<RgbImage, DataError> {
        check_resolution(resolution)?;
        Ok(render_objects(&self.objects, resolution))
    }
}

/// A seeded, deterministic corpus of `len` scenes of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneCorpus {
    /// The seed that defines the corpus.
    pub seed: u64,
    /// Which split.
    pub split: Split,
    /// Number of scenes.
    pub len: usize,
}

impl SceneCorpus {
    /// A corpus of `len` scenes of `split`, defined by `seed`.
    pub fn new(seed: u64, split: Split, len: usize) -> Self {
        Self { seed, split, len }
    }

    /// Scene `index` (any index works; `len` bounds only iteration and datasets).
    pub fn scene(&self, index: u64) -> Scene {
        let (spec, objects, mut rng) = layout::sample_scene(self.seed, self.split, index);
        let caption = caption::caption(&spec, &mut rng);
        Scene {
            index,
            split: self.split,
            spec,
            objects,
            caption,
        }
    }

    /// Every scene of the corpus, in order.
    pub fn scenes(&self) -> impl Iterator<Item = Scene> + '_ {
        (0..self.len as u64).map(|i| self.scene(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_scenes_and_pixels() {
        let a = SceneCorpus::new(7, Split::Train, 30);
        let b = SceneCorpus::new(7, Split::Train, 30);
        for (x, y) in a.scenes().zip(b.scenes()) {
            assert_eq!(x, y);
            assert_eq!(x.render(64).unwrap(), y.render(64).unwrap());
        }
        let other = SceneCorpus::new(8, Split::Train, 30);
        assert!(a.scenes().zip(other.scenes()).any(|(x, y)| x.objects != y.objects));
    }

    #[test]
    fn captions_agree_with_the_objects() {
        for split in [Split::Train, Split::Valid, Split::HeldOut] {
            for scene in SceneCorpus::new(3, split, 600).scenes() {
                let spec = scene.spec;
                assert!(scene.caption.contains(&prompt_words(&spec)), "{}", scene.caption);
                let shapes: Vec<Shape> = scene.objects.iter().map(|o| o.shape).collect();
                assert_eq!(shapes, spec.object_shapes(), "{}", scene.caption);
                for (i, object) in scene.objects.iter().enumerate() {
                    if let Some(colour) = spec.named_colour(i) {
                        assert_eq!(object.colour, colour, "{}", scene.caption);
                    }
                    let [x0, y0, x1, y1] = object.bbox();
                    assert!(
                        x0 >= 0.0 && y0 >= 0.0 && x1 <= 1.0 && y1 <= 1.0,
                        "{}: object off the canvas",
                        scene.caption
                    );
                }
                if let PromptSpec::Position { relation, .. } = spec {
                    assert!(
                        relation.holds(scene.objects[0].center, scene.objects[1].center, 0.0),
                        "{}",
                        scene.caption
                    );
                }
                for (i, a) in scene.objects.iter().enumerate() {
                    for b in &scene.objects[i + 1..] {
                        let ([ax0, ay0, ax1, ay1], [bx0, by0, bx1, by1]) = (a.bbox(), b.bbox());
                        assert!(
                            ax1 <= bx0 || bx1 <= ax0 || ay1 <= by0 || by1 <= ay0,
                            "{}: objects overlap",
                            scene.caption
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_category_is_covered_in_every_split() {
        for split in [Split::Train, Split::Valid, Split::HeldOut] {
            let seen: std::collections::BTreeSet<Category> = SceneCorpus::new(1, split, 12)
                .scenes()
                .map(|s| s.spec.category())
                .collect();
            assert_eq!(seen.len(), Category::ALL.len(), "{split:?}");
        }
        let counts: std::collections::BTreeSet<usize> = SceneCorpus::new(1, Split::Train, 600)
            .scenes()
            .filter_map(|s| match s.spec {
                PromptSpec::Counting { count, .. } => Some(count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, [1, 2, 3, 4].into_iter().collect());
    }

    #[test]
    fn held_out_combinations_never_appear_in_training() {
        for split in [Split::Train, Split::Valid] {
            for scene in SceneCorpus::new(11, split, 3000).scenes() {
                assert!(!scene.spec.is_held_out(), "{}", scene.caption);
                for o in &scene.objects {
                    assert!(
                        !HELD_OUT.colour_shapes.contains(&(o.colour, o.shape)),
                        "{} renders a held-out {:?} {:?}",
                        scene.caption,
                        o.colour,
                        o.shape
                    );
                }
                for &(shape, count) in HELD_OUT.counts {
                    assert_ne!(
                        scene.objects.iter().filter(|o| o.shape == shape).count(),
                        count,
                        "{}",
                        scene.caption
                    );
                }
            }
        }
        // …while the held-out split states them, in every category that has a held-out part.
        for scene in SceneCorpus::new(11, Split::HeldOut, 60).scenes() {
            assert_eq!(
                scene.spec.is_held_out(),
                scene.spec.category().has_held_out_part(),
                "{}",
                scene.caption
            );
        }
    }

    #[test]
    fn layout_is_the_same_at_every_resolution() {
        // Each object's ink centroid, measured in pixels at 64 and 1024 px, agrees in normalised units.
        let corpus = SceneCorpus::new(5, Split::Train, 12);
        for scene in corpus.scenes() {
            let (small, large) = (scene.render(64).unwrap(), scene.render(1024).unwrap());
            for object in &scene.objects {
                let centroid = |image: &RgbImage| {
                    let r = image.width() as f64;
                    let [x0, y0, x1, y1] = object.bbox().map(|v| (v * r) as u32);
                    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
                    for y in y0..(y1 + 1).min(image.height()) {
                        for x in x0..(x1 + 1).min(image.width()) {
                            let p = image.get_pixel(x, y).0;
                            let ink = p
                                .iter()
                                .zip(&BACKGROUND)
                                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                                .sum::<f64>();
                            sx += ink * (x as f64 + 0.5);
                            sy += ink * (y as f64 + 0.5);
                            n += ink;
                        }
                    }
                    [sx / n / r, sy / n / r]
                };
                let (a, b) = (centroid(&small), centroid(&large));
                assert!(
                    (a[0] - b[0]).abs() < 1.0 / 64.0 && (a[1] - b[1]).abs() < 1.0 / 64.0,
                    "{a:?} vs {b:?}"
                );
            }
        }
        assert!(matches!(
            corpus.scene(0).render(16),
            Err(DataError::Resolution { resolution: 16, .. })
        ));
    }
}
