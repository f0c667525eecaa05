//! The words of the scene grammar: shapes, colours, relations, and GenEval's categories.

use serde::{Deserialize, Serialize};

/// A shape an object can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An upward-pointing isosceles triangle.
    Triangle,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// The noun, singular.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }

    /// The noun, plural.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
        }
    }
}

/// A named colour, with the sRGB value it is painted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
    /// Cyan.
    Cyan,
    /// Pink.
    Pink,
}

impl Colour {
    /// Every colour.
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
        Colour::Cyan,
        Colour::Pink,
    ];

    /// The adjective.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
            Colour::Cyan => "cyan",
            Colour::Pink => "pink",
        }
    }

    /// The sRGB value objects of this colour are painted in. Chosen far apart in hue so that a detector can name
    /// them after a VQ round trip.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 30, 30],
            Colour::Green => [30, 160, 50],
            Colour::Blue => [30, 70, 220],
            Colour::Yellow => [240, 210, 20],
            Colour::Purple => [130, 40, 180],
            Colour::Orange => [245, 130, 20],
            Colour::Cyan => [20, 200, 210],
            Colour::Pink => [245, 120, 190],
        }
    }
}

/// The plain background every scene is painted on.
pub const BACKGROUND: [u8; 3] = [240, 240, 236];

/// A spatial relation between two objects, as GenEval's position prompts use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// The first object's centre is clearly left of the second's.
    LeftOf,
    /// The first object's centre is clearly right of the second's.
    RightOf,
    /// The first object's centre is clearly above the second's.
    Above,
    /// The first object's centre is clearly below the second's.
    Below,
}

impl Relation {
    /// Every relation.
    pub const ALL: [Relation; 4] = [Relation::LeftOf, Relation::RightOf, Relation::Above, Relation::Below];

    /// The phrase between the two objects.
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
        }
    }

    /// The same relation seen from the other object: "a above b" is "b below a".
    pub fn converse(self) -> Relation {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
        }
    }

    /// Whether centre `a` stands in this relation to centre `b` (image coordinates: y grows downwards), with
    /// the offset along the relation's axis larger than `margin` and larger than the offset across it.
    pub fn holds(self, a: [f64; 2], b: [f64; 2], margin: f64) -> bool {
        let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
        let (along, across) = match self {
            Relation::LeftOf => (-dx, dy),
            Relation::RightOf => (dx, dy),
            Relation::Above => (-dy, dx),
            Relation::Below => (dy, dx),
        };
        along > margin && along > across.abs()
    }
}

/// GenEval's six prompt categories, which the corpus covers and the benchmark scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// One object of a named shape.
    SingleObject,
    /// Two objects of two named, different shapes.
    TwoObjects,
    /// 1–4 objects of one named shape.
    Counting,
    /// One object of a named colour and shape.
    Colours,
    /// Two objects in a named relation.
    Position,
    /// Two objects, each with its own named colour.
    ColourAttribution,
}

impl Category {
    /// Every category, in GenEval's order.
    pub const ALL: [Category; 6] = [
        Category::SingleObject,
        Category::TwoObjects,
        Category::Counting,
        Category::Colours,
        Category::Position,
        Category::ColourAttribution,
    ];

    /// Whether the corpus holds out some of this category's prompts (see `HELD_OUT`); single- and two-object
    /// prompts have no held-out part.
    pub fn has_held_out_part(self) -> bool {
        !matches!(self, Category::SingleObject | Category::TwoObjects)
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Category::SingleObject => "single_object",
            Category::TwoObjects => "two_objects",
            Category::Counting => "counting",
            Category::Colours => "colours",
            Category::Position => "position",
            Category::ColourAttribution => "colour_attribution",
        }
    }
}

/// Number words for counting captions.
pub(crate) fn number_word(n: usize) -> &'static str {
    ["zero", "one", "two", "three", "four"][n]
}
