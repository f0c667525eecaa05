use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig, SwiGlu, SwiGluConfig};
use burn::tensor::{Tensor, backend::Backend};

use token_shuffle::on_rows;

use crate::attention::full_sequence_mask;
use crate::rope::RopeScaling;
use crate::{CausalSelfAttention, CausalSelfAttentionConfig, KvCache};

/// Configuration of a [`Decoder`]: a stack of Llama-style layers.
#[derive(Config, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Model width d.
    pub d_model: usize,
    /// Number of layers.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (grouped-query attention). Default: `None`, meaning `n_heads`.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Hidden width of the SwiGLU MLP.
    pub mlp_hidden: usize,
    /// Rotary base frequency. Default: 10000.
    #[config(default = 10000.0)]
    pub rope_theta: f32,
    /// RMSNorm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Width of one head. Default: `None`, meaning `d_model / n_heads`.
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Biases on the query, key and value projections (Qwen2). Default: false.
    #[config(default = false)]
    pub qkv_bias: bool,
    /// Rescaling of the rotary frequencies (pretrained models' `rope_scaling`). Default: none.
    #[config(default = "None")]
    pub rope_scaling: Option<RopeScaling>,
}

impl DecoderConfig {
    /// Width of one head: `head_dim`, or `d_model / n_heads`.
    pub fn head_width(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_heads.max(1))
    }
}

/// One pre-norm layer: `x + Attn(RMSNorm(x))`, then `x + W_down·SwiGLU(RMSNorm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    attention_norm: RmsNorm<B>,
    attention: CausalSelfAttention<B>,
    mlp_norm: RmsNorm<B>,
    mlp_up: SwiGlu<B>,
    mlp_down: Linear<B>,
}

/// A stack of [`DecoderLayer`]s and a final RMSNorm.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
}

/// The KV caches of every layer of a [`Decoder`].
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    layers: Vec<KvCache<B>>,
}

impl<B: Backend> DecoderCache<B> {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DecoderConfig {
    /// Builds the decoder on `device`, with rotary tables for sequences of up to `max_seq_len` positions (the
    /// LM derives it from its longest prompt and its image windows: [`crate::TokenShuffleLmConfig::sequence_len`]).
    ///
    /// # Panics
    /// When `d_model` is not divisible by `n_heads`, or `n_heads` by `n_kv_heads`
    /// ([`crate::LmArchitecture::check`] tells the same without building anything).
    pub fn init<B: Backend>(&self, max_seq_len: usize, device: &B::Device) -> Decoder<B> {
        let layer = || DecoderLayer {
            attention_norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
            attention: CausalSelfAttentionConfig::new(self.d_model, self.n_heads, max_seq_len)
                .with_n_kv_heads(self.n_kv_heads)
                .with_rope_theta(self.rope_theta)
                .with_head_dim(self.head_dim)
                .with_qkv_bias(self.qkv_bias)
                .with_rope_scaling(self.rope_scaling)
                .init(device),
            mlp_norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
            mlp_up: SwiGluConfig::new(self.d_model, self.mlp_hidden)
                .with_bias(false)
                .init(device),
            mlp_down: LinearConfig::new(self.mlp_hidden, self.d_model)
                .with_bias(false)
                .init(device),
        };
        Decoder {
            layers: (0..self.n_layers).map(|_| layer()).collect(),
            norm: RmsNormConfig::new(self.d_model)
                .with_epsilon(self.norm_eps)
                .init(device),
        }
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// One layer; `attention` runs the attention sub-layer on the normalised input (cached or whole-sequence).
    fn forward(
        &self,
        x: Tensor<B, 3>,
        attention: impl FnOnce(&CausalSelfAttention<B>, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let x = x.clone() + attention(&self.attention, self.attention_norm.forward(x));
        let mlp = on_rows(self.mlp_norm.forward(x.clone()), |x| {
            self.mlp_down.forward(self.mlp_up.forward(x))
        });
        x + mlp
    }
}

impl<B: Backend> Decoder<B> {
    /// An empty cache for `batch` rows and up to `max_len` positions.
    pub fn new_cache(&self, batch: usize, max_len: usize, device: &B::Device) -> DecoderCache<B> {
        let layers = self
            .layers
            .iter()
            .map(|l| KvCache::new(batch, l.attention.n_kv_heads(), max_len, l.attention.head_dim(), device))
            .collect();
        DecoderCache { layers }
    }

    /// Runs the stack causally over `x`, extending `cache` when one is given, with `key_bias` added to the
    /// scores of every key (see [`CausalSelfAttention::forward`]).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - `key_bias`: `[B, cached + T]`
    /// - output: `[B, T, d]`, normalised
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut DecoderCache<B>>,
        key_bias: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        let x = match cache {
            Some(cache) => self.layers.iter().zip(&mut cache.layers).fold(x, |x, (layer, kv)| {
                layer.forward(x, |attention, x| attention.forward(x, Some(kv), key_bias.clone()))
            }),
            None => {
                let [batch, t, _] = x.dims();
                let heads = self.layers.first().map_or(1, |l| l.attention.n_heads());
                let mask = full_sequence_mask(key_bias, batch, heads, t, &x.device());
                self.layers.iter().fold(x, |x, layer| {
                    layer.forward(x, |attention, x| attention.forward_full(x, mask.clone()))
                })
            }
        };
        self.norm.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = token_shuffle_test_support::TestBackend;

    #[test]
    fn cached_decoding_reproduces_the_full_forward() {
        let device = Default::default();
        let decoder = DecoderConfig::new(32, 3, 4, 64)
            .with_n_kv_heads(Some(2))
            .init::<B>(16, &device);
        let x = Tensor::<B, 3>::random([2, 10, 32], Distribution::Normal(0.0, 1.0), &device);
        let full = decoder.forward(x.clone(), None, None);
        let mut cache = decoder.new_cache(2, 16, &device);
        let mut parts = vec![decoder.forward(x.clone().narrow(1, 0, 4), Some(&mut cache), None)];
        for i in 4..10 {
            parts.push(decoder.forward(x.clone().narrow(1, i, 1), Some(&mut cache), None));
        }
        assert_eq!(cache.len(), 10);
        let stepped = Tensor::cat(parts, 1);
        assert!(stepped.all_close(full, None, Some(1e-4)));
    }
}
