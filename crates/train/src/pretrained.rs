//! A run that starts from a pretrained LLM (`lm.init`, a HuggingFace checkpoint directory): the checkpoint decides
//! the LM's decoder, text vocabulary, text head and the prompt's first id ([`architecture_fields`]); a run config
//! may leave them out ([`fill_from_checkpoint`]) and may not contradict them ([`Pretrained::check_architecture`]);
//! its `tokenizer.json` is the run's text tokenizer (the BPE step is skipped); and its files' fingerprint joins
//! the LM step's record, so that a changed checkpoint on an existing run is refused like a changed config.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use token_shuffle_data::cache::{fingerprint, fingerprint_file};
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_lm::{HfConfig, LmArchitecture};

use crate::TrainError;

/// The fields of `lm.model` that a checkpoint decides.
const CHECKPOINT_FIELDS: [&str; 4] = ["text_vocab", "decoder", "text_head", "text_bos"];

/// The [`CHECKPOINT_FIELDS`] of `arch` as the run config writes them, normalised through their text form (so that
/// an f32 widened to f64 in memory compares equal to the file's decimal).
fn checkpoint_fields(arch: &LmArchitecture) -> Value {
    let all = serde_json::to_value(arch).expect("the architecture serialises");
    let fields = CHECKPOINT_FIELDS
        .iter()
        .map(|field| (field.to_string(), all[field].clone()));
    crate::stage::normalised(Value::Object(fields.collect()))
}

/// The LM architecture fields that a checkpoint decides, as the run config writes them under `lm.model`.
pub fn architecture_fields(hf: &HfConfig) -> Value {
    checkpoint_fields(&hf.architecture(1, 1))
}

/// A checkpoint directory opened as a run's starting point: its config and its tokenizer, both checked.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// What its `config.json` says.
    pub hf: HfConfig,
    /// Its `tokenizer.json`.
    pub tokenizer: TextTokenizer,
}

impl Pretrained {
    /// Opens `dir`: `config.json` (a supported architecture), `tokenizer.json` (no more ids than the embedding
    /// table has rows) and the weight files it names (present).
    ///
    /// # Errors
    /// [`TrainError::Lm`] for the config or the weight files, [`TrainError::Config`] naming `tokenizer.json`.
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let hf = HfConfig::read(dir)?;
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TrainError::Config(format!(
                "lm.init: {} is missing: the run encodes its captions with the checkpoint's own tokenizer",
                path.display()
            )));
        }
        let tokenizer = TextTokenizer::load(&path)
            .map_err(|e| TrainError::Config(format!("lm.init: {e} (a HuggingFace tokenizer.json is needed)")))?;
        if tokenizer.vocab_size() > hf.vocab_size {
            return Err(TrainError::Config(format!(
                "lm.init: {} has {} ids but {}/config.json gives vocab_size = {}: the embedding table has no row \
                 for the rest; this tokenizer is not the model's",
                path.display(),
                tokenizer.vocab_size(),
                dir.display(),
                hf.vocab_size
            )));
        }
        for file in hf.weight_files()? {
            if !file.is_file() {
                return Err(TrainError::Config(format!(
                    "lm.init: {} is missing (the checkpoint's index names it)",
                    file.display()
                )));
            }
        }
        Ok(Self { hf, tokenizer })
    }

    /// Refuses an architecture (a run config's `lm.model`) that contradicts the checkpoint, naming the field and
    /// both values.
    ///
    /// # Errors
    /// [`TrainError::Config`].
    pub fn check_architecture(&self, arch: &LmArchitecture) -> Result<(), TrainError> {
        match crate::stage::first_difference(&checkpoint_fields(arch), &architecture_fields(&self.hf)) {
            None => Ok(()),
            Some((field, ours, theirs)) => Err(TrainError::Config(format!(
                "lm.model.{field} = {ours} contradicts the checkpoint lm.init = {}, whose config.json gives {theirs}: \
                 remove the field from the run config (the checkpoint decides it) or use another checkpoint",
                self.hf.dir.display()
            ))),
        }
    }

    /// The files a run reads from the checkpoint: `config.json`, `tokenizer.json` and every weight file.
    ///
    /// # Errors
    /// [`TrainError::Lm`] when the weight files cannot be listed.
    pub fn files(&self) -> Result<Vec<PathBuf>, TrainError> {
        let mut files = vec![self.hf.dir.join("config.json"), self.hf.dir.join("tokenizer.json")];
        files.extend(self.hf.weight_files()?);
        Ok(files)
    }

    /// BLAKE3 over the fingerprints of [`files`](Self::files) (each named by its file name): what the LM step's
    /// record holds of the checkpoint.
    ///
    /// # Errors
    /// [`TrainError::Io`] for a file that cannot be read.
    pub fn fingerprint(&self) -> Result<String, TrainError> {
        let mut listing = String::new();
        for file in self.files()? {
            let print = fingerprint_file(&file).map_err(|source| TrainError::Io {
                path: file.clone(),
                source,
            })?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            listing.push_str(&format!("{name} {print}\n"));
        }
        Ok(fingerprint(listing.as_bytes()))
    }
}

/// Fills the fields a checkpoint decides into a run config's JSON (`given`, as a file wrote it) where it leaves
/// them out, when `lm.init` names a checkpoint. A config that gives all of them (a run's own `run.json`) is left as
/// it is, without reading the checkpoint; the fields it gives are checked against the checkpoint when the run
/// trains ([`Pretrained::check_architecture`]).
///
/// # Errors
/// A message naming `lm.init` and the checkpoint's `config.json` when it cannot be read.
pub fn fill_from_checkpoint(given: &mut Value) -> Result<(), String> {
    let Some(dir) = given.pointer("/lm/init").and_then(Value::as_str).map(PathBuf::from) else {
        return Ok(());
    };
    let model = &given["lm"]["model"];
    let decoder_fields =
        serde_json::to_value(token_shuffle_lm::DecoderConfig::new(1, 1, 1, 1)).expect("the decoder config serialises");
    let complete = CHECKPOINT_FIELDS.iter().all(|field| model.get(field).is_some())
        && decoder_fields
            .as_object()
            .is_some_and(|fields| fields.keys().all(|field| model["decoder"].get(field).is_some()));
    if complete {
        return Ok(());
    }
    let hf = HfConfig::read(&dir).map_err(|e| format!("lm.init: {e}"))?;
    let lm = given["lm"].as_object_mut().ok_or("field `lm` is not an object")?;
    let model = lm.entry("model").or_insert_with(|| json!({}));
    lay_under(model, architecture_fields(&hf));
    Ok(())
}

/// Inserts into `value` every field of `base` it does not have (objects key by key).
fn lay_under(value: &mut Value, base: Value) {
    if let (Value::Object(fields), Value::Object(base)) = (value, base) {
        for (key, inner) in base {
            match fields.get_mut(&key) {
                Some(slot) => lay_under(slot, inner),
                None => {
                    fields.insert(key, inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/hf/llama-gqa")
    }

    #[test]
    fn a_config_is_filled_from_the_checkpoint_only_where_it_is_silent() {
        let mut given = json!({ "lm": { "init": fixture(), "model": { "decoder": { "n_layers": 7 } } } });
        fill_from_checkpoint(&mut given).unwrap();
        let model = &given["lm"]["model"];
        assert_eq!(
            (model["text_vocab"].as_u64(), model["decoder"]["d_model"].as_u64()),
            (Some(96), Some(32))
        );
        assert_eq!(
            model["decoder"]["n_layers"], 7,
            "what the file gives is kept (and checked at training)"
        );
        let hf = HfConfig::read(&fixture()).unwrap();
        let mut arch = hf.architecture(8, 8);
        let pretrained = Pretrained::open(&fixture()).unwrap();
        pretrained.check_architecture(&arch).unwrap();
        arch.decoder.n_layers = 7;
        let err = pretrained.check_architecture(&arch).unwrap_err().to_string();
        assert!(
            err.contains("lm.model.decoder.n_layers = 7") && err.contains("gives 2"),
            "{err}"
        );

        // A complete config (a run's own run.json) is not read against the checkpoint, which may be gone.
        let mut complete = json!({ "lm": { "init": "/nowhere", "model": architecture_fields(&hf) } });
        let before = complete.clone();
        fill_from_checkpoint(&mut complete).unwrap();
        assert_eq!(complete, before);
        let mut incomplete = json!({ "lm": { "init": "/nowhere", "model": {} } });
        let err = fill_from_checkpoint(&mut incomplete).unwrap_err();
        assert!(err.contains("lm.init") && err.contains("/nowhere"), "{err}");
    }

    #[test]
    fn a_checkpoint_without_its_tokenizer_or_with_a_larger_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture().join(file), dir.path().join(file)).unwrap();
        }
        let err = Pretrained::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json is missing"), "{err}");
        std::fs::write(dir.path().join("tokenizer.json"), "{ not json").unwrap();
        let err = Pretrained::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
        std::fs::copy(fixture().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
        let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            config.replace("\"vocab_size\": 96", "\"vocab_size\": 50"),
        )
        .unwrap();
        let err = Pretrained::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab_size = 50") && err.contains("ids but"), "{err}");
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        assert!(Pretrained::open(dir.path()).is_err(), "no weights");
    }
}
