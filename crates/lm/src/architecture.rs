//! What a user chooses about the LM ([`LmArchitecture`], what preset files and run configs hold), apart from what
//! the code derives per use ([`TokenShuffleLmConfig`]: the code grid and the window s, which a run sets per stage
//! from its resolution and the tokenizer, and the rotary length, which follows from both).

use burn::config::Config;
use serde::{Deserialize, Serialize};
use token_shuffle::Fusion;

use crate::{DecoderConfig, LmError, TokenShuffleLmConfig};

/// The LM's architecture and loss weights: everything a preset file gives. Turned into the runtime config of one
/// image geometry by [`into_config`](Self::into_config).
///
/// Presets: [`tiny`](Self::tiny) (`configs/lm-tiny.json`), [`small`](Self::small) (`configs/lm-small.json`),
/// [`paper_2_7b`](Self::paper_2_7b) (`configs/lm-2.7b.json`); the files are tested equal to these.
#[derive(Config, Debug, PartialEq)]
pub struct LmArchitecture {
    /// Number of text ids (the text tokenizer's vocabulary).
    pub text_vocab: usize,
    /// Number of image codes K (the VQ codebook).
    pub codebook: usize,
    /// Longest caption, in text ids (sets the rotary table and the KV cache size).
    pub max_text_len: usize,
    /// The decoder.
    pub decoder: DecoderConfig,
    /// Fusion variant of the shuffle (the paper's ablations). Default: residual MLP.
    #[config(default = "Fusion::ResidualMlp")]
    pub fusion: Fusion,
    /// Residual MLP blocks on each side of the Transformer. Default: 2.
    #[config(default = 2)]
    pub shuffle_mlp_blocks: usize,
    /// Weight of the z-loss `mean(logsumexp(logits)²)`, which the paper added to stabilise 2048² training.
    /// Default: 1e-4.
    #[config(default = 1e-4)]
    pub z_loss_weight: f64,
    /// Weight of the next-token loss on the prompt's text, predicted through the (tied) embedding table. The
    /// paper trains text-to-image only; 0 (the default) skips it.
    #[config(default = 0.0)]
    pub text_loss_weight: f64,
    /// What turns a decoder output into text logits. Default: the embedding table scaled by 1/√d (no
    /// parameters of its own); a pretrained model brings its own head.
    #[config(default = "TextHead::ScaledEmbedding")]
    pub text_head: TextHead,
    /// The text id a prompt starts with in place of our `bos` special: a pretrained model's own
    /// `bos_token_id`, which every text it learnt from started with. Default: none (our `bos`).
    #[config(default = "None")]
    pub text_bos: Option<u32>,
    /// Fraction of training prompts replaced by the empty prompt, so that the model also learns the
    /// unconditional distribution that classifier-free guidance needs. Default: 0.1. Applied by the trainer
    /// with [`crate::drop_prompts`].
    #[config(default = 0.1)]
    pub prompt_dropout: f64,
}

/// The LM's text output layer, over the text ids and the special tokens ([`crate::VocabLayout::non_image`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextHead {
    /// The embedding table's rows, scaled by 1/√d: the normalised hidden state and the rows both have norm
    /// ~√d, so raw dot products would start a model trained from scratch saturated.
    ScaledEmbedding,
    /// The embedding table's rows as they are (a pretrained model with `tie_word_embeddings`).
    TiedEmbedding,
    /// A linear layer of its own, `[d, text ids + specials]` (a pretrained model's untied `lm_head`).
    Linear,
}

impl LmArchitecture {
    /// `lm-micro`: the smallest LM that still has every part (1 layer, d = 16, 2 heads, SwiGLU 32, one shuffle MLP
    /// block), over a 32-code VQ and 256 text ids: the LM of `configs/run-tiny.json`, for tests and smoke runs.
    pub fn micro() -> Self {
        Self::new(256, 32, 80, DecoderConfig::new(16, 1, 2, 32)).with_shuffle_mlp_blocks(1)
    }

    /// `lm-tiny`: 4 layers, d = 128, 4 heads, SwiGLU 344, over a 256-code VQ and 512 text ids (~1M parameters
    /// at s = 2 on 16×16 codes). CPU tests and the demo.
    pub fn tiny() -> Self {
        Self::new(512, 256, 32, DecoderConfig::new(128, 4, 4, 344))
    }

    /// `lm-mini`: 6 layers, d = 256, 8 heads, SwiGLU 688, over a 256-code VQ and 512 text ids (~5.6M parameters
    /// at s = 2 on 16×16 codes; ~4× lm-tiny's training time per image). `configs/run-small.json`.
    pub fn mini() -> Self {
        Self::new(512, 256, 32, DecoderConfig::new(256, 6, 8, 688))
    }

    /// `lm-small`: 12 layers, d = 768, 12 heads, SwiGLU 2048 (~110M parameters), over an 8192-code VQ. GPU
    /// training.
    pub fn small() -> Self {
        Self::new(8192, 8192, 64, DecoderConfig::new(768, 12, 12, 2048))
    }

    /// The paper's 2.7B shape: 20 layers, d = 3072 (as summaries report it). The paper does not give the MLP width,
    /// the head count or the text vocabulary: Llama-like values (MLP 8192, 24 heads of 128, 65536 text ids) land
    /// at ~2.6B parameters. For counting (`cargo xtask count`), not for training here.
    pub fn paper_2_7b() -> Self {
        Self::new(65536, 8192, 128, DecoderConfig::new(3072, 20, 24, 8192))
    }

    /// Checks the sizes that do not depend on the image: counts at least 1, heads dividing the width, loss
    /// weights and dropout in range.
    ///
    /// # Errors
    /// [`LmError::Architecture`] naming the field and the fix.
    pub fn check(&self) -> Result<(), LmError> {
        let fail = |why: String| Err(LmError::Architecture(why));
        let d = &self.decoder;
        for (name, value) in [
            ("text_vocab", self.text_vocab),
            ("codebook", self.codebook),
            ("max_text_len", self.max_text_len),
            ("decoder.d_model", d.d_model),
            ("decoder.n_layers", d.n_layers),
            ("decoder.n_heads", d.n_heads),
            ("decoder.mlp_hidden", d.mlp_hidden),
        ] {
            if value == 0 {
                return fail(format!("{name} is 0; it must be at least 1"));
            }
        }
        match d.head_dim {
            None if !d.d_model.is_multiple_of(d.n_heads) => {
                return fail(format!(
                    "decoder.d_model {} is not divisible by decoder.n_heads {}: choose a head count that divides \
                     it, or give decoder.head_dim",
                    d.d_model, d.n_heads
                ));
            }
            Some(0) => return fail("decoder.head_dim is 0; it must be at least 2 (or null)".into()),
            _ => {}
        }
        if !d.head_width().is_multiple_of(2) {
            return fail(format!(
                "the head width (decoder.head_dim, or decoder.d_model / decoder.n_heads) is {}: odd; rotary \
                 positions need it even",
                d.head_width()
            ));
        }
        if let Some(scaling) = &d.rope_scaling {
            scaling
                .check()
                .map_err(|e| LmError::Architecture(format!("decoder.{e}")))?;
        }
        if let Some(kv) = d.n_kv_heads
            && (kv == 0 || !d.n_heads.is_multiple_of(kv))
        {
            return fail(format!(
                "decoder.n_kv_heads {kv} does not divide decoder.n_heads {}: use a divisor, or null for n_heads",
                d.n_heads
            ));
        }
        if !(d.rope_theta.is_finite() && d.rope_theta > 0.0 && d.norm_eps.is_finite() && d.norm_eps > 0.0) {
            return fail("decoder.rope_theta and decoder.norm_eps must be finite and positive".into());
        }
        for (name, value) in [
            ("z_loss_weight", self.z_loss_weight),
            ("text_loss_weight", self.text_loss_weight),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return fail(format!("{name} is {value}; it must be finite and ≥ 0"));
            }
        }
        if let Some(bos) = self.text_bos
            && bos as usize >= self.text_vocab
        {
            return fail(format!(
                "text_bos {bos} is not a text id (text_vocab is {}): give an id below it, or null for our bos",
                self.text_vocab
            ));
        }
        if !(0.0..1.0).contains(&self.prompt_dropout) {
            return fail(format!(
                "prompt_dropout is {}; it must be in [0, 1) (a fraction of the training prompts)",
                self.prompt_dropout
            ));
        }
        Ok(())
    }

    /// The runtime config for images of `grid` codes with Token-Shuffle window `window`.
    pub fn into_config(self, grid: [usize; 2], window: usize) -> TokenShuffleLmConfig {
        TokenShuffleLmConfig {
            architecture: self,
            grid,
            window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_count_that_does_not_divide_the_width_is_an_error_not_a_panic() {
        let bad = LmArchitecture::new(8, 8, 4, DecoderConfig::new(16, 1, 3, 32));
        let err = bad.check().unwrap_err().to_string();
        assert!(err.contains("decoder.n_heads 3"), "{err}");
        let zero = LmArchitecture::new(8, 0, 4, DecoderConfig::new(16, 1, 2, 32));
        assert!(zero.check().unwrap_err().to_string().contains("codebook is 0"));
        let kv = LmArchitecture::new(8, 8, 4, DecoderConfig::new(16, 1, 2, 32).with_n_kv_heads(Some(3)));
        assert!(kv.check().unwrap_err().to_string().contains("n_kv_heads 3"));
        for preset in [
            LmArchitecture::micro(),
            LmArchitecture::tiny(),
            LmArchitecture::small(),
            LmArchitecture::paper_2_7b(),
        ] {
            preset.check().unwrap();
        }
    }
}
