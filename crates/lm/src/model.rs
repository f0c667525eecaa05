use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use thiserror::Error;
use token_shuffle::{
    ShuffleError, TokenShuffle, TokenShuffleConfig, TokenUnshuffle, TokenUnshuffleConfig, check_grid, check_width,
    on_rows, window_merge, window_split,
};

use crate::{CfgSchedule, Decoder, DecoderCache, LmArchitecture, Sampler, TextHead, VocabLayout, guide, seeded_rng};

/// Why the LM refused a configuration or an input.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LmError {
    /// A size or weight of the architecture that cannot work (named, with the fix).
    #[error("LM architecture: {0}")]
    Architecture(String),
    /// The window does not fit the code grid, or the model width does not split into s² parts.
    #[error(transparent)]
    Shuffle(#[from] ShuffleError),
    /// Generation met a window whose logits are all NaN or infinite.
    #[error(
        "window {step} of {total}: every logit is NaN or infinite, so no code can be sampled; the LM's weights are \
         corrupt or diverged: load another checkpoint or retrain"
    )]
    NonFiniteLogits {
        /// The window (counting from 1).
        step: usize,
        /// Windows per image.
        total: usize,
    },
    /// A pretrained checkpoint that cannot be loaded (the file, and why).
    #[error("{}: {why}", path.display())]
    Pretrained {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What is wrong with it, and what to do.
        why: String,
    },
    /// Code grids of another size than the model was built for.
    #[error(
        "code grids of {got:?} do not match the model's {expected:?} grid: encode images at the resolution the LM was configured for"
    )]
    GridMismatch {
        /// The grid given.
        got: [usize; 2],
        /// The model's grid.
        expected: [usize; 2],
    },
}

/// The runtime configuration of a [`TokenShuffleLm`]: an [`LmArchitecture`] (what a file holds) over one image
/// geometry (what a run derives per stage). Made by [`LmArchitecture::into_config`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenShuffleLmConfig {
    /// Widths, depths, vocabularies and loss weights.
    pub architecture: LmArchitecture,
    /// Code grid `[H', W']` of one image (resolution / VQ downsample factor).
    pub grid: [usize; 2],
    /// Token-Shuffle window s (1 = no shuffle).
    pub window: usize,
}

impl TokenShuffleLmConfig {
    /// The vocabulary layout.
    pub fn vocab(&self) -> VocabLayout {
        VocabLayout::new(self.architecture.text_vocab, self.architecture.codebook)
            .with_text_bos(self.architecture.text_bos)
    }

    /// The same architecture with window `window`.
    pub fn with_window(self, window: usize) -> Self {
        Self { window, ..self }
    }

    /// Number of image windows N/s² (Transformer positions per image).
    pub fn windows(&self) -> usize {
        (self.grid[0] / self.window) * (self.grid[1] / self.window)
    }

    /// Transformer positions for a prompt of `text_len` ids: `[bos] text [boi]` and every window but the last
    /// (whose output would predict nothing): `text_len + 1 + N/s²`.
    pub fn sequence_len(&self, text_len: usize) -> usize {
        text_len + 2 + self.windows() - 1
    }

    /// Checks, without building anything, the architecture ([`LmArchitecture::check`]) and that the code grid
    /// splits into s×s windows and d into s² channel groups.
    ///
    /// # Errors
    /// [`LmError::Architecture`] for the sizes of the architecture, [`LmError::Shuffle`] when the code grid is not
    /// divisible by s or d by s².
    pub fn check(&self) -> Result<(), LmError> {
        self.architecture.check()?;
        if self.grid.contains(&0) {
            return Err(LmError::Architecture(format!(
                "a code grid of {}×{} holds no image: the images must be at least one code wide and high (a \
                 resolution of at least the VQ downsample factor)",
                self.grid[0], self.grid[1]
            )));
        }
        check_grid(self.grid[0], self.grid[1], self.window)?;
        check_width(self.architecture.decoder.d_model, self.window)?;
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Errors
    /// What [`check`](Self::check) finds.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<TokenShuffleLm<B>, LmError> {
        self.check()?;
        let arch = &self.architecture;
        let d = arch.decoder.d_model;
        let shuffle_config = TokenShuffleConfig::new(d)
            .with_window(self.window)
            .with_fusion(arch.fusion)
            .with_mlp_blocks(arch.shuffle_mlp_blocks);
        Ok(TokenShuffleLm {
            embedding: EmbeddingConfig::new(self.vocab().size(), d).init(device),
            shuffle: shuffle_config.init(device)?,
            decoder: arch.decoder.init(self.sequence_len(arch.max_text_len), device),
            unshuffle: TokenUnshuffleConfig::from(&shuffle_config).init(device)?,
            image_head: LinearConfig::new(d, arch.codebook).with_bias(false).init(device),
            text_head: (arch.text_head == TextHead::Linear).then(|| {
                LinearConfig::new(d, self.vocab().non_image())
                    .with_bias(false)
                    .init(device)
            }),
            text_divisor: match arch.text_head {
                TextHead::ScaledEmbedding => (d as f64).sqrt(),
                TextHead::TiedEmbedding | TextHead::Linear => 1.0,
            },
            vocab: self.vocab(),
            grid: self.grid,
            z_loss_weight: arch.z_loss_weight,
            text_loss_weight: arch.text_loss_weight,
        })
    }
}

/// The text-to-image LM of the paper: one embedding table for text and image codes, Token-Shuffle before a
/// Llama-style decoder, Token-Unshuffle after it, and an image head that predicts the s² codes of the next window.
///
/// ```text
/// [bos] text [boi]  w₀ … w_{N−2}            (w = TokenShuffle(embed(codes)), N = H'W'/s² windows)
///          │  │     │       │
///        decoder (causal, RoPE over the shortened sequence)
///             │     │       │
///   outputs at boi, w₀ … w_{N−2} ─TokenUnshuffle─▶ [N, s², d] ─image head─▶ logits of windows 0 … N−1
/// ```
#[derive(Module, Debug)]
pub struct TokenShuffleLm<B: Backend> {
    embedding: Embedding<B>,
    shuffle: TokenShuffle<B>,
    decoder: Decoder<B>,
    unshuffle: TokenUnshuffle<B>,
    image_head: Linear<B>,
    /// The text head of its own ([`TextHead::Linear`]); otherwise the embedding table's rows serve.
    text_head: Option<Linear<B>>,
    /// What the embedding-table head's logits are divided by (√d, or 1 for a pretrained tied head).
    #[module(skip)]
    text_divisor: f64,
    #[module(skip)]
    vocab: VocabLayout,
    #[module(skip)]
    grid: [usize; 2],
    #[module(skip)]
    z_loss_weight: f64,
    #[module(skip)]
    text_loss_weight: f64,
}

/// The loss of a batch, part by part.
#[derive(Debug, Clone)]
pub struct LmLoss<B: Backend> {
    /// Cross-entropy of the image codes (mean over codes).
    pub image_ce: Tensor<B, 1>,
    /// `mean(logsumexp(logits)²)` of the image logits, unweighted.
    pub z_loss: Tensor<B, 1>,
    /// Next-token cross-entropy of the prompt text (mean over non-pad targets), when its weight is not 0.
    pub text_ce: Option<Tensor<B, 1>>,
    /// `image_ce + z_loss_weight · z_loss + text_loss_weight · text_ce`: what is minimised.
    pub total: Tensor<B, 1>,
}

/// One step of [`TokenShuffleLm::generate`], as its `on_step` callback sees it.
#[derive(Debug)]
pub struct GenerateStep<'a, B: Backend> {
    /// Windows sampled so far (counting this one).
    pub done: usize,
    /// Windows per image.
    pub total: usize,
    /// The guided logits this window's codes were sampled from, `[B, s², K]`. Borrowed: a caller that wants them
    /// (tests, analysis) clones them; nothing keeps them otherwise, so generation's memory does not grow with the
    /// image.
    pub logits: &'a Tensor<B, 3>,
}

/// How to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenerateOptions {
    /// Maximum guidance scale; 1 disables classifier-free guidance (no unconditional rows).
    pub cfg_scale: f64,
    /// How the scale rises over the image.
    pub schedule: CfgSchedule,
    /// How codes are drawn from the guided logits.
    pub sampler: Sampler,
    /// Seed of the sampling.
    pub seed: u64,
}

impl<B: Backend> TokenShuffleLm<B> {
    /// The code grid `[H', W']` of an image.
    pub fn grid(&self) -> [usize; 2] {
        self.grid
    }

    /// The Token-Shuffle window s.
    pub fn window(&self) -> usize {
        self.shuffle.window()
    }

    /// The vocabulary layout.
    pub fn vocab(&self) -> VocabLayout {
        self.vocab
    }

    /// Image windows per code grid, N/s² (one Transformer position each).
    fn windows(&self) -> usize {
        let s = self.shuffle.window();
        (self.grid[0] / s) * (self.grid[1] / s)
    }

    /// Prompt ids `[bos] text [boi]` of every row, left-padded with `pad` to a common length.
    ///
    /// # Shapes
    /// - output: `[B, P]`
    pub fn prompt_ids(&self, texts: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
        let prompts: Vec<Vec<u32>> = texts.iter().map(|t| self.vocab.prompt(t)).collect();
        let len = prompts.iter().map(Vec::len).max().unwrap_or(2);
        let ids: Vec<i64> = prompts
            .iter()
            .flat_map(|p| {
                std::iter::repeat_n(self.vocab.pad() as i64, len - p.len()).chain(p.iter().map(|&i| i as i64))
            })
            .collect();
        Tensor::from_data(TensorData::new(ids, [texts.len(), len]), device)
    }

    /// Embeds code grids and merges their windows.
    ///
    /// # Shapes
    /// - `codes`: `[B, H, W]` (any grid divisible by s; `[B, s, s]` is one window)
    /// - output: `[B, (H/s)·(W/s), d]`
    fn image_tokens(&self, codes: Tensor<B, 3, Int>) -> Result<Tensor<B, 3>, ShuffleError> {
        let [batch, h, w] = codes.dims();
        let ids = codes.reshape([batch, h * w]).add_scalar(self.vocab.image_id(0) as i64);
        let embedded = self.embedding.forward(ids);
        let d = embedded.dims()[2];
        self.shuffle.forward(embedded.reshape([batch, h, w, d]))
    }

    /// The Transformer input of a training batch: the embedded prompt, then every window but the last.
    ///
    /// # Shapes
    /// - `prompt`: `[B, P]`, from [`Self::prompt_ids`]
    /// - `codes`: `[B, H', W']`
    /// - output: `[B, P + N − 1, d]`
    pub fn input_sequence(&self, prompt: Tensor<B, 2, Int>, codes: Tensor<B, 3, Int>) -> Result<Tensor<B, 3>, LmError> {
        let windows = self.image_tokens(codes)?;
        let n = windows.dims()[1];
        let prompt = self.embedding.forward(prompt);
        Ok(if n > 1 {
            Tensor::cat(vec![prompt, windows.narrow(1, 0, n - 1)], 1)
        } else {
            prompt
        })
    }

    /// Logits of every window's s² codes, each predicted from the positions before the window.
    ///
    /// # Shapes
    /// - `prompt`: `[B, P]`
    /// - `codes`: `[B, H', W']`
    /// - output: `[B, N, s², K]`: row n holds the logits of window n's codes (row-major inside the window)
    pub fn forward(&self, prompt: Tensor<B, 2, Int>, codes: Tensor<B, 3, Int>) -> Result<Tensor<B, 4>, LmError> {
        let p = prompt.dims()[1];
        let hidden = self.hidden(prompt, codes)?;
        Ok(self.image_logits(hidden, p)?)
    }

    /// Decoder outputs over the whole training sequence, `[B, P + N − 1, d]`.
    fn hidden(&self, prompt: Tensor<B, 2, Int>, codes: Tensor<B, 3, Int>) -> Result<Tensor<B, 3>, LmError> {
        let [_, h, w] = codes.dims();
        if [h, w] != self.grid {
            return Err(LmError::GridMismatch {
                got: [h, w],
                expected: self.grid,
            });
        }
        let p = prompt.dims()[1];
        let n = self.windows();
        let bias = self.key_bias(prompt.clone(), p + n - 1);
        Ok(self
            .decoder
            .forward(self.input_sequence(prompt, codes)?, None, Some(bias)))
    }

    /// Attention bias over `keys` positions that hides the prompt's left padding: −10⁹ at pad positions (finite,
    /// so a pad query with nothing but pads before it still gets a defined softmax), 0 elsewhere.
    fn key_bias(&self, prompt: Tensor<B, 2, Int>, keys: usize) -> Tensor<B, 2> {
        let [batch, p] = prompt.dims();
        let pads = prompt.equal_elem(self.vocab.pad() as i64).float() * -1e9;
        if keys > p {
            Tensor::cat(vec![pads.clone(), Tensor::zeros([batch, keys - p], &pads.device())], 1)
        } else {
            pads
        }
    }

    /// Image logits from the outputs at `boi` and every window but the last (prompt length `p`).
    fn image_logits(&self, hidden: Tensor<B, 3>, p: usize) -> Result<Tensor<B, 4>, ShuffleError> {
        let n = self.windows();
        self.window_logits(hidden.narrow(1, p - 1, n))
    }

    /// Unshuffles decoder outputs and applies the image head.
    fn window_logits(&self, hidden: Tensor<B, 3>) -> Result<Tensor<B, 4>, ShuffleError> {
        Ok(on_rows(self.unshuffle.forward(hidden)?, |x| self.image_head.forward(x)))
    }

    /// The training loss of a batch, part by part.
    ///
    /// # Shapes
    /// - `prompt`: `[B, P]`, from [`Self::prompt_ids`]
    /// - `codes`: `[B, H', W']`
    pub fn loss(&self, prompt: Tensor<B, 2, Int>, codes: Tensor<B, 3, Int>) -> Result<LmLoss<B>, LmError> {
        let p = prompt.dims()[1];
        let hidden = self.hidden(prompt.clone(), codes.clone())?;
        let logits = self.image_logits(hidden.clone(), p)?;
        let [batch, n, s2, k] = logits.dims();
        let targets = window_merge(codes.unsqueeze_dim::<4>(3), self.shuffle.window())?.reshape([batch * n * s2, 1]);
        let logits = logits.reshape([batch * n * s2, k]);
        let log_sum_exp = log_sum_exp(logits.clone());
        let image_ce = (log_sum_exp.clone() - logits.gather(1, targets)).mean();
        let z_loss = log_sum_exp.powi_scalar(2).mean();
        let mut total = image_ce.clone() + z_loss.clone() * self.z_loss_weight;
        let text_ce =
            (self.text_loss_weight != 0.0 && p > 1).then(|| self.text_loss(hidden.narrow(1, 0, p - 1), prompt));
        if let Some(text_ce) = &text_ce {
            total = total + text_ce.clone() * self.text_loss_weight;
        }
        Ok(LmLoss {
            image_ce,
            z_loss,
            text_ce,
            total,
        })
    }

    /// Text logits (text ids and specials) of decoder outputs, through the architecture's [`TextHead`].
    ///
    /// # Shapes
    /// - `hidden`: `[R, d]`
    /// - output: `[R, text ids + specials]`
    fn text_head_logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.text_head {
            Some(head) => head.forward(hidden),
            None => {
                let table = self.embedding.weight.val().narrow(0, 0, self.vocab.non_image());
                let logits = hidden.matmul(table.transpose());
                match self.text_divisor == 1.0 {
                    true => logits,
                    false => logits / self.text_divisor,
                }
            }
        }
    }

    /// Next-token logits of a text-only sequence (no image): the language model inside the LM, for text
    /// pretraining and for checking a loaded checkpoint against its reference.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, text ids and specials, `T` at most the rotary table's length
    /// - output: `[B, T, text ids + specials]`
    ///
    /// With a `cache` (from [`new_text_cache`](Self::new_text_cache)), `ids` continue the cached positions: a
    /// prefill first, then one id per call, as text generation runs.
    pub fn text_logits(&self, ids: Tensor<B, 2, Int>, cache: Option<&mut DecoderCache<B>>) -> Tensor<B, 3> {
        let [batch, t] = ids.dims();
        let hidden = self.decoder.forward(self.embedding.forward(ids), cache, None);
        let d = hidden.dims()[2];
        let logits = self.text_head_logits(hidden.reshape([batch * t, d]));
        let n = logits.dims()[1];
        logits.reshape([batch, t, n])
    }

    /// Mean next-token cross-entropy of text-only sequences through the text head (text pretraining), the targets
    /// that are padding ignored.
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`, `T ≥ 2`, text ids and specials, right-padded with [`VocabLayout::pad`]
    /// - output: `[1]`
    pub fn text_sequence_ce(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let t = ids.dims()[1];
        let hidden = self
            .decoder
            .forward(self.embedding.forward(ids.clone().narrow(1, 0, t - 1)), None, None);
        self.text_loss(hidden, ids)
    }

    /// The image head's weight, `[d, K]`.
    pub(crate) fn image_head_weight(&self) -> Tensor<B, 2> {
        self.image_head.weight.val()
    }

    /// The text head as rows, `[text ids + specials, d]`: the `lm_head` rows a HuggingFace checkpoint holds.
    pub(crate) fn text_head_rows(&self) -> Tensor<B, 2> {
        match &self.text_head {
            Some(head) => head.weight.val().transpose(),
            None => {
                let table = self.embedding.weight.val().narrow(0, 0, self.vocab.non_image());
                match self.text_divisor == 1.0 {
                    true => table,
                    false => table / self.text_divisor,
                }
            }
        }
    }

    /// Logits over the whole vocabulary at every position of `ids`: the text head's for the text ids and
    /// specials, then the image head's for the codes. At s = 1 (no Token-Shuffle) this is the whole model as one
    /// causal LM over one vocabulary: what an exported checkpoint computes (the image head's logits at the
    /// positions that predict a code).
    ///
    /// # Shapes
    /// - `ids`: `[B, T]`
    /// - output: `[B, T, vocabulary]`
    pub fn vocabulary_logits(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, t] = ids.dims();
        let hidden = self.decoder.forward(self.embedding.forward(ids), None, None);
        let d = hidden.dims()[2];
        let rows = hidden.reshape([batch * t, d]);
        let logits = Tensor::cat(
            vec![self.text_head_logits(rows.clone()), self.image_head.forward(rows)],
            1,
        );
        logits.reshape([batch, t, self.vocab.size()])
    }

    /// An empty KV cache for [`text_logits`](Self::text_logits) over `batch` rows and up to `max_len` ids.
    pub fn new_text_cache(&self, batch: usize, max_len: usize, device: &B::Device) -> DecoderCache<B> {
        self.decoder.new_cache(batch, max_len, device)
    }

    /// Next-token cross-entropy over the prompt through the text head; left-padding targets are ignored.
    fn text_loss(&self, hidden: Tensor<B, 3>, prompt: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [batch, p] = prompt.dims();
        let d = hidden.dims()[2];
        let logits = self.text_head_logits(hidden.reshape([batch * (p - 1), d]));
        let targets = prompt.narrow(1, 1, p - 1).reshape([batch * (p - 1), 1]);
        let mask = targets.clone().not_equal_elem(self.vocab.pad() as i64).float();
        let ce = log_sum_exp(logits.clone()) - logits.gather(1, targets);
        (ce * mask.clone()).sum() / mask.sum().clamp_min(1.0)
    }

    /// Generates one code grid per prompt with a KV cache: a prefill of the prompts, then one step per window,
    /// each sampling the window's s² codes in parallel and feeding them back through Token-Shuffle.
    ///
    /// With `cfg_scale != 1`, every prompt also runs as an unconditional row (the empty prompt) in the same
    /// batch, and the logits are mixed as `u + w(t)·(c − u)` with `w` from the schedule.
    ///
    /// `on_step` is called after each window is sampled (for progress bars and timing), with the logits it was
    /// sampled from ([`GenerateStep`]).
    ///
    /// Returns the code grids `[B, H', W']`.
    ///
    /// # Errors
    /// [`LmError::NonFiniteLogits`] naming the window when its logits hold no finite value (corrupt weights).
    pub fn generate(
        &self,
        texts: &[Vec<u32>],
        options: &GenerateOptions,
        device: &B::Device,
        on_step: &mut dyn FnMut(&GenerateStep<'_, B>),
    ) -> Result<Tensor<B, 3, Int>, LmError> {
        let batch = texts.len();
        let guided = options.cfg_scale != 1.0;
        let mut rows: Vec<Vec<u32>> = texts.to_vec();
        if guided {
            rows.extend(std::iter::repeat_n(Vec::new(), batch));
        }
        let s = self.shuffle.window();
        let [h, w] = self.grid;
        let windows = self.windows();
        let prompt = self.prompt_ids(&rows, device);
        let p = prompt.dims()[1];
        let mut cache = self.decoder.new_cache(rows.len(), p + windows - 1, device);
        // The key bias of the whole generation, built once; each step reads the prefix it has reached.
        let key_bias = self.key_bias(prompt.clone(), p + windows - 1);
        let mut hidden = self
            .decoder
            .forward(
                self.embedding.forward(prompt),
                Some(&mut cache),
                Some(key_bias.clone().narrow(1, 0, p)),
            )
            .narrow(1, p - 1, 1);
        // Codes are drawn on the device: one uniform number per row goes there each step, and only the row maxima
        // (to catch non-finite logits) and the s² drawn codes per row come back. The codes are kept on the host
        // and the next step's input is made from them, so what is fed back and what is returned are one list.
        let mut rng = seeded_rng(options.seed);
        let mut codes: Vec<i64> = Vec::with_capacity(windows * batch * s * s);
        for step in 0..windows {
            let logits = self.window_logits(hidden.clone())?; // [R, 1, s², K]
            let [_, _, s2, k] = logits.dims();
            let logits = logits.reshape([rows.len(), s2, k]);
            let logits = if guided {
                let scale = options.schedule.scale(step, windows, options.cfg_scale);
                guide(
                    logits.clone().narrow(0, 0, batch),
                    logits.narrow(0, batch, batch),
                    scale,
                )
            } else {
                logits
            };
            let window = options
                .sampler
                .sample_on_device(logits.clone().reshape([batch * s2, k]), &mut rng)
                .map_err(|_| LmError::NonFiniteLogits {
                    step: step + 1,
                    total: windows,
                })?;
            let drawn: Vec<i64> = window.into_data().convert::<i64>().to_vec().expect("integer codes");
            codes.extend_from_slice(&drawn);
            on_step(&GenerateStep {
                done: step + 1,
                total: windows,
                logits: &logits,
            });
            if step + 1 < windows {
                let window = Tensor::<B, 3, Int>::from_data(TensorData::new(drawn, [batch, s, s]), device);
                let window = if guided {
                    Tensor::cat(vec![window.clone(), window], 0)
                } else {
                    window
                };
                let bias = key_bias.clone().narrow(1, 0, p + step + 1);
                hidden = self
                    .decoder
                    .forward(self.image_tokens(window)?, Some(&mut cache), Some(bias));
            }
        }
        // codes were collected step by step ([window, row, s²]); per row, window by window and row-major inside
        // each window, they are exactly window_merge's layout. Reordered to [row, window, s²] on the host:
        // burn-wgpu 0.21 reshaped a `swap_dims`-ed integer tensor in memory order (the KV-cache test caught it).
        let s2 = s * s;
        let by_row: Vec<i64> = (0..batch)
            .flat_map(|row| (0..windows).map(move |window| (window * batch + row) * s2))
            .flat_map(|at| codes[at..at + s2].iter().copied())
            .collect();
        let merged = Tensor::<B, 3, Int>::from_data(TensorData::new(by_row, [batch, windows, s * s]), device);
        let grid = window_split(merged, [h, w], s)?.reshape([batch, h, w]);
        Ok(grid)
    }
}

/// `log Σ exp(x)` over the last axis of `[rows, classes]`, shifted by the (constant) row maximum for stability.
fn log_sum_exp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend;

    type B = TestBackend;

    fn config(window: usize) -> TokenShuffleLmConfig {
        LmArchitecture::new(20, 16, 6, crate::DecoderConfig::new(32, 2, 4, 64)).into_config([4, 4], window)
    }

    fn codes<BB: Backend>(batch: usize, device: &BB::Device) -> Tensor<BB, 3, Int> {
        Tensor::random([batch, 4, 4], Distribution::Uniform(0.0, 16.0), device)
    }

    fn texts() -> Vec<Vec<u32>> {
        vec![vec![3, 4, 5], vec![7]]
    }

    #[test]
    fn the_transformer_sees_text_plus_one_plus_the_windows() {
        let device = Default::default();
        for (window, windows) in [(1, 16), (2, 4), (4, 1)] {
            let config = config(window);
            let model = config.init::<B>(&device).unwrap();
            let prompt = model.prompt_ids(&texts(), &device); // [bos, 3 ids, boi]: 5 positions
            let sequence = model.input_sequence(prompt, codes(2, &device)).unwrap();
            assert_eq!(config.windows(), windows);
            assert_eq!(sequence.dims(), [2, 3 + 1 + windows, 32], "s = {window}");
            assert_eq!(config.sequence_len(3), 3 + 1 + windows);
            let logits = model
                .forward(model.prompt_ids(&texts(), &device), codes(2, &device))
                .unwrap();
            assert_eq!(logits.dims(), [2, windows, window * window, 16]);
        }
    }

    #[test]
    fn left_padding_does_not_change_a_prompt_s_logits() {
        // The short prompt [7] is left-padded when batched with a longer one; alone, it is not padded.
        let device = Default::default();
        let model = config(2).init::<B>(&device).unwrap();
        let grid = codes::<B>(2, &device);
        let batched = model
            .forward(model.prompt_ids(&texts(), &device), grid.clone())
            .unwrap()
            .narrow(0, 1, 1);
        let alone = model
            .forward(model.prompt_ids(&texts()[1..], &device), grid.narrow(0, 1, 1))
            .unwrap();
        assert!(
            batched.clone().all_close(alone.clone(), None, Some(1e-4)),
            "{}",
            (batched - alone).abs().max().into_scalar()
        );
    }

    #[test]
    fn codes_of_another_grid_are_refused() {
        let device = Default::default();
        let model = config(2).init::<B>(&device).unwrap();
        let wrong = Tensor::<B, 3, Int>::zeros([2, 8, 8], &device);
        let err = model.forward(model.prompt_ids(&texts(), &device), wrong).unwrap_err();
        assert_eq!(
            err,
            LmError::GridMismatch {
                got: [8, 8],
                expected: [4, 4]
            }
        );
    }

    #[test]
    fn bad_grids_are_refused() {
        let err = TokenShuffleLmConfig {
            grid: [6, 4],
            ..config(4)
        }
        .init::<B>(&Default::default())
        .unwrap_err();
        assert!(
            matches!(err, LmError::Shuffle(ShuffleError::GridNotDivisible { height: 6, .. })),
            "{err}"
        );
        // `bench lm --grid 0` reached a tensor panic: an empty grid is refused by name first.
        for grid in [[0, 0], [0, 4]] {
            let err = TokenShuffleLmConfig { grid, ..config(2) }
                .check()
                .unwrap_err()
                .to_string();
            assert!(err.contains("holds no image"), "{grid:?}: {err}");
        }
    }

    #[test]
    fn kv_cache_generation_reproduces_the_full_forward() {
        let device = Default::default();
        for window in [1, 2] {
            let model = config(window).init::<B>(&device).unwrap();
            let options = GenerateOptions {
                cfg_scale: 1.0,
                schedule: CfgSchedule::HalfLinear,
                sampler: Sampler::argmax(),
                seed: 0,
            };
            // Each step's logits are read to the host inside the callback, and the expected codes are taken there,
            // so that the check rests on no device op of the test's own.
            let mut steps: Vec<Vec<f32>> = Vec::new();
            let grid = model
                .generate(&texts(), &options, &device, &mut |step| {
                    steps.push(step.logits.clone().into_data().convert::<f32>().to_vec().unwrap())
                })
                .unwrap();
            assert_eq!(grid.dims(), [2, 4, 4]);
            // The grid holds, window by window, the codes each step drew: the argmax of its logits.
            let s2 = window * window;
            let mut drawn = vec![0i64; 2 * 16];
            for (n, values) in steps.iter().enumerate() {
                for (r, row) in values.chunks(16).enumerate() {
                    let best = (0..16).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                    let (image, code) = (r / s2, r % s2);
                    drawn[image * 16 + n * s2 + code] = best as i64;
                }
            }
            let drawn = Tensor::<B, 3, Int>::from_data(TensorData::new(drawn, [2, 16 / s2, s2]), &device);
            let expected_grid = window_split(drawn, [4, 4], window).unwrap().reshape([2, 4, 4]);
            grid.clone().into_data().assert_eq(&expected_grid.into_data(), false);
            let full = model.forward(model.prompt_ids(&texts(), &device), grid).unwrap();
            for (n, values) in steps.into_iter().enumerate() {
                let expected = full.clone().narrow(1, n, 1).squeeze_dim::<3>(1);
                let step = Tensor::<B, 3>::from_data(TensorData::new(values, expected.dims()), &device);
                assert!(
                    step.clone().all_close(expected.clone(), None, Some(1e-4)),
                    "s = {window}, window {n}: {}",
                    (step - expected).abs().max().into_scalar()
                );
            }
        }
    }

    #[test]
    fn corrupt_weights_stop_generation_with_an_error_naming_the_window() {
        if !token_shuffle_test_support::BACKEND_SEES_NON_FINITE {
            eprintln!("SKIPPED: {} cannot see NaN", token_shuffle_test_support::TEST_BACKEND);
            return;
        }
        use token_shuffle_test_support::Poison;
        let device = Default::default();
        let model = config(2).init::<B>(&device).unwrap().map(&mut Poison);
        let options = GenerateOptions {
            cfg_scale: 3.0,
            schedule: CfgSchedule::Constant,
            sampler: Sampler::default(),
            seed: 0,
        };
        let err = model.generate(&texts(), &options, &device, &mut |_| {}).unwrap_err();
        assert_eq!(err, LmError::NonFiniteLogits { step: 1, total: 4 });
        assert!(err.to_string().contains("window 1 of 4"), "{err}");
    }

    #[test]
    fn a_window_changes_no_logits_before_it() {
        let device = Default::default();
        let model = config(2).init::<B>(&device).unwrap();
        let prompt = model.prompt_ids(&texts(), &device);
        let grid = codes::<B>(2, &device);
        // Window 1 (raster order) is rows 0–1, columns 2–3.
        let window_one = grid
            .clone()
            .slice([0..2, 0..2, 2..4])
            .add_scalar(1)
            .remainder_scalar(16);
        let changed = grid.clone().slice_assign([0..2, 0..2, 2..4], window_one);
        let (a, b) = (
            model.forward(prompt.clone(), grid).unwrap(),
            model.forward(prompt, changed).unwrap(),
        );
        assert!(
            a.clone()
                .narrow(1, 0, 2)
                .all_close(b.clone().narrow(1, 0, 2), None, Some(1e-6)),
            "windows 0 and 1 are predicted before window 1 is seen"
        );
        assert!(
            !a.narrow(1, 2, 2).all_close(b.narrow(1, 2, 2), None, Some(1e-4)),
            "later windows see window 1"
        );
    }

    #[test]
    fn sampling_is_reproducible_and_guidance_runs() {
        let device = Default::default();
        let model = config(2).init::<B>(&device).unwrap();
        let sampler = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let options = |seed| GenerateOptions {
            cfg_scale: 4.0,
            schedule: CfgSchedule::HalfLinear,
            sampler,
            seed,
        };
        let run = |seed| {
            model
                .generate(&texts(), &options(seed), &device, &mut |_| {})
                .unwrap()
                .into_data()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn the_text_loss_is_reported_only_when_weighted() {
        let device = Default::default();
        let prompt = |m: &TokenShuffleLm<B>| m.prompt_ids(&texts(), &device);
        let plain = config(2).init::<B>(&device).unwrap();
        assert!(plain.loss(prompt(&plain), codes(2, &device)).unwrap().text_ce.is_none());
        let mut weighted = config(2);
        weighted.architecture.text_loss_weight = 0.5;
        let with_text = weighted.init::<B>(&device).unwrap();
        let loss = with_text.loss(prompt(&with_text), codes(2, &device)).unwrap();
        let text_ce: f32 = loss.text_ce.unwrap().into_scalar();
        // 25 classes (20 text ids + 5 specials): an untrained model is near ln 25 ≈ 3.2.
        assert!(text_ce.is_finite() && text_ce > 1.0 && text_ce < 8.0, "{text_ce}");
        let total: f32 = loss.total.into_scalar();
        let parts: f32 = loss.image_ce.into_scalar() + 1e-4 * loss.z_loss.into_scalar() + 0.5 * text_ce;
        assert!((total - parts).abs() < 1e-4, "{total} vs {parts}");
    }

    #[test]
    fn a_tiny_model_overfits_one_batch() {
        type AD = Autodiff<TestBackend>;
        let device = Default::default();
        for window in [1, 2] {
            let mut model = config(window).init::<AD>(&device).unwrap();
            let mut optimizer = AdamWConfig::new().init();
            let prompt = model.prompt_ids(&texts(), &device);
            let grid = codes::<AD>(2, &device);
            let mut last = f32::INFINITY;
            for _ in 0..150 {
                let loss = model.loss(prompt.clone(), grid.clone()).unwrap();
                last = loss.image_ce.clone().into_scalar();
                let grads = GradientsParams::from_grads(loss.total.backward(), &model);
                model = optimizer.step(3e-3, model, grads);
            }
            assert!(
                last < 0.05,
                "s = {window}: image cross-entropy still {last} after 150 steps"
            );
        }
    }
}
