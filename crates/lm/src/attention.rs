use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use token_shuffle::on_rows;

use crate::rope::RopeScaling;

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
    /// Width of one head. Default: `None`, meaning `d_model / n_heads` (pretrained models such as Qwen3 or
    /// Gemma choose it apart).
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Biases on the query, key and value projections (Qwen2's). Default: false (Llama's).
    #[config(default = false)]
    pub qkv_bias: bool,
    /// Rescaling of the rotary frequencies (a pretrained model's `rope_scaling`). Default: none.
    #[config(default = "None")]
    pub rope_scaling: Option<RopeScaling>,
}

/// Causal multi-head self-attention with rotary positions over the (shortened) sequence and optional grouped
/// key/value heads, in the Llama design (no biases unless `qkv_bias`).
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
            self.head_dim.is_some() || self.d_model.is_multiple_of(self.n_heads),
            "d_model {} is not divisible by n_heads {}",
            self.d_model,
            self.n_heads
        );
        assert!(
            self.n_heads.is_multiple_of(n_kv_heads),
            "n_heads {} is not divisible by n_kv_heads {n_kv_heads}",
            self.n_heads
        );
        let head_dim = self.head_dim.unwrap_or(self.d_model / self.n_heads);
        let linear = |d_in, d_out, bias| LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
        let (d, qkv_bias) = (self.d_model, self.qkv_bias);
        let rope = RotaryEncodingConfig::new(self.max_seq_len, head_dim).with_theta(self.rope_theta);
        let rope = match self.rope_scaling {
            None => rope.init(device),
            Some(scaling) => rope.init_with_frequency_scaling(
                |theta: Tensor<B, 1>| {
                    let scaled: Vec<f32> = theta
                        .to_data()
                        .iter::<f32>()
                        .map(|t| scaling.scale(f64::from(t)) as f32)
                        .collect();
                    let n = scaled.len();
                    Tensor::from_data(TensorData::new(scaled, [n]), &theta.device())
                },
                device,
            ),
        };
        CausalSelfAttention {
            query: linear(d, self.n_heads * head_dim, qkv_bias),
            key: linear(d, n_kv_heads * head_dim, qkv_bias),
            value: linear(d, n_kv_heads * head_dim, qkv_bias),
            output: linear(self.n_heads * head_dim, d, false),
            rope,
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

    /// Number of query heads.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Number of key/value heads (the KV cache's head count).
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Queries, keys and values of `x`, split into heads, with rotary positions from `start`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - output: `[B, h, T, hd]`, `[B, kv, T, hd]`, `[B, kv, T, hd]`
    fn project(&self, x: Tensor<B, 3>, start: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, t, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim());
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([batch, t, n, hd]).swap_dims(1, 2);
        let linear = |layer: &Linear<B>, x: Tensor<B, 3>| on_rows(x, |x| layer.forward(x));
        let q = heads(self.rotate(linear(&self.query, x.clone()), h, start), h);
        let k = heads(self.rotate(linear(&self.key, x.clone()), kv, start), kv);
        let v = heads(linear(&self.value, x), kv);
        (q, k, v)
    }

    /// Rotary positions `start..start + T` on `x` before its heads are split: each pair `(a, b)` of a head's
    /// channels becomes `(a·cos − b·sin, b·cos + a·sin)` with the angles of burn's `RotaryEncoding` (whose table
    /// this reads). Written as `x ⊙ C + (x·R) ⊙ S` on contiguous `[B, T·width]` rows, with `R` the pair rotation,
    /// so that both products take Flex's shared-row SIMD path; `RotaryEncoding::apply` multiplies a
    /// `[N, T, hd, 2]` tensor by a broadcast `[1, T, hd, 2]` one, which Flex walks element by element.
    ///
    /// # Shapes
    /// - `x`: `[B, T, heads·hd]`
    /// - output: the same
    fn rotate(&self, x: Tensor<B, 3>, heads: usize, start: usize) -> Tensor<B, 3> {
        let [batch, t, width] = x.dims();
        let hd = width / heads;
        let device = x.device();
        let freq = self.rope.freq_complex.clone().narrow(0, start, t); // [t, hd, 2]: (cos, sin)
        let table = |part: usize| {
            freq.clone()
                .narrow(2, part, 1)
                .reshape([t, 1, hd])
                .repeat_dim(1, heads)
                .reshape([1, t * width])
        };
        // (x·R)[2i] = −x[2i+1], (x·R)[2i+1] = x[2i].
        let mut rotation = vec![0.0f32; hd * hd];
        for i in 0..hd / 2 {
            rotation[(2 * i + 1) * hd + 2 * i] = -1.0;
            rotation[2 * i * hd + 2 * i + 1] = 1.0;
        }
        let rotation = Tensor::<B, 2>::from_data(TensorData::new(rotation, [hd, hd]), &device);
        let rotated = x
            .clone()
            .reshape([batch * t * heads, hd])
            .matmul(rotation)
            .reshape([batch, t * width]);
        (x.reshape([batch, t * width]) * table(0) + rotated * table(1)).reshape([batch, t, width])
    }

    /// Merges the heads of the attention context and applies the output projection.
    fn merge(&self, context: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, heads, t, hd] = context.dims();
        on_rows(context.swap_dims(1, 2).reshape([batch, t, heads * hd]), |x| {
            self.output.forward(x)
        })
    }

    /// Attends each position of a whole sequence `x` to itself and everything before it, with `mask` (from
    /// [`full_sequence_mask`]: causal and key padding, one additive tensor) added to the scores.
    ///
    /// This is the training path. It is written out (scores, one same-shape add, softmax, context) rather than
    /// calling burn's fused `attention`, whose autodiff fallback masks with 4-D broadcasts (the causal mask, the
    /// expanded key bias) that Flex walks element by element: on lm-tiny at s = 1 that was most of a training step.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`
    /// - `mask`: `[B, h, T, T]`
    /// - output: `[B, T, d]`
    pub fn forward_full(&self, x: Tensor<B, 3>, mask: Tensor<B, 4>) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, 0);
        let repeats = self.n_heads / self.n_kv_heads;
        let (k, v) = (repeat_kv(k, repeats), repeat_kv(v, repeats));
        let scale = (self.head_dim() as f64).sqrt().recip();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + mask;
        self.merge(softmax(scores, 3).matmul(v))
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
    ///
    /// # Panics
    /// When a cached call after the prefill gives more than one position.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: Option<&mut KvCache<B>>,
        key_bias: Option<Tensor<B, 2>>,
    ) -> Tensor<B, 3> {
        let [batch, t, _] = x.dims();
        let h = self.n_heads;
        let start = cache.as_ref().map_or(0, |c| c.len());
        assert!(
            t == 1 || start == 0,
            "a cached forward takes one position at a time after the prefill"
        );
        let (q, k, v) = self.project(x, start);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let repeats = h / self.n_kv_heads;
        let (k, v) = (repeat_kv(k, repeats), repeat_kv(v, repeats));
        // Causal masking aligns the last query with the last key; a cached step of one position needs none.
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: t > 1,
        };
        // The bias materialised per head rather than broadcast with `expand`, so that every backend's attention
        // kernel gets a plain contiguous mask (a cached step has t = 1: B·h·keys values, negligible).
        let bias = key_bias.map(|bias| {
            let keys = bias.dims()[1];
            bias.reshape([batch, 1, 1, keys]).repeat_dim(1, h).repeat_dim(2, t)
        });
        self.merge(attention(q, k, v, None, bias, options))
    }
}

/// The additive attention mask of a whole sequence of `t` positions for `heads` heads: −∞ where a key lies in the
/// future of its query (causal), `key_bias` added (−10⁹ hides a padding key), 0 elsewhere. Built once per
/// forward pass and shared by every layer, as one contiguous tensor, so that each layer adds it with a plain
/// same-shape add.
///
/// # Shapes
/// - `key_bias`: `[B, t]`
/// - output: `[B, heads, t, t]`
pub fn full_sequence_mask<B: Backend>(
    key_bias: Option<Tensor<B, 2>>,
    batch: usize,
    heads: usize,
    t: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let rows = Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([t, 1]);
    let cols = Tensor::<B, 1, Int>::arange(0..t as i64, device).reshape([1, t]);
    // −∞ rather than a large finite value: the diagonal is never masked, so every row keeps a finite maximum, and
    // exp(−∞) is libm's fast path where exp(−10⁹) takes its slow underflow path (measured: ~4% of a step).
    let causal = Tensor::<B, 2>::zeros([t, t], device).mask_fill(cols.greater(rows), f32::NEG_INFINITY); // [t, t]
    let mask = match key_bias {
        Some(bias) => causal.reshape([1, t, t]) + bias.reshape([batch, 1, t]),
        None => causal.reshape([1, t, t]).expand([batch, t, t]),
    };
    // `repeat_dim` writes a contiguous copy, which the per-layer add needs to take Flex's fast path.
    mask.reshape([batch, 1, t, t]).repeat_dim(1, heads)
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

    /// The same with a key bias that hides padding keys, as generation from left-padded prompts uses it.
    #[test]
    fn cached_steps_with_a_key_bias_reproduce_the_full_forward() {
        let device = Default::default();
        let attn = layer(Some(2));
        let x = Tensor::<B, 3>::random([2, 9, 32], Distribution::Normal(0.0, 1.0), &device);
        // Row 0's first two keys are padding.
        let bias =
            Tensor::<B, 2>::zeros([2, 9], &device).slice_assign([0..1, 0..2], Tensor::full([1, 2], -1e9, &device));
        let full = attn.forward_full(x.clone(), full_sequence_mask(Some(bias.clone()), 2, 4, 9, &device));
        let mut cache = KvCache::new(2, attn.n_kv_heads(), 16, attn.head_dim(), &device);
        let mut parts = vec![attn.forward(
            x.clone().narrow(1, 0, 5),
            Some(&mut cache),
            Some(bias.clone().narrow(1, 0, 5)),
        )];
        for i in 5..9 {
            parts.push(attn.forward(
                x.clone().narrow(1, i, 1),
                Some(&mut cache),
                Some(bias.clone().narrow(1, 0, i + 1)),
            ));
        }
        let stepped = Tensor::cat(parts, 1).narrow(1, 2, 7); // row 0's padding queries see no key: not compared
        let full = full.narrow(1, 2, 7);
        assert!(
            stepped.clone().all_close(full.clone(), None, Some(1e-4)),
            "{}",
            (stepped - full).abs().max().into_scalar()
        );
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

    #[test]
    fn rotary_positions_match_burns_rotary_encoding() {
        let device = Default::default();
        let attention = layer(Some(2));
        let (batch, t, heads, hd) = (2, 5, 4, 8);
        let x = Tensor::<B, 3>::random([batch, t, heads * hd], Distribution::Normal(0.0, 1.0), &device);
        for start in [0, 3] {
            let ours = attention.rotate(x.clone(), heads, start);
            let split = x.clone().reshape([batch, t, heads, hd]).swap_dims(1, 2);
            let burns = attention
                .rope
                .apply(split, start)
                .swap_dims(1, 2)
                .reshape([batch, t, heads * hd]);
            assert!(ours.all_close(burns, None, Some(1e-5)), "start {start}");
        }
    }
}
