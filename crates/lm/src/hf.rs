//! A pretrained LLM from a HuggingFace checkpoint directory as the LM's initialisation: the paper's model is a
//! pretrained Llama extended with image codes, not an LM trained from scratch.
//!
//! [`HfConfig::read`] reads `config.json` (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM; both the
//! transformers-5 form with `rope_parameters` and the older top-level `rope_theta` / `rope_scaling`);
//! [`HfConfig::architecture`] turns it into an [`LmArchitecture`]; [`load_hf`] builds the LM and fills its
//! decoder, embedding and text head from `model.safetensors` (or the shards that `model.safetensors.index.json`
//! lists), in f32 whatever the file's dtype (f32, bf16, f16).
//!
//! What changes on the way in:
//! - Linear weights are transposed (PyTorch `[out, in]`, burn `[in, out]`).
//! - Rotary layout: HF rotates the two halves of a head (`x_i` with `x_{i + hd/2}`), ours neighbouring pairs
//!   (`x_{2i}` with `x_{2i+1}`). The query and key rows of each head (and Qwen2's query/key biases) are
//!   permuted so that HF's channel `j·hd/2 + i` becomes ours `2i + j`; attention scores are dot products over the
//!   same permutation of q and k, so they are unchanged (llama-burn's `permute_rotary_weights` does the inverse).
//! - Vocabulary: the checkpoint's `vocab_size` ids come first, then our specials and the image codes
//!   ([`crate::VocabLayout`]). Their new embedding rows (and untied head rows) are the mean of the pretrained
//!   rows, as transformers' `resize_token_embeddings(mean_resizing=True)` falls back to
//!   (`modeling_utils.py`, `_init_added_embeddings_weights_with_mean`), so that new ids start where the model
//!   expects an embedding to be; the image head and the Token-Shuffle modules start fresh.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::ParamId;
use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, TensorSnapshot};
use serde_json::Value;

use crate::{DecoderConfig, LmArchitecture, LmError, RopeScaling, TextHead, TokenShuffleLm, TokenShuffleLmConfig};

/// The model families whose checkpoints load, by their `architectures` name in `config.json`.
pub const HF_ARCHITECTURES: [&str; 3] = ["LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"];

/// What an HF `config.json` says about the decoder, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// The directory the checkpoint is in.
    pub dir: PathBuf,
    /// One of [`HF_ARCHITECTURES`].
    pub architecture: String,
    /// Number of ids the checkpoint's embedding table has (`vocab_size`, not the tokenizer's length).
    pub vocab_size: usize,
    /// The decoder in our terms.
    pub decoder: DecoderConfig,
    /// Whether the output head is the embedding table (`tie_word_embeddings`).
    pub tied: bool,
    /// Positions the model was trained for (`max_position_embeddings`).
    pub max_positions: usize,
    /// `bos_token_id`, when the config gives one.
    pub bos: Option<u32>,
    /// `eos_token_id` (the first, when it is a list).
    pub eos: Option<u32>,
    /// Mistral's attention window (`sliding_window`, when `use_sliding_window` is not false): a longer sequence
    /// would attend further than the model was trained to, so [`load_hf`] refuses an LM whose sequence exceeds it.
    pub sliding_window: Option<usize>,
}

fn fail(path: &Path, why: impl Into<String>) -> LmError {
    LmError::Pretrained {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

impl HfConfig {
    /// Reads `dir/config.json`.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] naming the file and the field: unreadable JSON, an architecture outside
    /// [`HF_ARCHITECTURES`], a missing or non-positive size, a `rope_scaling` type other than `default`, `linear`
    /// or `llama3`.
    pub fn read(dir: &Path) -> Result<Self, LmError> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(fail(
                dir,
                "has no config.json: give a HuggingFace checkpoint directory (config.json, model.safetensors)",
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| fail(&path, format!("cannot be read ({e})")))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| fail(&path, format!("is not JSON ({e})")))?;
        let architecture = json["architectures"][0]
            .as_str()
            .ok_or_else(|| fail(&path, "has no `architectures` entry"))?
            .to_string();
        if !HF_ARCHITECTURES.contains(&architecture.as_str()) {
            return Err(fail(
                &path,
                format!(
                    "architecture {architecture} is not supported; these load: {}",
                    HF_ARCHITECTURES.join(", ")
                ),
            ));
        }
        let size = |key: &str| -> Result<usize, LmError> {
            match json[key].as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(fail(&path, format!("`{key}` is missing or not a positive integer"))),
            }
        };
        let optional = |key: &str| json[key].as_u64().map(|n| n as usize);
        let hidden = size("hidden_size")?;
        let heads = size("num_attention_heads")?;
        let head_dim = optional("head_dim").filter(|&hd| hd != hidden / heads);
        let rope = match json.get("rope_parameters") {
            Some(parameters) if parameters.is_object() => parameters.clone(),
            _ => {
                let mut legacy = match &json["rope_scaling"] {
                    Value::Object(map) => Value::Object(map.clone()),
                    _ => Value::Object(Default::default()),
                };
                legacy["rope_theta"] = json["rope_theta"].clone();
                legacy
            }
        };
        let rope_theta = rope["rope_theta"].as_f64().unwrap_or(10_000.0);
        let rope_scaling = rope_scaling(&rope).map_err(|why| fail(&path, why))?;
        let first = |v: &Value| match v {
            Value::Array(items) => items.first().and_then(Value::as_u64),
            other => other.as_u64(),
        };
        // Qwen2 always has query/key/value biases (its config has no switch); Llama and Mistral say so in
        // `attention_bias`, and a bias on the output projection as well, which we do not have.
        let qkv_bias = architecture == "Qwen2ForCausalLM" || json["attention_bias"].as_bool().unwrap_or(false);
        if architecture != "Qwen2ForCausalLM" && qkv_bias {
            return Err(fail(
                &path,
                "`attention_bias: true` (a bias on the output projection too) is not supported",
            ));
        }
        if json["mlp_bias"].as_bool().unwrap_or(false) {
            return Err(fail(&path, "`mlp_bias: true` is not supported"));
        }
        if let Some(act) = json["hidden_act"].as_str()
            && act != "silu"
        {
            return Err(fail(&path, format!("hidden_act {act} is not supported (only silu)")));
        }
        let decoder = DecoderConfig::new(hidden, size("num_hidden_layers")?, heads, size("intermediate_size")?)
            .with_n_kv_heads(optional("num_key_value_heads"))
            .with_head_dim(head_dim)
            .with_qkv_bias(qkv_bias)
            .with_rope_theta(rope_theta as f32)
            .with_rope_scaling(rope_scaling)
            .with_norm_eps(json["rms_norm_eps"].as_f64().unwrap_or(1e-6));
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture,
            vocab_size: size("vocab_size")?,
            decoder,
            tied: json["tie_word_embeddings"].as_bool().unwrap_or(false),
            max_positions: optional("max_position_embeddings").unwrap_or(usize::MAX),
            bos: first(&json["bos_token_id"]).map(|n| n as u32),
            eos: first(&json["eos_token_id"]).map(|n| n as u32),
            sliding_window: match json["use_sliding_window"].as_bool() {
                Some(false) => None,
                _ => optional("sliding_window"),
            },
        })
    }

    /// The LM architecture of this checkpoint extended with `codebook` image codes, for prompts of up to
    /// `max_text_len` ids.
    pub fn architecture(&self, codebook: usize, max_text_len: usize) -> LmArchitecture {
        LmArchitecture::new(self.vocab_size, codebook, max_text_len, self.decoder.clone())
            .with_text_head(match self.tied {
                true => TextHead::TiedEmbedding,
                false => TextHead::Linear,
            })
            .with_text_bos(self.bos.filter(|&bos| (bos as usize) < self.vocab_size))
    }

    /// The safetensors files of the checkpoint: the shards `model.safetensors.index.json` lists, or
    /// `model.safetensors`.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] when neither is there or the index is unreadable.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>, LmError> {
        let index = self.dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| fail(&index, format!("cannot be read ({e})")))?;
            let json: Value = serde_json::from_str(&text).map_err(|e| fail(&index, format!("is not JSON ({e})")))?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| fail(&index, "has no `weight_map`"))?;
            let files: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
            return Ok(files.into_iter().map(|f| self.dir.join(f)).collect());
        }
        let single = self.dir.join("model.safetensors");
        match single.exists() {
            true => Ok(vec![single]),
            false => Err(fail(
                &self.dir,
                "holds neither model.safetensors nor model.safetensors.index.json",
            )),
        }
    }
}

/// The `rope_scaling` of a `rope_parameters` object (or of the older top-level `rope_scaling`, whose type key
/// may be `type`).
fn rope_scaling(rope: &Value) -> Result<Option<RopeScaling>, String> {
    let kind = rope["rope_type"]
        .as_str()
        .or(rope["type"].as_str())
        .unwrap_or("default");
    let number = |key: &str| {
        rope[key]
            .as_f64()
            .ok_or_else(|| format!("rope_scaling `{kind}` has no number `{key}`"))
    };
    let scaling = match kind {
        "default" => return Ok(None),
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(format!(
                "rope_scaling type `{other}` is not supported (default, linear and llama3 are)"
            ));
        }
    };
    scaling.check()?;
    Ok(Some(scaling))
}

/// A tensor of a checkpoint in f32, row-major, on the host.
pub(crate) struct HostTensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) values: Vec<f32>,
}

impl HostTensor {
    fn read(view: &safetensors::tensor::TensorView<'_>) -> Result<Self, String> {
        use safetensors::Dtype;
        let bytes = view.data();
        let values = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => return Err(format!("dtype {other:?} is not supported (f32, bf16, f16 are)")),
        };
        Ok(Self {
            shape: view.shape().to_vec(),
            values,
        })
    }

    /// `[rows, cols]` → `[cols, rows]` (PyTorch's `[out, in]` ↔ burn's `[in, out]`).
    pub(crate) fn transposed(&self) -> Self {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut values = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                values[c * rows + r] = self.values[r * cols + c];
            }
        }
        Self {
            shape: vec![cols, rows],
            values,
        }
    }

    /// Rows (the first axis) reordered from HF's rotary halves to our neighbouring pairs, head by head: HF's
    /// row `j·hd/2 + i` of a head becomes our row `2i + j`. `to_hf` goes the other way.
    pub(crate) fn rotary_rows(&self, head_dim: usize, to_hf: bool) -> Self {
        let row = self.values.len() / self.shape[0];
        let half = head_dim / 2;
        let mut values = vec![0.0; self.values.len()];
        for head in 0..self.shape[0] / head_dim {
            for i in 0..half {
                for j in 0..2 {
                    let ours = head * head_dim + 2 * i + j;
                    let theirs = head * head_dim + j * half + i;
                    let (to, from) = if to_hf { (theirs, ours) } else { (ours, theirs) };
                    values[to * row..(to + 1) * row].copy_from_slice(&self.values[from * row..(from + 1) * row]);
                }
            }
        }
        Self {
            shape: self.shape.clone(),
            values,
        }
    }

    /// A bias vector with its rotary entries reordered as [`rotary_rows`](Self::rotary_rows) does.
    pub(crate) fn rotary_bias(self, head_dim: usize, to_hf: bool) -> Self {
        let n = self.shape[0];
        let column = Self {
            shape: vec![n, 1],
            values: self.values,
        }
        .rotary_rows(head_dim, to_hf);
        Self {
            shape: vec![n],
            values: column.values,
        }
    }

    /// `extra` more rows, each the mean of the existing rows.
    fn with_mean_rows(&self, extra: usize) -> Self {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut mean = vec![0.0f64; cols];
        for r in 0..rows {
            for (m, v) in mean.iter_mut().zip(&self.values[r * cols..(r + 1) * cols]) {
                *m += f64::from(*v);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / rows as f64) as f32).collect();
        let mut values = self.values.clone();
        for _ in 0..extra {
            values.extend_from_slice(&mean);
        }
        Self {
            shape: vec![rows + extra, cols],
            values,
        }
    }
}

/// Where one checkpoint tensor goes in our LM, and how it is changed on the way.
enum Target {
    /// A Linear weight (transposed), optionally with rotary rows permuted first.
    Linear(String, Option<usize>),
    /// A bias, optionally with rotary rows permuted.
    Bias(String, Option<usize>),
    /// A norm's scale.
    Norm(String),
    /// The embedding table, extended with mean rows.
    Embedding,
    /// The untied output head: extended with mean rows, then transposed.
    Head,
}

/// Our parameter path for an HF tensor name, or `None` for a name we do not know.
fn target(name: &str, head_dim: usize) -> Option<Target> {
    if name == "model.embed_tokens.weight" {
        return Some(Target::Embedding);
    }
    if name == "lm_head.weight" {
        return Some(Target::Head);
    }
    if name == "model.norm.weight" {
        return Some(Target::Norm("decoder.norm.gamma".into()));
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let ours = |path: &str| format!("decoder.layers.{layer}.{path}");
    Some(match rest {
        "input_layernorm.weight" => Target::Norm(ours("attention_norm.gamma")),
        "post_attention_layernorm.weight" => Target::Norm(ours("mlp_norm.gamma")),
        "self_attn.q_proj.weight" => Target::Linear(ours("attention.query.weight"), Some(head_dim)),
        "self_attn.k_proj.weight" => Target::Linear(ours("attention.key.weight"), Some(head_dim)),
        "self_attn.v_proj.weight" => Target::Linear(ours("attention.value.weight"), None),
        "self_attn.o_proj.weight" => Target::Linear(ours("attention.output.weight"), None),
        "self_attn.q_proj.bias" => Target::Bias(ours("attention.query.bias"), Some(head_dim)),
        "self_attn.k_proj.bias" => Target::Bias(ours("attention.key.bias"), Some(head_dim)),
        "self_attn.v_proj.bias" => Target::Bias(ours("attention.value.bias"), None),
        "mlp.gate_proj.weight" => Target::Linear(ours("mlp_up.linear_inner.weight"), None),
        "mlp.up_proj.weight" => Target::Linear(ours("mlp_up.linear_outer.weight"), None),
        "mlp.down_proj.weight" => Target::Linear(ours("mlp_down.weight"), None),
        _ => return None,
    })
}

/// Builds the LM of `config` (made from [`HfConfig::architecture`]) and fills it from the checkpoint: every
/// decoder weight, the text rows of the embedding table and the text head; the new rows as the module docs say.
///
/// # Errors
/// [`LmError::Pretrained`] naming the file: an architecture that is not this checkpoint's, an unreadable or
/// truncated safetensors file, a tensor of another shape than the config says, a tensor we do not know, one
/// the model needs that no file holds, a dtype other than f32/bf16/f16.
pub fn load_hf<B: Backend>(
    hf: &HfConfig,
    config: &TokenShuffleLmConfig,
    device: &B::Device,
) -> Result<TokenShuffleLm<B>, LmError> {
    let expected = hf.architecture(config.architecture.codebook, config.architecture.max_text_len);
    let arch = &config.architecture;
    if (arch.text_vocab, &arch.decoder, arch.text_head) != (expected.text_vocab, &expected.decoder, expected.text_head)
    {
        return Err(fail(
            &hf.dir,
            "the LM config is not this checkpoint's: build it with HfConfig::architecture",
        ));
    }
    let longest = config.sequence_len(arch.max_text_len);
    if let Some(window) = hf.sliding_window
        && longest > window
    {
        return Err(fail(
            &hf.dir,
            format!(
                "the LM's longest sequence is {longest} positions, beyond the checkpoint's sliding_window of {window} \
                 (full attention there would differ from the model's); use shorter captions or fewer image windows"
            ),
        ));
    }
    let mut model = config.init::<B>(device)?;
    let head_dim = hf.decoder.head_width();
    let extra = config.vocab().size() - hf.vocab_size;
    let specials = config.vocab().non_image() - hf.vocab_size;
    let mut needed: BTreeSet<String> = model
        .collect(None, None, false)
        .iter()
        .map(TensorSnapshot::full_path)
        .filter(|p| p.starts_with("decoder.") || p.starts_with("embedding.") || p.starts_with("text_head."))
        .collect();
    for file in hf.weight_files()? {
        let bytes = std::fs::read(&file).map_err(|e| fail(&file, format!("cannot be read ({e})")))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| fail(&file, format!("is not a safetensors file ({e})")))?;
        let mut snapshots = Vec::new();
        let mut shapes = BTreeMap::new();
        for (name, view) in tensors.tensors() {
            // Older checkpoints store the rotary table; it is recomputed from the config.
            if name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            let target = target(&name, head_dim)
                .ok_or_else(|| fail(&file, format!("holds {name}, which this loader does not know")))?;
            let tensor = HostTensor::read(&view).map_err(|why| fail(&file, format!("{name}: {why}")))?;
            let (path, tensor) = match target {
                Target::Linear(path, rotary) => {
                    let rows = match rotary {
                        Some(hd) => tensor.rotary_rows(hd, false),
                        None => tensor,
                    };
                    (path, rows.transposed())
                }
                Target::Bias(path, Some(hd)) => (path, tensor.rotary_bias(hd, false)),
                Target::Bias(path, None) | Target::Norm(path) => (path, tensor),
                Target::Embedding => ("embedding.weight".into(), tensor.with_mean_rows(extra)),
                Target::Head if hf.tied => continue,
                Target::Head => ("text_head.weight".into(), tensor.with_mean_rows(specials).transposed()),
            };
            shapes.insert(path.clone(), (name.clone(), tensor.shape.clone()));
            needed.remove(&path);
            let data = TensorData::new(tensor.values, tensor.shape);
            let stack = path.split('.').map(str::to_string).collect();
            snapshots.push(TensorSnapshot::from_data(data, stack, Vec::new(), ParamId::new()));
        }
        let result = model.apply(snapshots, None, None, false);
        if let Some(error) = result.errors.first() {
            return Err(fail(
                &file,
                format!("{error:?} (the checkpoint's config.json does not match its weights)"),
            ));
        }
        if let Some(unused) = result.unused.first() {
            let (name, _) = &shapes[unused];
            return Err(fail(
                &file,
                format!("{name} has no place in a model of this config.json"),
            ));
        }
    }
    if let Some(missing) = needed.iter().next() {
        return Err(fail(&hf.dir, format!("no weight file holds the tensor for {missing}")));
    }
    Ok(model)
}

impl HfConfig {
    /// Parameters of the checkpoint as it is (before our vocabulary extension): what its weight files hold.
    pub fn parameters(&self) -> usize {
        let d = &self.decoder;
        let (width, q, kv) = (
            d.d_model,
            d.n_heads * d.head_width(),
            d.n_kv_heads.unwrap_or(d.n_heads) * d.head_width(),
        );
        let biases = if d.qkv_bias { q + 2 * kv } else { 0 };
        let layer = 2 * width * q + 2 * width * kv + biases + 3 * width * d.mlp_hidden + 2 * width;
        let heads = if self.tied { 1 } else { 2 };
        heads * self.vocab_size * width + d.n_layers * layer + width
    }
}

/// Token ids and the logits a reference implementation computed for them: a safetensors file with `ids`
/// (int64, `[1, T]`) and `logits` (f32, `[1, T, vocab]`), as `scripts/hf_fixtures.py` writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HfReference {
    /// The file it was read from.
    pub path: PathBuf,
    /// The ids, `T` of them.
    pub ids: Vec<i64>,
    /// The logits, row-major `[T, vocab]`.
    pub logits: Vec<f32>,
    /// The vocabulary the logits cover.
    pub vocab: usize,
}

impl HfReference {
    /// Reads a reference file.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] naming the file: unreadable, not safetensors, `ids` or `logits` missing, of
    /// another dtype or of shapes that do not agree.
    pub fn read(path: &Path) -> Result<Self, LmError> {
        use safetensors::Dtype;
        let bytes = std::fs::read(path).map_err(|e| fail(path, format!("cannot be read ({e})")))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| fail(path, format!("is not a safetensors file ({e})")))?;
        let get = |name: &str, dtype: Dtype| {
            let view = file
                .tensor(name)
                .map_err(|_| fail(path, format!("has no tensor `{name}`")))?;
            match view.dtype() == dtype {
                true => Ok(view),
                false => Err(fail(path, format!("`{name}` is {:?}, not {dtype:?}", view.dtype()))),
            }
        };
        let ids = get("ids", Dtype::I64)?;
        let logits = get("logits", Dtype::F32)?;
        let t = ids.shape().iter().product::<usize>();
        let [one, rows, vocab] = logits.shape() else {
            return Err(fail(path, "`logits` is not [1, T, vocab]"));
        };
        if (*one, *rows) != (1, t) || t == 0 {
            return Err(fail(path, format!("`logits` is {:?} for {t} ids", logits.shape())));
        }
        Ok(Self {
            path: path.to_path_buf(),
            ids: ids
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            logits: logits
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            vocab: *vocab,
        })
    }

    /// The largest |ours − reference| over the reference's vocabulary at every position, with `model`'s
    /// [`TokenShuffleLm::text_logits`] of the same ids.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] when the reference covers more ids than the model's text vocabulary or holds an
    /// id outside it.
    pub fn max_difference<B: Backend>(&self, model: &TokenShuffleLm<B>, device: &B::Device) -> Result<f32, LmError> {
        let covered = model.vocab().non_image();
        let bad = |why: String| fail(&self.path, why);
        if self.vocab > covered || self.ids.iter().any(|&id| id < 0 || id as usize >= self.vocab) {
            return Err(bad(format!(
                "its {} logits or its ids do not fit the model's {covered} text ids",
                self.vocab
            )));
        }
        let t = self.ids.len();
        let ids = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
            TensorData::new(self.ids.clone(), [1, t]),
            device,
        );
        let ours: Vec<f32> = model
            .text_logits(ids, None)
            .narrow(2, 0, self.vocab)
            .into_data()
            .to_vec()
            .map_err(|e| bad(format!("{e:?}")))?;
        // NaN wins: a model that computes NaN must not pass as close.
        let worst = |acc: f32, d: f32| if d.is_nan() || d > acc { d } else { acc };
        Ok(ours
            .iter()
            .zip(&self.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, worst))
    }
}

impl HfReference {
    /// The reference `model` itself gives for `ids`: its [`TokenShuffleLm::vocabulary_logits`], so that an exported
    /// checkpoint can be checked in transformers against what it was exported from.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] when an id is outside the vocabulary or the logits cannot be read.
    pub fn of_model<B: Backend>(model: &TokenShuffleLm<B>, ids: &[i64], device: &B::Device) -> Result<Self, LmError> {
        let vocab = model.vocab().size();
        let path = PathBuf::from("reference.safetensors");
        if ids.is_empty() || ids.iter().any(|&id| id < 0 || id as usize >= vocab) {
            return Err(fail(&path, format!("ids must be 1 or more, each in 0..{vocab}")));
        }
        let t = ids.len();
        let input =
            burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(TensorData::new(ids.to_vec(), [1, t]), device);
        let logits = model
            .vocabulary_logits(input)
            .into_data()
            .to_vec()
            .map_err(|e| fail(&path, format!("{e:?}")))?;
        Ok(Self {
            path,
            ids: ids.to_vec(),
            logits,
            vocab,
        })
    }

    /// Writes the reference as [`read`](Self::read) reads it.
    ///
    /// # Errors
    /// [`LmError::Pretrained`] naming `path` when it cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), LmError> {
        use safetensors::{Dtype, tensor::TensorView};
        let ids: Vec<u8> = self.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        let logits: Vec<u8> = self.logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = self.ids.len();
        let views = [
            ("ids", TensorView::new(Dtype::I64, vec![1, t], &ids)),
            ("logits", TensorView::new(Dtype::F32, vec![1, t, self.vocab], &logits)),
        ]
        .into_iter()
        .map(|(name, view)| view.map(|v| (name, v)).map_err(|e| fail(path, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
        let bytes = safetensors::serialize(views, None).map_err(|e| fail(path, e.to_string()))?;
        std::fs::write(path, bytes).map_err(|e| fail(path, format!("cannot be written ({e})")))
    }
}
