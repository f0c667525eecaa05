//! Pretrained checkpoints against transformers' own numbers: the fixtures in `tests/fixtures/hf` were written by
//! transformers (`scripts/hf_fixtures.py`), each with the logits transformers computes for a fixed text.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use token_shuffle_lm::{HfConfig, HfReference, LmError, RopeScaling, TextHead, TokenShuffleLm, export_hf, load_hf};
use token_shuffle_test_support::TestBackend as B;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn load(name: &str) -> (HfConfig, TokenShuffleLm<B>) {
    let hf = HfConfig::read(&fixture(name)).unwrap();
    // 16 codes, prompts of up to 16 ids, 2×2 code grids without shuffle: enough rotary positions for the text.
    let config = hf.architecture(16, 16).into_config([2, 2], 1);
    let model = load_hf::<B>(&hf, &config, &Default::default()).unwrap();
    (hf, model)
}

/// The largest |ours − transformers'| over the checkpoint's vocabulary at every position of the reference text.
fn max_logit_difference(name: &str) -> f32 {
    let (hf, model) = load(name);
    let reference = HfReference::read(&hf.dir.join("reference.safetensors")).unwrap();
    assert_eq!(reference.vocab, hf.vocab_size);
    assert_eq!(
        model.vocab().non_image(),
        hf.vocab_size + 5,
        "the text head covers our specials too"
    );
    reference.max_difference(&model, &Default::default()).unwrap()
}

/// What the weight files hold, counted from the files themselves.
fn parameters_in_files(hf: &HfConfig) -> usize {
    hf.weight_files()
        .unwrap()
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).unwrap();
            let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            tensors
                .tensors()
                .iter()
                .map(|(_, v)| v.shape().iter().product::<usize>())
                .sum::<usize>()
        })
        .sum()
}

#[test]
fn llama_with_grouped_heads_llama3_rope_and_tied_embeddings_gives_transformers_logits() {
    let hf = HfConfig::read(&fixture("llama-gqa")).unwrap();
    assert!(hf.tied);
    assert_eq!(hf.decoder.n_kv_heads, Some(2));
    assert!(matches!(hf.decoder.rope_scaling, Some(RopeScaling::Llama3 { .. })));
    let delta = max_logit_difference("llama-gqa");
    assert!(delta <= 1e-4, "max |Δ| = {delta}");
}

#[test]
fn qwen2_with_biases_an_untied_head_and_a_top_level_rope_config_gives_transformers_logits() {
    let hf = HfConfig::read(&fixture("qwen2-untied")).unwrap();
    assert!(hf.decoder.qkv_bias && !hf.tied);
    assert_eq!(hf.decoder.rope_theta, 1e6);
    assert_eq!(hf.architecture(16, 16).text_head, TextHead::Linear);
    let delta = max_logit_difference("qwen2-untied");
    assert!(delta <= 1e-4, "max |Δ| = {delta}");
}

#[test]
fn a_sharded_bf16_llama_with_its_own_head_width_and_linear_rope_gives_transformers_logits() {
    let hf = HfConfig::read(&fixture("llama-bf16-sharded")).unwrap();
    assert_eq!(hf.decoder.head_dim, Some(12));
    assert_eq!(hf.weight_files().unwrap().len(), 3);
    let delta = max_logit_difference("llama-bf16-sharded");
    assert!(delta <= 1e-4, "max |Δ| = {delta}");
}

#[test]
fn an_f16_mistral_with_a_sliding_window_gives_transformers_logits_and_refuses_longer_sequences() {
    let hf = HfConfig::read(&fixture("mistral-f16")).unwrap();
    assert_eq!(hf.sliding_window, Some(32));
    let delta = max_logit_difference("mistral-f16");
    assert!(delta <= 1e-4, "max |Δ| = {delta}");
    let long = hf.architecture(16, 40).into_config([2, 2], 1);
    let err = load_hf::<B>(&hf, &long, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("sliding_window of 32"), "{err}");
}

#[test]
fn the_parameter_count_is_what_the_files_hold() {
    for name in ["llama-gqa", "qwen2-untied", "llama-bf16-sharded", "mistral-f16"] {
        let hf = HfConfig::read(&fixture(name)).unwrap();
        assert_eq!(hf.parameters(), parameters_in_files(&hf), "{name}");
    }
}

#[test]
fn the_checkpoints_tokenizer_gives_the_ids_transformers_used() {
    let dir = fixture("llama-gqa");
    let tokenizer = token_shuffle_data::text::TextTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    let ids = HfReference::read(&dir.join("reference.safetensors")).unwrap().ids;
    let ours = tokenizer.encode("a red circle to the left of a blue square").unwrap();
    // The reference starts with the checkpoint's bos (1).
    assert_eq!(ids[0], 1);
    assert_eq!(ours.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(), ids[1..]);
}

#[test]
fn new_rows_start_at_the_mean_of_the_pretrained_ones() {
    let (hf, model) = load("llama-gqa");
    // Under a tied head the specials' rows are the mean row, so their logits are the mean of the pretrained
    // ids' logits.
    let t = 3;
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 9], [1, t]), &Default::default());
    let logits: Vec<f32> = model.text_logits(ids, None).into_data().to_vec().unwrap();
    let width = hf.vocab_size + 5;
    for row in logits.chunks(width) {
        let mean = row[..hf.vocab_size].iter().sum::<f32>() / hf.vocab_size as f32;
        for special in &row[hf.vocab_size..] {
            assert!((special - mean).abs() < 1e-4, "{special} vs mean {mean}");
        }
    }
}

#[test]
fn unsupported_or_damaged_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(fixture("llama-gqa")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        to
    };
    let edit = |dir: &Path, change: &dyn Fn(&mut serde_json::Value)| {
        let path = dir.join("config.json");
        let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        change(&mut json);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    };
    let read_err = |dir: &Path| HfConfig::read(dir).unwrap_err().to_string();

    let gpt = copy("gpt");
    edit(&gpt, &|j| j["architectures"] = serde_json::json!(["GPT2LMHeadModel"]));
    assert!(
        read_err(&gpt).contains("GPT2LMHeadModel is not supported"),
        "{}",
        read_err(&gpt)
    );

    let yarn = copy("yarn");
    edit(&yarn, &|j| j["rope_parameters"]["rope_type"] = "yarn".into());
    assert!(
        read_err(&yarn).contains("`yarn` is not supported"),
        "{}",
        read_err(&yarn)
    );

    let load_err = |dir: &Path| -> String {
        let hf = HfConfig::read(dir).unwrap();
        let config = hf.architecture(16, 16).into_config([2, 2], 1);
        match load_hf::<B>(&hf, &config, &Default::default()) {
            Err(e @ LmError::Pretrained { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    };
    // A config whose sizes are not the weights': the tensor and the file are named.
    let wider = copy("wider");
    edit(&wider, &|j| j["intermediate_size"] = 64.into());
    let err = load_err(&wider);
    assert!(err.contains("model.safetensors") && err.contains("mlp"), "{err}");
    // A truncated weight file.
    let cut = copy("cut");
    let weights = cut.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    assert!(
        load_err(&cut).contains("is not a safetensors file"),
        "{}",
        load_err(&cut)
    );
    // No weights at all.
    let empty = copy("empty");
    std::fs::remove_file(empty.join("model.safetensors")).unwrap();
    assert!(
        load_err(&empty).contains("neither model.safetensors"),
        "{}",
        load_err(&empty)
    );
}

#[test]
fn text_generation_with_the_kv_cache_equals_the_full_forward_of_a_loaded_model() {
    let (hf, model) = load("qwen2-untied");
    let reference = HfReference::read(&hf.dir.join("reference.safetensors")).unwrap();
    let device = Default::default();
    let t = reference.ids.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(reference.ids.clone(), [1, t]), &device);
    let full = model.text_logits(ids.clone(), None);
    let mut cache = model.new_text_cache(1, t, &device);
    let mut parts = vec![model.text_logits(ids.clone().narrow(1, 0, 4), Some(&mut cache))];
    for i in 4..t {
        parts.push(model.text_logits(ids.clone().narrow(1, i, 1), Some(&mut cache)));
    }
    let stepped = Tensor::cat(parts, 1);
    let delta: f32 = (stepped - full).abs().max().into_scalar();
    assert!(delta <= 1e-5, "max |Δ| = {delta}");
}

#[test]
fn an_exported_checkpoint_loads_back_to_the_same_logits_over_the_whole_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // Qwen2 (biases, untied head) and a Llama with its own head width (tied, so the export unties it).
    for name in ["qwen2-untied", "llama-bf16-sharded", "llama-gqa"] {
        let hf = HfConfig::read(&fixture(name)).unwrap();
        let config = hf.architecture(16, 16).into_config([2, 2], 1);
        let model = load_hf::<B>(&hf, &config, &device).unwrap();
        let out = dir.path().join(name);
        export_hf(&model, &config, &out).unwrap();
        let exported = HfConfig::read(&out).unwrap();
        assert_eq!(
            exported.vocab_size,
            config.vocab().size(),
            "{name}: the extended vocabulary"
        );
        assert_eq!(exported.decoder, hf.decoder, "{name}");
        let again = load_hf::<B>(
            &exported,
            &exported.architecture(16, 16).into_config([2, 2], 1),
            &device,
        )
        .unwrap();
        // Text, specials and image codes: the whole vocabulary.
        let ids: Vec<i64> = vec![1, 7, 30, 96, 99, 101, 110, 116];
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, 8]), &device);
        let want = model.vocabulary_logits(ids.clone());
        let got = again.text_logits(ids, None).narrow(2, 0, config.vocab().size());
        let delta: f32 = (got - want).abs().max().into_scalar();
        assert!(delta <= 1e-5, "{name}: max |Δ| = {delta}");
        assert!(
            export_hf(&model, &config, &out)
                .unwrap_err()
                .to_string()
                .contains("holds files already")
        );
    }
}
