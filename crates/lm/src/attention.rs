use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};

/// Configuration of [`CausalSelfAttention`].
#[derive(Config, Debug)]
pub struct CausalSelfAttentionConfig {
    /// Model width d.
    pub d_model: usize,
    /// Number of query heads; must divide d.
    pub n_heads: usize,
    /// Number of key/value heads (grouped-query attention); must divide `n_heads`. Default: `None`, meaning
    /// `n_heads` (plain multi-head attention).
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Longest sequence the rotary table covers (text + 1 + image windows).
    pub max_seq_len: usize,
    /// Rotary base frequency. Default: 10000.
    #[config(default = 10000.0)]
    pub rope_theta: f32,
}

/// Causal multi-head self-attention with rotary positions over the (shortened) sequence and optional grouped
/// key/value heads, in the Llama design (no biases).
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    query: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    output: Linear<B>,
    rope: RotaryEncoding<B>,
    n_heads: usize,
    n_kv_heads: usize,
}

/// Keys and values of the positions seen so far, preallocated for the whole sequence.
///
/// # Shapes
/// - keys, values: `[B, n_kv_heads, max_len, head_dim]`, of which the first `len` positions are filled
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `batch` rows and up to `max_len` positions.
    pub fn new(batch: usize, n_kv_heads: usize, max_len: usize, head_dim: usize, device: &B::Device) -> Self {
        let zeros = Tensor::zeros([batch, n_kv_heads, max_len, head_dim], device);
        Self {
            keys: zeros.clone(),
            values: zeros,
            len: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `t` positions and returns all cached keys and values, `[B, n_kv_heads, len, head_dim]`.
    ///
    /// # Panics
    /// When the cache would hold more than the `max_len` it was made for (a caller's bug: the LM sizes its
    /// caches from the prompt and the image).
    fn append(&mut self, keys: Tensor<B, 4>, values: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, heads, t, dim] = keys.dims();
        let max_len = self.keys.dims()[2];
        assert!(
            self.len + t <= max_len,
            "KV cache holds {max_len} positions; {} were asked for",
            self.len + t
        );
        let range = [0..batch, 0..heads, self.len..self.len + t, 0..dim];
        // Move the buffers out while writing: a buffer that is not shared is updated in place, where a clone
        // would make every step copy the whole cache.
        let device = keys.device();
        let placeholder = || Tensor::empty([0, 0, 0, 0], &device);
        self.keys = std::mem::replace(&mut self.keys, placeholder()).slice_assign(range.clone(), keys);
        self.values = std::mem::replace(&mut self.values, placeholder()).slice_assign(range, values);
        self.len += t;
        (
            self.keys.clone().narrow(2, 0, self.len),
            self.values.clone().narrow(2, 0, self.len),
        )
    }
}

impl CausalSelfAttentionConfig {
    /// Builds the layer on `device`.
    ///
    /// # Panics
    /// When `d_model` is not divisible by `n_heads`, or `n_heads` by `n_kv_heads`. Configs read from a file are
    /// checked first with [`crate::LmArchitecture::check`], which returns these as errors.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CausalSelfAttention<B> {
        let n_kv_heads = self.n_kv_heads.unwrap_or(self.n_heads);
        assert!(
            self.d_model.is_multiple_of(self.n_heads),
            "d_model {} is not divisible by n_heads {}",
            self.d_model,
            self.n_heads
        );
        assert!(
            self.n_heads.is_multiple_of(n_kv_heads),
            "n_heads {} is not divisible by n_kv_heads {n_kv_heads}",
            self.n_heads
        );
        let head_dim = self.d_model / self.n_heads;
        let linear = |d_out| LinearConfig::new(self.d_model, d_out).with_bias(false).init(device);
        CausalSelfAttention {
            query: linear(self.d_model),
            key: linear(n_kv_heads * head_dim),
            value: linear(n_kv_heads * head_dim),
            output: linear(self.d_model),
            rope: RotaryEncodingConfig::new(self.max_seq_len, head_dim)
                .with_theta(self.rope_theta)
                .init(device),
            n_heads: self.n_heads,
            n_kv_heads,
        }
    }
}

impl<B: Backend> CausalSelfAttention<B> {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.query.weight.dims()[1] / self.n_heads
    }

    /// Number of key/value heads (the KV cache's head count).
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Attends each of `x`'s positions to itself and everything before it (in the cache, then in `x`).
    ///
    /// Without a cache, `x` is a whole sequence. With one, `x` continues the cached positions, which the call
    /// extends; the rotary positions continue from the cache's length. `key_bias`, when given, is added to the
    /// attention scores of every key (cached ones first): a large negative value hides a key (padding).
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - `key_bias`: `[B, cached + T]`
    /// - output: `[B, T, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut KvCache<B>>,
        key_bias: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        let [batch, t, d] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim());
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([batch, t, n, hd]).swap_dims(1, 2);
        let start = cache.as_ref().map_or(0, |c| c.len());
        assert!(
            t == 1 || start == 0,
            "a cached forward takes one position at a time after the prefill"
        );
        let q = self.rope.apply(heads(self.query.forward(x.clone()), h), start);
        let k = self.rope.apply(heads(self.key.forward(x.clone()), kv), start);
        let v = heads(self.value.forward(x), kv);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let (k, v) = (repeat_kv(k, h / kv), repeat_kv(v, h / kv));
        // Causal masking aligns the last query with the last key; a cached step of one position needs none.
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: t > 1,
        };
        let bias = key_bias.map(|bias| {
            let keys = bias.dims()[1];
            bias.reshape([batch, 1, 1, keys]).expand([batch, h, t, keys])
        });
        let context = attention(q, k, v, None, bias, options);
        self.output.forward(context.swap_dims(1, 2).reshape([batch, t, d]))
    }
}

/// Repeats each key/value head for the query heads that share it.
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, repeats: usize) -> Tensor<B, 4> {
    if repeats == 1 {
        return x;
    }
    let [batch, heads, t, dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .repeat_dim(2, repeats)
        .reshape([batch, heads * repeats, t, dim])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type B = token_shuffle_test_support::TestBackend;

    fn layer(kv_heads: Option<usize>) -> CausalSelfAttention<B> {
        CausalSelfAttentionConfig::new(32, 4, 16)
            .with_n_kv_heads(kv_heads)
            .init(&Default::default())
    }

    #[test]
    fn cached_steps_reproduce_the_full_forward() {
        for kv_heads in [None, Some(2), Some(1)] {
            let attn = layer(kv_heads);
            let x = Tensor::<B, 3>::random([2, 9, 32], Distribution::Normal(0.0, 1.0), &Default::default());
            let full = attn.forward(x.clone(), None, None);
            let mut cache = KvCache::new(2, attn.n_kv_heads(), 16, attn.head_dim(), &Default::default());
            // Prefill 5 positions, then one at a time.
            let mut parts = vec![attn.forward(x.clone().narrow(1, 0, 5), Some(&mut cache), None)];
            for i in 5..9 {
                parts.push(attn.forward(x.clone().narrow(1, i, 1), Some(&mut cache), None));
            }
            let stepped = Tensor::cat(parts, 1);
            assert!(
                stepped.clone().all_close(full.clone(), None, Some(1e-4)),
                "{kv_heads:?}: {}",
                (stepped - full).abs().max().into_scalar()
            );
        }
    }

    #[test]
    fn later_positions_do_not_change_earlier_outputs() {
        let attn = layer(Some(2));
        let device = Default::default();
        let x = Tensor::<B, 3>::random([1, 8, 32], Distribution::Normal(0.0, 1.0), &device);
        let changed = x
            .clone()
            .slice_assign([0..1, 5..6, 0..32], Tensor::ones([1, 1, 32], &device) * 3.0);
        let (a, b) = (attn.forward(x, None, None), attn.forward(changed, None, None));
        assert!(
            a.clone()
                .narrow(1, 0, 5)
                .all_close(b.clone().narrow(1, 0, 5), None, Some(1e-6))
        );
        assert!(!a.narrow(1, 5, 3).all_close(b.narrow(1, 5, 3), None, Some(1e-3)));
    }
}
