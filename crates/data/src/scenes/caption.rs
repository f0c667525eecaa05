//! Captions from varied templates: the same prompt is worded several ways, so that a model learns the content
//! words, not one sentence.

use super::layout::PromptSpec;
use super::vocab::{Colour, Shape, number_word};
use crate::rng::SplitMix64;

/// The frames a prompt's words are set in.
pub const FRAMES: [&str; 5] = [
    "a photo of {}",
    "{}",
    "an image of {}",
    "{} on a plain background",
    "a simple drawing of {}",
];

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn noun_phrase(colour: Option<Colour>, shape: Shape) -> String {
    match colour {
        Some(c) => format!("{} {} {}", article(c.name()), c.name(), shape.name()),
        None => format!("{} {}", article(shape.name()), shape.name()),
    }
}

/// The prompt's content words, as GenEval phrases them ("a red circle to the left of a blue square").
pub fn prompt_words(spec: &PromptSpec) -> String {
    match *spec {
        PromptSpec::SingleObject { shape } => noun_phrase(None, shape),
        PromptSpec::TwoObjects { shapes: [a, b] } => format!("{} and {}", noun_phrase(None, a), noun_phrase(None, b)),
        PromptSpec::Counting { shape, count } => {
            format!(
                "{} {}",
                number_word(count),
                if count == 1 { shape.name() } else { shape.plural() }
            )
        }
        PromptSpec::Colours { shape, colour } => noun_phrase(Some(colour), shape),
        PromptSpec::Position {
            first,
            relation,
            second,
        } => {
            format!(
                "{} {} {}",
                noun_phrase(None, first),
                relation.phrase(),
                noun_phrase(None, second)
            )
        }
        PromptSpec::ColourAttribution { first, second } => format!(
            "{} and {}",
            noun_phrase(Some(first.0), first.1),
            noun_phrase(Some(second.0), second.1)
        ),
    }
}

/// A caption for the prompt in a frame drawn from `rng`.
pub(crate) fn caption(spec: &PromptSpec, rng: &mut SplitMix64) -> String {
    rng.pick(&FRAMES).replace("{}", &prompt_words(spec))
}
