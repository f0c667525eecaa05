//! One vocabulary for text and images, laid out in one place.

use serde::{Deserialize, Serialize};

/// The LM's vocabulary: text ids first, then the special tokens, then the K image codes (the paper appends the
/// VQ codebook to the text vocabulary).
///
/// ```text
/// 0 .. T            text ids (the text tokenizer's)
/// T .. T+5          bos, eos, pad, boi (begin of image), eoi (end of image)
/// T+5 .. T+5+K      image codes 0 .. K
/// ```
///
/// A text-to-image sequence is `[bos] text… [boi] window_0 … window_last [eoi]`.
///
/// ```
/// use token_shuffle_lm::VocabLayout;
///
/// let vocab = VocabLayout::new(1000, 8192);
/// assert_eq!(vocab.size(), 1000 + 5 + 8192);
/// assert_eq!(vocab.code_of(vocab.image_id(42)), Some(42));
/// assert_eq!(vocab.prompt(&[7, 8]), vec![vocab.bos(), 7, 8, vocab.boi()]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VocabLayout {
    /// Number of text ids T.
    pub text: usize,
    /// Number of image codes K (the VQ codebook size).
    pub codebook: usize,
    /// A text id that begins sequences instead of the `bos` special (a pretrained model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_bos: Option<u32>,
}

/// Number of special tokens.
pub(crate) const SPECIALS: usize = 5;

impl VocabLayout {
    /// The layout for a text tokenizer of `text` ids and a VQ codebook of `codebook` codes.
    pub fn new(text: usize, codebook: usize) -> Self {
        Self {
            text,
            codebook,
            text_bos: None,
        }
    }

    /// The same layout with sequences begun by the text id `bos` (a pretrained model's `bos_token_id`).
    pub fn with_text_bos(self, bos: Option<u32>) -> Self {
        Self { text_bos: bos, ..self }
    }

    /// Total number of ids: the embedding table's rows.
    pub fn size(&self) -> usize {
        self.text + SPECIALS + self.codebook
    }

    /// Number of ids that are not image codes (text and special tokens): the classes of a text head.
    pub fn non_image(&self) -> usize {
        self.text + SPECIALS
    }

    /// Begin of sequence: the text bos when there is one, else the special.
    pub fn bos(&self) -> u32 {
        self.text_bos.unwrap_or(self.text as u32)
    }
    /// End of sequence.
    pub fn eos(&self) -> u32 {
        self.text as u32 + 1
    }
    /// Padding.
    pub fn pad(&self) -> u32 {
        self.text as u32 + 2
    }
    /// Begin of image.
    pub fn boi(&self) -> u32 {
        self.text as u32 + 3
    }
    /// End of image.
    pub fn eoi(&self) -> u32 {
        self.text as u32 + 4
    }

    /// The id of image code `code` (panics when `code >= codebook`: a code from another VQ model).
    pub fn image_id(&self, code: u32) -> u32 {
        assert!(
            (code as usize) < self.codebook,
            "image code {code} is outside the codebook of {}",
            self.codebook
        );
        (self.text + SPECIALS) as u32 + code
    }

    /// The image code of an id, if it is one.
    pub fn code_of(&self, id: u32) -> Option<u32> {
        let first = (self.text + SPECIALS) as u32;
        (id >= first && (id - first) < self.codebook as u32).then(|| id - first)
    }

    /// The prompt part of a sequence: `[bos] text… [boi]`.
    pub fn prompt(&self, text_ids: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text_ids.len() + 2);
        ids.push(self.bos());
        ids.extend_from_slice(text_ids);
        ids.push(self.boi());
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_and_cover_the_table() {
        let v = VocabLayout::new(10, 4);
        let specials = [v.bos(), v.eos(), v.pad(), v.boi(), v.eoi()];
        assert_eq!(specials, [10, 11, 12, 13, 14]);
        let pretrained = v.with_text_bos(Some(3));
        assert_eq!(pretrained.prompt(&[7]), vec![3, 7, 13]);
        assert_eq!((pretrained.size(), pretrained.eos()), (v.size(), v.eos()));
        let codes: Vec<u32> = (0..4).map(|c| v.image_id(c)).collect();
        assert_eq!(codes, vec![15, 16, 17, 18]);
        assert_eq!(v.size(), 19);
        assert!((0..10).chain(specials).all(|id| v.code_of(id).is_none()));
        assert_eq!(v.code_of(18), Some(3));
        assert_eq!(v.code_of(19), None);
    }

    #[test]
    #[should_panic(expected = "outside the codebook")]
    fn a_foreign_code_is_refused() {
        VocabLayout::new(10, 4).image_id(4);
    }
}
