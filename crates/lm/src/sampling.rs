//! Sampling codes from logits: temperature, top-k, top-p, seeded and reproducible.

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

#[cfg(test)]
mod tests {
    use super::*;

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
