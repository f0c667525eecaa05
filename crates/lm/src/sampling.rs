//! Sampling codes from logits: temperature, top-k, top-p, seeded and reproducible.
//!
//! [`Sampler::sample_on_device`] samples with burn ops where the logits are (top-k by `topk`, top-p by a sorted
//! cumulative softmax, the draw by inverting the cumulative distribution at one uniform number per row), so that
//! per step only one number per row goes to the device and one code per row stays there; [`Sampler::sample`] is
//! the host reference it is tested against. The uniform numbers come from the seeded host generator, not the
//! backend's (which is process-wide): a seed gives the same codes whatever else the process draws.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, activation::softmax};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to pick a code from a row of logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampler {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f64,
    /// Keep only the `k` most likely codes (None: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely codes whose probability reaches `p` (None: all).
    pub top_p: Option<f64>,
}

impl Default for Sampler {
    /// Temperature 1, top-k 1000 (LlamaGen's default for image tokens), no top-p.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: Some(1000),
            top_p: None,
        }
    }
}

/// The random source of one generation: the same seed gives the same codes.
pub fn seeded_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

impl Sampler {
    /// Greedy decoding.
    pub fn argmax() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }

    /// Picks one index of `logits`, or `None` when no logit is finite (non-finite logits count as impossible;
    /// a row without a finite one comes from corrupt or diverged weights, which the caller reports).
    pub fn sample(&self, logits: &[f32], rng: &mut StdRng) -> Option<usize> {
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| logits[i].is_finite()).collect();
        if order.is_empty() {
            return None;
        }
        // Most likely first; ties keep the lower index first, so argmax is the first maximum.
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.temperature <= 0.0 || self.top_k == Some(1) {
            return Some(order[0]);
        }
        if let Some(k) = self.top_k {
            order.truncate(k.max(1));
        }
        let top = logits[order[0]] as f64;
        let mut weights: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] as f64 - top) / self.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        if let Some(p) = self.top_p {
            let mut cumulative = 0.0;
            let keep = weights
                .iter()
                .position(|w| {
                    cumulative += w / total;
                    cumulative >= p
                })
                .map_or(weights.len(), |i| i + 1);
            weights.truncate(keep);
        }
        let total: f64 = weights.iter().sum();
        let mut target = rng.random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            target -= w;
            if target < 0.0 {
                return Some(order[i]);
            }
        }
        Some(order[weights.len() - 1])
    }

    /// Picks one index per row of a row-major `[rows, vocab]` block of logits; `None` when a row has no finite
    /// logit.
    ///
    /// # Panics
    /// When `logits` is not a whole number of rows of `vocab` (a caller's bug).
    pub fn sample_rows(&self, logits: &[f32], vocab: usize, rng: &mut StdRng) -> Option<Vec<usize>> {
        assert_eq!(
            logits.len() % vocab,
            0,
            "{} logits are not rows of {vocab}",
            logits.len()
        );
        logits.chunks_exact(vocab).map(|row| self.sample(row, rng)).collect()
    }
}

impl Sampler {
    /// Picks one code per row of `logits` (`[rows, vocab]`) on their device, with the same distribution as
    /// [`Self::sample`] (ties at the top-k or top-p threshold are all kept, where the host keeps the lower
    /// indices; the same seed draws other codes than the host's, which walks codes in order of likelihood).
    /// Reads back only the row maxima, to find rows without a finite logit.
    ///
    /// # Errors
    /// The index of the first row without a finite logit (corrupt or diverged weights).
    ///
    /// # Shapes
    /// - `logits`: `[rows, vocab]`
    /// - output: `[rows]`
    pub fn sample_on_device<B: Backend>(
        &self,
        logits: Tensor<B, 2>,
        rng: &mut StdRng,
    ) -> Result<Tensor<B, 1, Int>, usize> {
        let [rows, vocab] = logits.dims();
        let device = logits.device();
        let impossible = logits.clone().is_finite().bool_not();
        let logits = logits.mask_fill(impossible, f32::NEG_INFINITY);
        let maxima = logits
            .clone()
            .max_dim(1)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        if let Some(row) = maxima.iter().position(|m| !m.is_finite()) {
            return Err(row);
        }
        if self.temperature <= 0.0 || self.top_k == Some(1) {
            return Ok(logits.argmax(1).reshape([rows]));
        }
        let below = |values: Tensor<B, 2>, threshold: Tensor<B, 2>| {
            let mask = values.clone().lower(threshold.expand([rows, vocab]));
            values.mask_fill(mask, f32::NEG_INFINITY)
        };
        let mut logits = logits;
        if let Some(k) = self.top_k.filter(|&k| k < vocab) {
            let kth = logits.clone().topk(k, 1).narrow(1, k - 1, 1);
            logits = below(logits, kth);
        }
        let mut scaled = logits / self.temperature;
        if let Some(p) = self.top_p {
            // Keep the most likely codes up to and including the one where the cumulative probability reaches p:
            // those whose cumulative probability *before* them is below p.
            let sorted = scaled.clone().sort_descending(1);
            let probabilities = softmax(sorted.clone(), 1);
            let before = probabilities.clone().cumsum(1) - probabilities;
            let kept = before.lower_elem(p).int().sum_dim(1);
            let threshold = sorted.gather(1, kept - 1);
            scaled = below(scaled, threshold);
        }
        // Inverse CDF: the first code whose cumulative probability reaches u × (the row's total, which rounding
        // keeps from being exactly 1), so that u < 1 always lands on a code of non-zero probability.
        let cumulative = softmax(scaled, 1).cumsum(1);
        let total = cumulative.clone().narrow(1, vocab - 1, 1);
        let uniforms: Vec<f32> = (0..rows).map(|_| rng.random::<f64>() as f32).collect();
        let target = Tensor::<B, 1>::from_floats(uniforms.as_slice(), &device).reshape([rows, 1]) * total;
        let below_target = cumulative.lower(target.expand([rows, vocab]));
        Ok(below_target
            .int()
            .sum_dim(1)
            .clamp_max(vocab as i64 - 1)
            .reshape([rows]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token_shuffle_test_support::TestBackend;

    fn on_device(sampler: &Sampler, logits: &[f32], vocab: usize) -> Result<Vec<i64>, usize> {
        let rows = logits.len() / vocab;
        let tensor = Tensor::<TestBackend, 1>::from_floats(logits, &Default::default()).reshape([rows, vocab]);
        sampler
            .sample_on_device(tensor, &mut seeded_rng(9))
            .map(|codes| codes.into_data().convert::<i64>().to_vec::<i64>().unwrap())
    }

    #[test]
    fn on_the_device_greedy_is_the_host_argmax_and_a_row_without_a_finite_logit_is_named() {
        let top1 = Sampler {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
        };
        let logits: Vec<f32> = (0..600)
            .map(|i| ((i * 37) % 23) as f32 / 3.0 - (i % 7) as f32)
            .collect();
        let host = top1.sample_rows(&logits, 20, &mut seeded_rng(0)).unwrap();
        let device = on_device(&top1, &logits, 20).unwrap();
        assert_eq!(device, host.iter().map(|&c| c as i64).collect::<Vec<_>>());
        if token_shuffle_test_support::BACKEND_SEES_NON_FINITE {
            let mut broken = logits.clone();
            broken[40..60].fill(f32::NAN);
            assert_eq!(on_device(&Sampler::default(), &broken, 20), Err(2));
        }
    }

    #[test]
    fn on_the_device_frequencies_follow_the_host_distribution() {
        // Logits of one row, repeated over many rows: each row is an independent draw.
        let row = [0.5f32, 2.0, -1.0, 1.0, 1.5, f32::NEG_INFINITY, 0.0, 1.8];
        let rows = 20_000;
        let logits: Vec<f32> = row.iter().copied().cycle().take(row.len() * rows).collect();
        for sampler in [
            Sampler {
                temperature: 0.7,
                top_k: None,
                top_p: None,
            },
            Sampler {
                temperature: 1.0,
                top_k: Some(3),
                top_p: None,
            },
            Sampler {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.8),
            },
        ] {
            let count = |codes: Vec<usize>| {
                let mut counts = vec![0.0; row.len()];
                for c in codes {
                    counts[c] += 1.0 / rows as f64;
                }
                counts
            };
            let device = count(
                on_device(&sampler, &logits, row.len())
                    .unwrap()
                    .into_iter()
                    .map(|c| c as usize)
                    .collect(),
            );
            let host = count(sampler.sample_rows(&logits, row.len(), &mut seeded_rng(1)).unwrap());
            for (code, (d, h)) in device.iter().zip(&host).enumerate() {
                // Two draws of 20,000: frequencies within ~4 standard deviations (≤ 0.014 at p = 0.5).
                assert!(
                    (d - h).abs() < 0.015,
                    "{sampler:?} code {code}: device {d:.3}, host {h:.3}"
                );
            }
            assert_eq!(device[5], 0.0, "an impossible code is never drawn");
        }
    }

    const LOGITS: [f32; 5] = [0.5, 2.0, -1.0, 2.0, 1.5];

    #[test]
    fn top_k_one_and_zero_temperature_are_argmax() {
        let mut rng = seeded_rng(0);
        let top1 = Sampler {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
        };
        for _ in 0..20 {
            assert_eq!(top1.sample(&LOGITS, &mut rng), Some(1), "the first of the tied maxima");
            assert_eq!(Sampler::argmax().sample(&LOGITS, &mut rng), Some(1));
        }
    }

    #[test]
    fn same_seed_same_codes() {
        let sampler = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let logits: Vec<f32> = (0..400).map(|i| ((i * 37) % 11) as f32 / 3.0).collect();
        let a = sampler.sample_rows(&logits, 20, &mut seeded_rng(5));
        let b = sampler.sample_rows(&logits, 20, &mut seeded_rng(5));
        let c = sampler.sample_rows(&logits, 20, &mut seeded_rng(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let sampler = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let mut rng = seeded_rng(1);
        let n = 40_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[sampler.sample(&LOGITS, &mut rng).unwrap()] += 1;
        }
        let z: f64 = LOGITS.iter().map(|l| (*l as f64).exp()).sum();
        for (i, &count) in counts.iter().enumerate() {
            let p = (LOGITS[i] as f64).exp() / z;
            let freq = count as f64 / n as f64;
            assert!((freq - p).abs() < 0.01, "index {i}: {freq} vs {p}");
        }
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let mut rng = seeded_rng(2);
        let top2 = Sampler {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let nucleus = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.5),
        };
        for _ in 0..500 {
            assert!([1, 3].contains(&top2.sample(&LOGITS, &mut rng).unwrap()));
            // The tied maxima hold 0.35 each: the first alone is below 0.5, so the nucleus is exactly the pair.
            assert!([1, 3].contains(&nucleus.sample(&LOGITS, &mut rng).unwrap()));
        }
        assert_eq!(
            Sampler {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.0)
            }
            .sample(&LOGITS, &mut rng),
            Some(1)
        );
    }

    #[test]
    fn non_finite_logits_are_never_picked() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0];
        let sampler = Sampler {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let mut rng = seeded_rng(3);
        assert!((0..200).all(|_| [1, 3].contains(&sampler.sample(&logits, &mut rng).unwrap())));
        assert_eq!(
            sampler.sample(&[f32::NAN, f32::INFINITY], &mut rng),
            None,
            "nothing finite to pick"
        );
    }
}
