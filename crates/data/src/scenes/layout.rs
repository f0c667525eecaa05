//! What a scene is (its prompt and its objects), how one is sampled, and which combinations are held out.

use serde::{Deserialize, Serialize};

use super::vocab::{Category, Colour, Relation, Shape};
use crate::rng::SplitMix64;

/// What a prompt asks for: the part of a scene that a caption states and the benchmark checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "category", rename_all = "snake_case")]
pub enum PromptSpec {
    /// "a circle"
    SingleObject {
        /// The object's shape.
        shape: Shape,
    },
    /// "a circle and a square" (two different shapes)
    TwoObjects {
        /// The two shapes.
        shapes: [Shape; 2],
    },
    /// "three triangles"
    Counting {
        /// The shape of every object.
        shape: Shape,
        /// How many, 1–4.
        count: usize,
    },
    /// "a red circle"
    Colours {
        /// The object's shape.
        shape: Shape,
        /// The object's colour.
        colour: Colour,
    },
    /// "a circle to the left of a square"
    Position {
        /// The object the relation is about.
        first: Shape,
        /// The relation.
        relation: Relation,
        /// The reference object (a different shape).
        second: Shape,
    },
    /// "a red circle and a blue square"
    ColourAttribution {
        /// The first object's colour and shape.
        first: (Colour, Shape),
        /// The second object's colour and shape (a different shape and colour).
        second: (Colour, Shape),
    },
}

impl PromptSpec {
    /// The GenEval category of the prompt.
    pub fn category(&self) -> Category {
        match self {
            PromptSpec::SingleObject { .. } => Category::SingleObject,
            PromptSpec::TwoObjects { .. } => Category::TwoObjects,
            PromptSpec::Counting { .. } => Category::Counting,
            PromptSpec::Colours { .. } => Category::Colours,
            PromptSpec::Position { .. } => Category::Position,
            PromptSpec::ColourAttribution { .. } => Category::ColourAttribution,
        }
    }

    /// Whether the prompt states a held-out combination (see [`HELD_OUT`]).
    pub fn is_held_out(&self) -> bool {
        match *self {
            PromptSpec::SingleObject { .. } | PromptSpec::TwoObjects { .. } => false,
            PromptSpec::Counting { shape, count } => HELD_OUT.counts.contains(&(shape, count)),
            PromptSpec::Colours { shape, colour } => HELD_OUT.colour_shapes.contains(&(colour, shape)),
            PromptSpec::Position {
                first,
                relation,
                second,
            } => HELD_OUT.relation_held_out(first, relation, second),
            PromptSpec::ColourAttribution { first, second } => {
                HELD_OUT.colour_shapes.contains(&first) || HELD_OUT.colour_shapes.contains(&second)
            }
        }
    }

    /// The shapes that the prompt names, one entry per object it asks for.
    pub fn object_shapes(&self) -> Vec<Shape> {
        match *self {
            PromptSpec::SingleObject { shape } | PromptSpec::Colours { shape, .. } => vec![shape],
            PromptSpec::TwoObjects { shapes } => shapes.to_vec(),
            PromptSpec::Counting { shape, count } => vec![shape; count],
            PromptSpec::Position { first, second, .. } => vec![first, second],
            PromptSpec::ColourAttribution { first, second } => vec![first.1, second.1],
        }
    }

    /// The colour the prompt names for object `i`, if any.
    pub fn named_colour(&self, i: usize) -> Option<Colour> {
        match *self {
            PromptSpec::Colours { colour, .. } => Some(colour),
            PromptSpec::ColourAttribution { first, second } => Some(if i == 0 { first.0 } else { second.0 }),
            _ => None,
        }
    }
}

/// Combinations that never appear in the training split, so that evaluation measures generalisation.
///
/// - `colour_shapes`: never rendered at all in training (no object of that colour and shape, in any category);
///   the held-out `colours` and `colour_attribution` prompts name them.
/// - `relations`: never the prompt of a training `position` scene, in either wording (the triple or its converse:
///   "a square above a circle" is also "a circle below a square").
/// - `counts`: never the prompt of a training `counting` scene, and never rendered (no training scene holds
///   exactly that many objects of that shape).
///
/// `single_object` and `two_objects` prompts have no held-out part: their evaluation prompts are seen
/// combinations in unseen layouts.
#[derive(Debug)]
pub struct HeldOut {
    /// (colour, shape) pairs.
    pub colour_shapes: &'static [(Colour, Shape)],
    /// (first, relation, second) triples.
    pub relations: &'static [(Shape, Relation, Shape)],
    /// (shape, count) pairs.
    pub counts: &'static [(Shape, usize)],
}

/// The corpus's held-out set.
pub const HELD_OUT: HeldOut = HeldOut {
    colour_shapes: &[
        (Colour::Blue, Shape::Triangle),
        (Colour::Yellow, Shape::Circle),
        (Colour::Purple, Shape::Square),
    ],
    relations: &[
        (Shape::Square, Relation::Above, Shape::Circle),
        (Shape::Triangle, Relation::LeftOf, Shape::Square),
    ],
    counts: &[(Shape::Triangle, 3), (Shape::Circle, 4)],
};

impl HeldOut {
    fn relation_held_out(&self, first: Shape, relation: Relation, second: Shape) -> bool {
        self.relations.iter().any(|&(a, r, b)| {
            (a, r, b) == (first, relation, second) || (b, r.converse(), a) == (first, relation, second)
        })
    }
}

/// One object of a scene, in coordinates normalised to the image side: `[0, 1]²`, x to the right, y down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    /// Its shape.
    pub shape: Shape,
    /// Its colour.
    pub colour: Colour,
    /// Centre of its bounding square.
    pub center: [f64; 2],
    /// Side of its bounding square (the circle's diameter, the square's side, the triangle's base and height).
    pub size: f64,
}

impl SceneObject {
    /// Bounding box `[x0, y0, x1, y1]`, normalised.
    pub fn bbox(&self) -> [f64; 4] {
        let h = self.size / 2.0;
        [
            self.center[0] - h,
            self.center[1] - h,
            self.center[0] + h,
            self.center[1] + h,
        ]
    }
}

/// Which part of the corpus a scene comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training scenes: no held-out combination anywhere.
    Train,
    /// Validation scenes: the training distribution, other scenes.
    Valid,
    /// Evaluation prompts: each category's held-out combinations (see [`HELD_OUT`]).
    HeldOut,
}

impl Split {
    fn stream_tag(self) -> u64 {
        match self {
            Split::Train => 0,
            Split::Valid => 1,
            Split::HeldOut => 2,
        }
    }
}

/// Minimum gap between two objects' bounding squares, and from the image border.
const GAP: f64 = 0.04;
/// Minimum offset of centres along a relation's axis, so that the relation is unambiguous.
const RELATION_MARGIN: f64 = 0.2;

/// Samples the prompt and the objects of scene `index` of `split`.
pub(crate) fn sample_scene(seed: u64, split: Split, index: u64) -> (PromptSpec, Vec<SceneObject>, SplitMix64) {
    let mut rng = SplitMix64::new(seed, index.wrapping_mul(4).wrapping_add(split.stream_tag()));
    // Categories in turn, so that every prefix of the corpus is balanced.
    let category = Category::ALL[(index % Category::ALL.len() as u64) as usize];
    let held_out = split == Split::HeldOut && category.has_held_out_part();
    let spec = loop {
        let spec = sample_spec(category, &mut rng, held_out);
        if spec.is_held_out() == held_out {
            break spec;
        }
    };
    let objects = place_objects(&spec, split, &mut rng);
    (spec, objects, rng)
}

fn sample_spec(category: Category, rng: &mut SplitMix64, held_out: bool) -> PromptSpec {
    let two_shapes = |rng: &mut SplitMix64| {
        let a = rng.pick(&Shape::ALL);
        let b = loop {
            let b = rng.pick(&Shape::ALL);
            if b != a {
                break b;
            }
        };
        (a, b)
    };
    match category {
        Category::SingleObject => PromptSpec::SingleObject {
            shape: rng.pick(&Shape::ALL),
        },
        Category::TwoObjects => {
            let (a, b) = two_shapes(rng);
            PromptSpec::TwoObjects { shapes: [a, b] }
        }
        Category::Counting if held_out => {
            let (shape, count) = rng.pick(HELD_OUT.counts);
            PromptSpec::Counting { shape, count }
        }
        Category::Counting => PromptSpec::Counting {
            shape: rng.pick(&Shape::ALL),
            count: 1 + rng.below(4),
        },
        Category::Colours if held_out => {
            let (colour, shape) = rng.pick(HELD_OUT.colour_shapes);
            PromptSpec::Colours { shape, colour }
        }
        Category::Colours => PromptSpec::Colours {
            shape: rng.pick(&Shape::ALL),
            colour: rng.pick(&Colour::ALL),
        },
        Category::Position if held_out => {
            let (first, relation, second) = rng.pick(HELD_OUT.relations);
            PromptSpec::Position {
                first,
                relation,
                second,
            }
        }
        Category::Position => {
            let (first, second) = two_shapes(rng);
            PromptSpec::Position {
                first,
                relation: rng.pick(&Relation::ALL),
                second,
            }
        }
        Category::ColourAttribution => {
            let (a, b) = two_shapes(rng);
            let first = if held_out {
                rng.pick(HELD_OUT.colour_shapes)
            } else {
                (rng.pick(&Colour::ALL), a)
            };
            let second_shape = if first.1 == b { a } else { b };
            let second_colour = loop {
                let c = rng.pick(&Colour::ALL);
                if c != first.0 && !HELD_OUT.colour_shapes.contains(&(c, second_shape)) {
                    break c;
                }
            };
            PromptSpec::ColourAttribution {
                first,
                second: (second_colour, second_shape),
            }
        }
    }
}

/// Places the prompt's objects without overlap (and in the stated relation), colouring unnamed ones at random
/// among the colours the split allows.
fn place_objects(spec: &PromptSpec, split: Split, rng: &mut SplitMix64) -> Vec<SceneObject> {
    let shapes = spec.object_shapes();
    let (low, high) = match shapes.len() {
        1 => (0.25, 0.45),
        2 => (0.18, 0.32),
        _ => (0.14, 0.24),
    };
    'attempt: loop {
        let mut objects: Vec<SceneObject> = Vec::with_capacity(shapes.len());
        for (i, &shape) in shapes.iter().enumerate() {
            let colour = spec.named_colour(i).unwrap_or_else(|| {
                loop {
                    let c = rng.pick(&Colour::ALL);
                    if split == Split::HeldOut || !HELD_OUT.colour_shapes.contains(&(c, shape)) {
                        break c;
                    }
                }
            });
            let size = rng.range(low, high);
            let placed = (0..200).find_map(|_| {
                let half = size / 2.0;
                let center = [
                    rng.range(GAP + half, 1.0 - GAP - half),
                    rng.range(GAP + half, 1.0 - GAP - half),
                ];
                let candidate = SceneObject {
                    shape,
                    colour,
                    center,
                    size,
                };
                let clear = objects.iter().all(|o| apart(o, &candidate));
                clear.then_some(candidate)
            });
            match placed {
                Some(object) => objects.push(object),
                None => continue 'attempt,
            }
        }
        if let PromptSpec::Position { relation, .. } = spec
            && !relation.holds(objects[0].center, objects[1].center, RELATION_MARGIN)
        {
            continue 'attempt;
        }
        return objects;
    }
}

fn apart(a: &SceneObject, b: &SceneObject) -> bool {
    let [ax0, ay0, ax1, ay1] = a.bbox();
    let [bx0, by0, bx1, by1] = b.bbox();
    ax1 + GAP <= bx0 || bx1 + GAP <= ax0 || ay1 + GAP <= by0 || by1 + GAP <= ay0
}
