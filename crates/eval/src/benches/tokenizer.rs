//! `bench tokenizer`: the VQ tokenizer's training step, encode and decode, per resolution.

use std::time::{Duration, Instant};

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;
use token_shuffle_vqgan::{VqLossConfig, VqModel, VqModelConfig};

use super::timing::{at_least_one, median, sync};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct TokenizerBench {
    /// The model (random weights: throughput does not depend on them).
    pub model: VqModelConfig,
    /// Image sides, in pixels.
    pub resolutions: Vec<usize>,
    /// Images per batch.
    pub batch: usize,
    /// Timed repetitions (after one warm-up).
    pub repeats: usize,
}

/// One resolution, measured; every repetition's times are kept (bench/peers/compare_vq.py reads them).
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerRow {
    /// Image side.
    pub resolution: usize,
    /// The model's parameters.
    pub parameters: usize,
    /// Training steps (generator loss, AdamW), ms each.
    pub train_ms: Vec<f64>,
    /// Encodes of the batch, ms.
    pub encode_ms: Vec<f64>,
    /// Decodes of the batch, ms.
    pub decode_ms: Vec<f64>,
}

/// Every resolution, measured.
#[derive(Debug, Clone, Serialize)]
pub struct TokenizerReport {
    /// Images per batch.
    pub batch: usize,
    /// In the order of [`TokenizerBench::resolutions`].
    pub rows: Vec<TokenizerRow>,
}

impl TokenizerBench {
    /// In each repetition: one training step on a random batch (the generator loss alone: L2, codebook,
    /// commitment, the model's entropy weight; no GAN), then encoding and decoding it with the updated weights.
    ///
    /// # Errors
    /// [`EvalError::Config`] when nothing would be timed or a resolution does not fit the model.
    pub fn run<B: AutodiffBackend>(&self, device: &B::Device) -> Result<TokenizerReport, EvalError> {
        at_least_one("repeats", self.repeats)?;
        at_least_one("batch", self.batch)?;
        let vq = |e: token_shuffle_vqgan::VqError| EvalError::Config(e.to_string());
        let mut model = self.model.init::<B>(device).map_err(vq)?;
        let mut optimizer = AdamWConfig::new().init::<B, VqModel<B>>();
        let loss_config = VqLossConfig::new();
        let mut rows = Vec::new();
        for &resolution in &self.resolutions {
            self.model.check_image_size(resolution, resolution).map_err(vq)?;
            let images = Tensor::<B, 4>::random(
                [self.batch, 3, resolution, resolution],
                Distribution::Uniform(-1.0, 1.0),
                device,
            );
            let mut times: [Vec<Duration>; 3] = Default::default();
            for repetition in 0..=self.repeats {
                let start = Instant::now();
                let forward = model.forward(images.clone()).map_err(vq)?;
                let loss = loss_config.generator(&model, None, images.clone(), &forward, 0);
                let grads = GradientsParams::from_grads(loss.total.backward(), &model);
                model = optimizer.step(1e-4, model, grads);
                sync::<B>(device)?;
                let trained = Instant::now();
                let inference = model.valid();
                let codes = inference.encode(images.clone().inner()).map_err(vq)?;
                sync::<B::InnerBackend>(device)?;
                let encoded = Instant::now();
                let decoded = inference.decode(codes);
                sync::<B::InnerBackend>(device)?;
                drop(decoded);
                if repetition > 0 {
                    for (all, t) in times
                        .iter_mut()
                        .zip([trained - start, encoded - trained, encoded.elapsed()])
                    {
                        all.push(t);
                    }
                }
            }
            let [train_ms, encode_ms, decode_ms] = times.map(|t| t.iter().map(|d| d.as_secs_f64() * 1e3).collect());
            rows.push(TokenizerRow {
                resolution,
                parameters: model.num_params(),
                train_ms,
                encode_ms,
                decode_ms,
            });
        }
        Ok(TokenizerReport {
            batch: self.batch,
            rows,
        })
    }
}

impl TokenizerReport {
    /// The table as `bench tokenizer` prints it: images per second at the median of each part.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:>10} {:>14} {:>14} {:>14} {:>18}\n",
            "resolution", "train img/s", "encode img/s", "decode img/s", "encode+decode img/s"
        );
        let rate = |ms: f64| self.batch as f64 / (ms / 1e3);
        for row in &self.rows {
            let med = |ms: &[f64]| median(&ms.iter().map(|m| Duration::from_secs_f64(m / 1e3)).collect::<Vec<_>>());
            let [train, encode, decode] = [&row.train_ms, &row.encode_ms, &row.decode_ms].map(|t| med(t));
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            out += &format!(
                "{:>10} {:>14.1} {:>14.1} {:>14.1} {:>18.1}\n",
                row.resolution,
                rate(ms(train)),
                rate(ms(encode)),
                rate(ms(decode)),
                rate(ms(encode + decode))
            );
        }
        out
    }
}
