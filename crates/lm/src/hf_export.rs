//! The LM handed back to HuggingFace: the decoder, the embedding table and both heads as a checkpoint that
//! `transformers` loads (`LlamaForCausalLM`, or `Qwen2ForCausalLM` when the projections have biases), with the
//! extended vocabulary; the Token-Shuffle modules beside it in a safetensors file of their own.
//!
//! The inverse of [`crate::load_hf`]: linear weights transposed back to `[out, in]`, the rotary rows of queries and
//! keys permuted back to HF's halves layout, norms renamed. `lm_head` holds the text head's rows (text ids and
//! specials; an embedding-table head divided as the LM divides it) followed by the image head's (one row per
//! code), so at s = 1 the checkpoint computes [`TokenShuffleLm::vocabulary_logits`]; at s > 1 the shuffle step runs
//! outside transformers, with the modules in `token_shuffle.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;

use crate::hf::HostTensor;
use crate::{LmError, RopeScaling, TokenShuffleLm, TokenShuffleLmConfig};

fn host<B: Backend, const D: usize>(tensor: burn::tensor::Tensor<B, D>) -> Result<HostTensor, LmError> {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| LmError::Architecture(format!("reading a weight: {e:?}")))?;
    Ok(HostTensor { shape, values })
}

/// How one of our tensors becomes the HF one (given the head width).
type Transform = fn(HostTensor, usize) -> HostTensor;

/// The HF name and the transformation of one of our decoder parameters (`None`: not part of the backbone).
fn hf_name(path: &str) -> Option<(String, Transform)> {
    let keep: Transform = |t, _| t;
    let linear: Transform = |t, _| t.transposed();
    let rotary: Transform = |t, hd| t.transposed().rotary_rows(hd, true);
    let rotary_bias: Transform = |t, hd| t.rotary_bias(hd, true);
    if path == "embedding.weight" {
        return Some(("model.embed_tokens.weight".into(), keep));
    }
    if path == "decoder.norm.gamma" {
        return Some(("model.norm.weight".into(), keep));
    }
    let rest = path.strip_prefix("decoder.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (name, transform) = match rest {
        "attention_norm.gamma" => ("input_layernorm.weight", keep),
        "mlp_norm.gamma" => ("post_attention_layernorm.weight", keep),
        "attention.query.weight" => ("self_attn.q_proj.weight", rotary),
        "attention.key.weight" => ("self_attn.k_proj.weight", rotary),
        "attention.value.weight" => ("self_attn.v_proj.weight", linear),
        "attention.output.weight" => ("self_attn.o_proj.weight", linear),
        "attention.query.bias" => ("self_attn.q_proj.bias", rotary_bias),
        "attention.key.bias" => ("self_attn.k_proj.bias", rotary_bias),
        "attention.value.bias" => ("self_attn.v_proj.bias", keep),
        "mlp_up.linear_inner.weight" => ("mlp.gate_proj.weight", linear),
        "mlp_up.linear_outer.weight" => ("mlp.up_proj.weight", linear),
        "mlp_down.weight" => ("mlp.down_proj.weight", linear),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{name}"), transform))
}

/// Writes `tensors` as a safetensors file at `path` (f32).
fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<(), LmError> {
    let fail = |why: String| LmError::Pretrained {
        path: path.to_path_buf(),
        why,
    };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, rows)| {
            let data = rows.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), rows.shape.clone(), data)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| fail(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized = safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    std::fs::write(path, serialized).map_err(|e| fail(format!("cannot be written ({e})")))
}

/// Which ids an exported checkpoint has rows for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vocabulary {
    /// Text ids, specials and image codes: the whole LM.
    Whole,
    /// Text ids and specials: the text LM inside it.
    Text,
}

/// The `config.json` of the exported checkpoint.
fn config_json(config: &TokenShuffleLmConfig, vocabulary: Vocabulary) -> serde_json::Value {
    let arch = &config.architecture;
    let d = &arch.decoder;
    let vocab = config.vocab();
    let (architecture, model_type) = match d.qkv_bias {
        true => ("Qwen2ForCausalLM", "qwen2"),
        false => ("LlamaForCausalLM", "llama"),
    };
    let rope_scaling = match d.rope_scaling {
        None => serde_json::Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({ "rope_type": "linear", "factor": factor }),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    };
    // The older top-level rope fields: transformers 4 and 5 both read them.
    let mut json = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": match vocabulary {
            Vocabulary::Whole => vocab.size(),
            Vocabulary::Text => vocab.non_image(),
        },
        "hidden_size": d.d_model,
        "intermediate_size": d.mlp_hidden,
        "num_hidden_layers": d.n_layers,
        "num_attention_heads": d.n_heads,
        "num_key_value_heads": d.n_kv_heads.unwrap_or(d.n_heads),
        "head_dim": d.head_width(),
        "hidden_act": "silu",
        "rms_norm_eps": d.norm_eps,
        "rope_theta": d.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": config.sequence_len(arch.max_text_len),
        "tie_word_embeddings": false,
        "bos_token_id": vocab.bos(),
        "eos_token_id": vocab.eos(),
        "pad_token_id": vocab.pad(),
        "torch_dtype": "float32",
        "token_shuffle": {
            "text_vocab": arch.text_vocab,
            "codebook": arch.codebook,
            "first_image_id": vocab.image_id(0),
            "begin_of_image_id": vocab.boi(),
            "end_of_image_id": vocab.eoi(),
            "window": config.window,
            "grid": config.grid,
        },
    });
    if vocabulary == Vocabulary::Text
        && let Some(fields) = json.as_object_mut()
    {
        fields.remove("token_shuffle");
    }
    if model_type == "llama" {
        json["attention_bias"] = false.into();
        json["mlp_bias"] = false.into();
    }
    json
}

/// Writes `model` (of `config`) into the directory `dir`, which must not exist yet or be empty:
/// `config.json`, `model.safetensors` (f32) and, at s > 1, `token_shuffle.safetensors` (the shuffle and
/// unshuffle modules under our parameter names). Returns the number of tensors in the checkpoint.
///
/// # Errors
/// [`LmError::Pretrained`] naming `dir` when it holds files already, or a file that cannot be written.
pub fn export_hf<B: Backend>(
    model: &TokenShuffleLm<B>,
    config: &TokenShuffleLmConfig,
    dir: &Path,
) -> Result<usize, LmError> {
    export(model, config, dir, Vocabulary::Whole)
}

/// [`export_hf`] of the text LM inside `model`: the embedding and `lm_head` rows of the text ids and specials only
/// (`vocab_size` = [`crate::VocabLayout::non_image`], `bos_token_id` and `eos_token_id` our specials), without
/// the image head and the Token-Shuffle modules. What a text-pretraining step writes, for a run to start from
/// through [`crate::load_hf`] as from any pretrained LLM.
///
/// # Errors
/// As [`export_hf`].
pub fn export_hf_text<B: Backend>(
    model: &TokenShuffleLm<B>,
    config: &TokenShuffleLmConfig,
    dir: &Path,
) -> Result<usize, LmError> {
    export(model, config, dir, Vocabulary::Text)
}

fn export<B: Backend>(
    model: &TokenShuffleLm<B>,
    config: &TokenShuffleLmConfig,
    dir: &Path,
    vocabulary: Vocabulary,
) -> Result<usize, LmError> {
    let fail = |path: &Path, why: String| LmError::Pretrained {
        path: path.to_path_buf(),
        why,
    };
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(fail(dir, "holds files already; give a new or empty directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("cannot be made ({e})")))?;
    let head_dim = config.architecture.decoder.head_width();
    let mut backbone = BTreeMap::new();
    let mut shuffle = BTreeMap::new();
    for snapshot in model.collect(None, None, false) {
        let path = snapshot.full_path();
        let data = snapshot
            .to_data()
            .map_err(|e| fail(dir, format!("reading {path}: {e:?}")))?;
        let rows = HostTensor {
            shape: data.shape.to_vec(),
            values: data
                .convert::<f32>()
                .to_vec()
                .map_err(|e| fail(dir, format!("reading {path}: {e:?}")))?,
        };
        if path.starts_with("shuffle.") || path.starts_with("unshuffle.") {
            shuffle.insert(path, rows);
        } else if path == "embedding.weight" && vocabulary == Vocabulary::Text {
            let d = rows.shape[1];
            let text = config.vocab().non_image();
            let values = rows.values[..text * d].to_vec();
            backbone.insert(
                "model.embed_tokens.weight".into(),
                HostTensor {
                    shape: vec![text, d],
                    values,
                },
            );
        } else if let Some((name, transform)) = hf_name(&path) {
            backbone.insert(name, transform(rows, head_dim));
        }
    }
    let mut head = host(model.text_head_rows())?.values;
    if vocabulary == Vocabulary::Whole {
        head.extend(host(model.image_head_weight())?.transposed().values);
    }
    let d = config.architecture.decoder.d_model;
    backbone.insert(
        "lm_head.weight".into(),
        HostTensor {
            shape: vec![head.len() / d, d],
            values: head,
        },
    );
    let tensors = backbone.len();
    write_safetensors(&dir.join("model.safetensors"), &backbone)?;
    if !shuffle.is_empty() && vocabulary == Vocabulary::Whole {
        write_safetensors(&dir.join("token_shuffle.safetensors"), &shuffle)?;
    }
    let json = serde_json::to_vec_pretty(&config_json(config, vocabulary)).expect("the config serialises");
    let path = dir.join("config.json");
    std::fs::write(&path, json).map_err(|e| fail(&path, format!("cannot be written ({e})")))?;
    Ok(tensors)
}
