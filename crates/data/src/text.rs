//! The text tokenizer: byte-level BPE trained on a data set's captions, or any Hugging Face `tokenizer.json` a
//! user brings. Nothing is fetched from a hub.
//!
//! Special tokens (bos, eos, begin/end of image, …) are not the text tokenizer's business: the LM's vocabulary
//! layout places them after the text ids.
//!
//! ```
//! use token_shuffle_data::text::TextTokenizer;
//!
//! let captions = ["a red circle", "a blue square", "two red squares", "a circle above a square"];
//! let tokenizer = TextTokenizer::train(captions.iter().copied(), 300)?;
//! let ids = tokenizer.encode("a red square")?;
//! assert_eq!(tokenizer.decode(&ids)?, "a red square");
//! # Ok::<(), token_shuffle_data::DataError>(())
//! ```

use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
    TokenizerBuilder,
};

use crate::DataError;

/// A text tokenizer: ids in `0..vocab_size()`.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

fn tokenizer_error(what: &str) -> impl Fn(tokenizers::Error) -> DataError + '_ {
    move |e| DataError::Tokenizer {
        what: what.to_string(),
        why: e.to_string(),
    }
}

impl TextTokenizer {
    /// Trains a byte-level BPE tokenizer of at most `vocab_size` ids on `captions` (lower-cased: captions
    /// here describe content, and case only splits the statistics).
    ///
    /// # Errors
    /// [`DataError::Tokenizer`] when `vocab_size` is below the 256 byte symbols or training fails.
    pub fn train<'a>(captions: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<Self, DataError> {
        if vocab_size < 256 {
            return Err(DataError::Tokenizer {
                what: format!("vocab size {vocab_size}"),
                why: "a byte-level BPE needs at least 256 ids, one per byte".into(),
            });
        }
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainerBuilder::new()
                .vocab_size(vocab_size)
                .min_frequency(2)
                .show_progress(false)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .build(),
        );
        let mut tokenizer = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default().into())
        .with_normalizer(Some(tokenizers::normalizers::Lowercase.into()))
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false).into()))
        .with_post_processor(Some(ByteLevel::default().into()))
        .with_decoder(Some(ByteLevel::default().into()))
        .build()
        .map_err(tokenizer_error("building the BPE tokenizer"))?;
        tokenizer
            .train(&mut trainer, captions)
            .map_err(tokenizer_error("training the BPE tokenizer"))?;
        Ok(Self {
            inner: Tokenizer::from(tokenizer),
        })
    }

    /// Loads a `tokenizer.json` (ours, or any Hugging Face tokenizer file).
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let inner = Tokenizer::from_file(path).map_err(|e| DataError::Tokenizer {
            what: path.display().to_string(),
            why: e.to_string(),
        })?;
        Ok(Self { inner })
    }

    /// Saves as `tokenizer.json`, atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = self.to_json()?;
        crate::write_atomically(path, json.as_bytes())
    }

    /// The tokenizer's JSON, as `save` writes it.
    pub fn to_json(&self) -> Result<String, DataError> {
        self.inner
            .to_string(false)
            .map_err(tokenizer_error("serialising the tokenizer"))
    }

    /// A fingerprint of the tokenizer (of its JSON), recorded by code caches.
    pub fn fingerprint(&self) -> Result<String, DataError> {
        Ok(crate::cache::fingerprint(self.to_json()?.as_bytes()))
    }

    /// Number of ids, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let encoding = self.inner.encode(text, false).map_err(tokenizer_error(text))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner.decode(ids, true).map_err(tokenizer_error("decoding ids"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenes::{SceneCorpus, Split};

    fn scene_captions() -> Vec<String> {
        SceneCorpus::new(0, Split::Train, 2000)
            .scenes()
            .map(|s| s.caption)
            .collect()
    }

    #[test]
    fn round_trips_and_compresses_captions() {
        let captions = scene_captions();
        let tokenizer = TextTokenizer::train(captions.iter().map(String::as_str), 400).unwrap();
        assert!(
            tokenizer.vocab_size() <= 400 && tokenizer.vocab_size() > 256,
            "{}",
            tokenizer.vocab_size()
        );
        for caption in captions.iter().take(50) {
            let ids = tokenizer.encode(caption).unwrap();
            assert_eq!(&tokenizer.decode(&ids).unwrap(), caption);
            // Merges learned: far fewer tokens than bytes.
            assert!(ids.len() * 2 < caption.len(), "{caption}: {} ids", ids.len());
        }
        // Unseen words still encode (byte fallback) and decode exactly.
        let text = "a zebra-striped hexagon!";
        assert_eq!(tokenizer.decode(&tokenizer.encode(text).unwrap()).unwrap(), text);
    }

    #[test]
    fn save_load_keeps_ids_and_fingerprint() {
        let captions = scene_captions();
        let tokenizer = TextTokenizer::train(captions.iter().map(String::as_str), 350).unwrap();
        let path = std::env::temp_dir().join(format!("tokenizer-{}.json", std::process::id()));
        tokenizer.save(&path).unwrap();
        let loaded = TextTokenizer::load(&path).unwrap();
        assert_eq!(
            loaded.encode(&captions[3]).unwrap(),
            tokenizer.encode(&captions[3]).unwrap()
        );
        assert_eq!(loaded.fingerprint().unwrap(), tokenizer.fingerprint().unwrap());
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(TextTokenizer::load(&path), Err(DataError::Tokenizer { .. })));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        assert!(matches!(
            TextTokenizer::train(["a"].into_iter(), 100),
            Err(DataError::Tokenizer { .. })
        ));
    }
}
