//! Parameters, sequence length and FLOPs of a [`TokenShuffleLmConfig`], counted analytically, so that the
//! paper's 2.7B shape can be sized without building it.
//!
//! Conventions: one multiply-add is 2 FLOPs; a linear layer of `i × o` weights costs `2·i·o` FLOPs per token it
//! is applied to; causal attention over T positions costs `2·T²·d` per layer (QKᵀ and AV, `2·T²·d` each, halved by
//! the causal mask); the backward pass costs twice the forward, so a training step is 3× the forward. Norms,
//! activations, biases, softmax and the embedding lookup are left out (they are O(T·d), not O(T·d²)).

use serde::Serialize;
use token_shuffle::Fusion;

use crate::{LmError, TokenShuffleLmConfig};

/// The counts of one model on one image size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelCount {
    /// Trainable parameters (exact: equals `num_params()` of the built model).
    pub parameters: usize,
    /// Image codes per image, H'·W'.
    pub image_codes: usize,
    /// Transformer positions per training sequence (`text + 1 + N/s²`).
    pub sequence_len: usize,
    /// FLOPs of one training step on one image (forward + backward).
    pub train_flops: f64,
    /// FLOPs of generating one image with a KV cache (prefill + one step per window), without CFG.
    pub generate_flops: f64,
}

impl TokenShuffleLmConfig {
    /// Counts parameters and FLOPs for prompts of `text_len` ids.
    ///
    /// The arithmetic is done in `f64` (exact for integers below 2⁵³), so that no size of a config file can
    /// overflow it; the integer results are checked.
    ///
    /// # Errors
    /// [`LmError::Architecture`] when the image's codes, the sequence or the parameter count do not fit the
    /// integers they are reported in (a resolution or width far beyond any model).
    pub fn count(&self, text_len: usize) -> Result<ModelCount, LmError> {
        let too_large = |what: &str| self.too_large(what, text_len);
        let (image_codes, windows, sequence_len) = self.positions(text_len)?;
        let arch = &self.architecture;
        let f = |n: usize| n as f64;
        let d = f(arch.decoder.d_model);
        let heads = arch.decoder.n_heads.max(1);
        let head_width = f(arch.decoder.head_width());
        let q_width = f(heads) * head_width;
        let kv_width = f(arch.decoder.n_kv_heads.unwrap_or(heads)) * head_width;
        let qkv_biases = if arch.decoder.qkv_bias {
            q_width + 2.0 * kv_width
        } else {
            0.0
        };
        let hidden = f(arch.decoder.mlp_hidden);
        let layers = f(arch.decoder.n_layers);
        let codes = f(image_codes);
        let windows_f = f(windows);
        let k = f(arch.codebook);
        let vocab = f(arch.text_vocab) + f(crate::vocab::SPECIALS) + k;

        // Weights applied once per Transformer position.
        let layer_weights = 2.0 * d * q_width + 2.0 * d * kv_width + 3.0 * d * hidden;
        let layer_params = layer_weights + qkv_biases + 2.0 * d;
        let decoder_params = layers * layer_params + d;

        let ShuffleCost {
            shuffle_params,
            unshuffle_params,
            fuse_weights,
            unfuse_weights,
            compress,
            narrow,
        } = self.shuffle_cost();
        let shuffled = self.window != 1;

        let text_head = match arch.text_head {
            crate::TextHead::Linear => d * (f(arch.text_vocab) + f(crate::vocab::SPECIALS)),
            crate::TextHead::ScaledEmbedding | crate::TextHead::TiedEmbedding => 0.0,
        };
        let parameters = vocab * d + shuffle_params + decoder_params + unshuffle_params + d * k + text_head;
        // Every term is a non-negative integer no larger than the sum, so below 2⁵³ the sum is exact.
        if parameters >= 2f64.powi(53) {
            return Err(too_large("the parameter count"));
        }

        // Forward FLOPs of one training sequence.
        let t = f(sequence_len);
        let shuffle_flops = if shuffled {
            2.0 * codes * compress + 2.0 * windows_f * fuse_weights
        } else {
            0.0
        };
        let unshuffle_flops = if shuffled {
            2.0 * windows_f * unfuse_weights + 2.0 * codes * narrow * d
        } else {
            0.0
        };
        let head_flops = 2.0 * codes * d * k;
        let decoder_flops = |positions: f64| 2.0 * positions * layers * layer_weights;
        let attention_flops = |positions: f64| 2.0 * positions * positions * layers * q_width;
        let forward = shuffle_flops + decoder_flops(t) + attention_flops(t) + unshuffle_flops + head_flops;

        // Generation: the same per-token work, but attention at step i reads the i cached positions (4·i·d per
        // layer: QKᵀ and AV for one query), and the last window is never fed back. The sum over steps
        // i = 0..W-2 of (P + i + 1) is (W-1)·(P + 1) + (W-1)(W-2)/2, in closed form so a huge grid costs nothing.
        let prompt = f(text_len) + 2.0;
        let steps = (windows_f - 1.0).max(0.0);
        let cached_positions = steps * (prompt + 1.0) + steps * (steps - 1.0).max(0.0) / 2.0;
        let cached_attention = 4.0 * cached_positions * layers * q_width;
        let generate = attention_flops(prompt)
            + decoder_flops(t)
            + cached_attention
            + shuffle_flops
            + unshuffle_flops
            + head_flops;

        Ok(ModelCount {
            parameters: parameters as usize,
            image_codes,
            sequence_len,
            train_flops: 3.0 * forward,
            generate_flops: generate,
        })
    }
    fn too_large(&self, what: &str, text_len: usize) -> LmError {
        LmError::Architecture(format!(
            "{what} of a {}×{} code grid at s = {} with {text_len} text ids is too large to count; use a smaller \
             resolution or model",
            self.grid[0], self.grid[1], self.window
        ))
    }

    /// Image codes, windows (Transformer positions of the image) and the training sequence's length.
    fn positions(&self, text_len: usize) -> Result<(usize, usize, usize), LmError> {
        let s = self.window.max(1);
        let image_codes = self.grid[0]
            .checked_mul(self.grid[1])
            .ok_or_else(|| self.too_large("the image codes", text_len))?;
        let windows = (self.grid[0] / s)
            .checked_mul(self.grid[1] / s)
            .ok_or_else(|| self.too_large("the windows", text_len))?;
        let sequence_len = text_len
            .checked_add(windows)
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| self.too_large("the sequence", text_len))?;
        Ok((image_codes, windows, sequence_len))
    }

    /// Token-Shuffle's parameters and weights: per side a fusion stage, the compress and expand layers (with
    /// biases); nothing at s = 1.
    fn shuffle_cost(&self) -> ShuffleCost {
        let arch = &self.architecture;
        let s = self.window.max(1);
        let d = arch.decoder.d_model as f64;
        let blocks = arch.shuffle_mlp_blocks as f64;
        let narrow = (arch.decoder.d_model / (s * s).max(1)) as f64; // d / s²
        let block_params = 2.0 * d + 2.0 * (d * d + d);
        let mixing = |fusion: Fusion| {
            if fusion.uses_mlp_blocks() {
                (blocks * block_params, blocks * 2.0 * d * d)
            } else {
                (d * d + d, d * d)
            }
        };
        let (fuse_params, fuse_weights) = mixing(arch.fusion);
        let (unfuse_params, unfuse_weights) = mixing(arch.fusion.unshuffle_side());
        let compress = if arch.fusion.compresses() { d * narrow } else { 0.0 };
        let shuffled = self.window != 1;
        ShuffleCost {
            shuffle_params: if shuffled {
                fuse_params + compress + if compress > 0.0 { narrow } else { 0.0 }
            } else {
                0.0
            },
            unshuffle_params: if shuffled { unfuse_params + narrow * d + d } else { 0.0 },
            fuse_weights,
            unfuse_weights,
            compress,
            narrow,
        }
    }
}

/// Token-Shuffle's share of the counts.
struct ShuffleCost {
    shuffle_params: f64,
    unshuffle_params: f64,
    /// Weights of the fusion stage applied once per window, on the way in and on the way out.
    fuse_weights: f64,
    unfuse_weights: f64,
    /// Weights of the d → d/s² compression, applied once per code (0 when the variant does not compress).
    compress: f64,
    /// d/s².
    narrow: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecoderConfig, LmArchitecture, TextHead};
    use burn::module::Module;

    type B = token_shuffle_test_support::TestBackend;

    #[test]
    fn parameter_count_equals_the_built_model() {
        let device = Default::default();
        for window in [1, 2, 4] {
            for fusion in [Fusion::ResidualMlp, Fusion::Linear, Fusion::LastToken] {
                for kv in [None, Some(2)] {
                    // With kv heads, also what pretrained models add: their own head width, q/k/v biases, and
                    // an untied text head.
                    let pretrained = kv.is_some();
                    let decoder = DecoderConfig::new(32, 2, 4, 48)
                        .with_n_kv_heads(kv)
                        .with_head_dim(pretrained.then_some(6))
                        .with_qkv_bias(pretrained);
                    let text_head = if pretrained {
                        TextHead::Linear
                    } else {
                        TextHead::ScaledEmbedding
                    };
                    let config = LmArchitecture::new(30, 24, 5, decoder)
                        .with_text_head(text_head)
                        .with_fusion(fusion)
                        .with_shuffle_mlp_blocks(3)
                        .into_config([8, 8], window);
                    let built = config.init::<B>(&device).unwrap().num_params();
                    assert_eq!(
                        config.count(5).unwrap().parameters,
                        built,
                        "s = {window}, {fusion:?}, kv {kv:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn flops_follow_the_formula_on_a_hand_sized_case() {
        // No shuffle (s = 1), 1 layer, d = 4, MLP 8, 2×2 codes, K = 3, text of 1 id: T = 1 + 1 + 4 = 6 positions.
        let config = LmArchitecture::new(2, 3, 1, DecoderConfig::new(4, 1, 1, 8)).into_config([2, 2], 1);
        let count = config.count(1).unwrap();
        assert_eq!(count.sequence_len, 6);
        let layer_weights = 2 * 16 + 2 * 16 + 3 * 4 * 8; // q, o; k, v; SwiGLU (2) + down
        let forward = 2.0 * 6.0 * layer_weights as f64 + 2.0 * 36.0 * 4.0 + 2.0 * (4 * 4 * 3) as f64;
        assert_eq!(count.train_flops, 3.0 * forward);
        // Generation: prefill of 3 positions, 3 cached steps over 4, 5, 6 positions.
        let generate = 2.0 * 9.0 * 4.0 + 2.0 * 6.0 * layer_weights as f64 + 4.0 * (4.0 + 5.0 + 6.0) * 4.0 + 2.0 * 48.0;
        assert_eq!(count.generate_flops, generate);
    }

    #[test]
    fn shuffle_cuts_the_sequence_and_the_flops() {
        let base = LmArchitecture::new(1000, 8192, 64, DecoderConfig::new(1024, 8, 16, 4096)).into_config([64, 64], 2);
        let s1 = base.clone().with_window(1).count(64).unwrap();
        let s2 = base.clone().with_window(2).count(64).unwrap();
        assert_eq!(s1.sequence_len, 64 + 1 + 4096);
        assert_eq!(s2.sequence_len, 64 + 1 + 1024);
        let ratio = s1.train_flops / s2.train_flops;
        assert!(
            ratio > 3.0,
            "s = 2 should cost ~4× fewer training FLOPs, got {ratio:.2}×"
        );
    }

    #[test]
    fn preset_files_equal_the_rust_presets_and_the_paper_shape_is_about_2_7b() {
        let load = |json: &str| serde_json::from_str::<LmArchitecture>(json).unwrap();
        let presets = [
            (include_str!("../../../configs/lm-tiny.json"), LmArchitecture::tiny()),
            (include_str!("../../../configs/lm-mini.json"), LmArchitecture::mini()),
            (include_str!("../../../configs/lm-small.json"), LmArchitecture::small()),
            (
                include_str!("../../../configs/lm-2.7b.json"),
                LmArchitecture::paper_2_7b(),
            ),
        ];
        for (file, preset) in &presets {
            assert_eq!(&load(file), preset, "configs/ and the Rust preset drifted apart");
        }
        let tiny = LmArchitecture::tiny().into_config([16, 16], 2);
        assert_eq!(
            tiny.count(16).unwrap().parameters,
            tiny.init::<B>(&Default::default()).unwrap().num_params()
        );
        let small = LmArchitecture::small()
            .into_config([32, 32], 2)
            .count(64)
            .unwrap()
            .parameters;
        assert!(
            (90_000_000..130_000_000).contains(&small),
            "lm-small has {small} parameters"
        );
        let paper = LmArchitecture::paper_2_7b()
            .into_config([128, 128], 2)
            .count(128)
            .unwrap()
            .parameters;
        assert!(
            (2_400_000_000..2_900_000_000).contains(&paper),
            "lm-2.7b has {paper} parameters"
        );
    }

    #[test]
    fn sizes_beyond_any_model_are_refused_instead_of_overflowing() {
        // `count --resolution 18446744073709551600` (f = 8, s = 2) and `--resolution 4294967296 --downsample 1
        // --window 1` panicked on an integer overflow.
        for (grid, window) in [([usize::MAX / 8; 2], 2), ([1 << 32; 2], 1)] {
            let config = LmArchitecture::paper_2_7b().into_config(grid, window);
            let err = config.count(64).unwrap_err().to_string();
            assert!(err.contains("too large to count"), "{grid:?}: {err}");
        }
        // The largest grid the paper names still counts.
        let paper = LmArchitecture::paper_2_7b()
            .into_config([256, 256], 2)
            .count(64)
            .unwrap();
        assert_eq!(paper.sequence_len, 64 + 1 + 16384);
    }
}
