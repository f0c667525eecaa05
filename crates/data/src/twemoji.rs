//! Twemoji: a real, small image-text corpus that ships inside a crate, so it needs no download.
//!
//! Every emoji that the `emojis` crate lists (its default skin tone) and that `twemoji-assets` has a 72×72 PNG
//! for, captioned with its Unicode name ("red apple", "smiling face with sunglasses"). Transparent pixels are
//! composited over white.
//!
//! Twemoji graphics are © Twitter, Inc. and other contributors, licensed under CC-BY 4.0
//! (<https://creativecommons.org/licenses/by/4.0/>), from <https://github.com/jdecked/twemoji>.

use rayon::prelude::*;
use twemoji_assets::png::PngTwemojiAsset;

use crate::folder::{LoadReport, Skipped, split_decoded};
use crate::imaging::decode_square;
use crate::{DataError, ImageCaption};

/// An emoji's PNG bytes and its caption.
#[derive(Debug, Clone, Copy)]
pub struct TwemojiEntry {
    /// The emoji itself, e.g. "🍎"; also the item's id.
    pub emoji: &'static str,
    /// Its Unicode name, e.g. "red apple".
    pub name: &'static str,
    /// The 72×72 RGBA PNG.
    pub png: &'static [u8],
}

/// Every emoji with a Twemoji PNG, in the `emojis` crate's order.
pub fn twemoji_entries() -> Vec<TwemojiEntry> {
    emojis::iter()
        .filter_map(|e| {
            PngTwemojiAsset::from_emoji(e.as_str()).map(|png| TwemojiEntry {
                emoji: e.as_str(),
                name: e.name(),
                png: **png,
            })
        })
        .collect()
}

/// The Twemoji corpus at `resolution` px, decoded in parallel and split by a hash of each emoji (train, valid).
///
/// # Errors
/// [`DataError::Resolution`] for a resolution of 0.
pub fn load_twemoji(
    resolution: u32,
    valid_fraction: f64,
) -> Result<(Vec<ImageCaption>, Vec<ImageCaption>, LoadReport), DataError> {
    if resolution == 0 {
        return Err(DataError::Resolution {
            resolution,
            allowed: "at least 1 px",
        });
    }
    let entries = twemoji_entries();
    let decoded: Vec<Result<ImageCaption, Skipped>> = entries
        .par_iter()
        .map(|e| {
            decode_square(e.png, resolution)
                .map(|image| ImageCaption {
                    id: e.emoji.to_string(),
                    caption: e.name.to_string(),
                    image,
                })
                .map_err(|reason| Skipped {
                    path: format!("twemoji {} ({})", e.emoji, e.name).into(),
                    reason,
                })
        })
        .collect();
    Ok(split_decoded(decoded, valid_fraction))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_large_and_captioned_with_names() {
        let entries = twemoji_entries();
        assert!(entries.len() > 1500, "only {} emojis", entries.len());
        let apple = entries
            .iter()
            .find(|e| e.emoji == "🍎")
            .expect("red apple is in Twemoji");
        assert_eq!(apple.name, "red apple");
        let image = decode_square(apple.png, 32).unwrap();
        // A red apple: the centre pixel is clearly red, the corner is the white matte.
        let [r, g, b] = image.get_pixel(16, 18).0;
        assert!(r > 150 && g < 100 && b < 100, "centre {:?}", [r, g, b]);
        assert_eq!(image.get_pixel(0, 0).0, [255, 255, 255]);
    }
}
