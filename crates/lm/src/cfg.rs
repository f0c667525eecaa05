//! Classifier-free guidance and its schedules.
//!
//! Generation runs a conditional and an unconditional (empty prompt) row per image, and mixes their logits:
//! `logits = u + w(t)·(c − u)`. The paper's CFG scheduler raises `w` over the image instead of holding it at the
//! full scale from the first token, and found **half-linear** best: a linear rise over the first half, then flat.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// How the guidance scale rises from 1 to its maximum over the image's progress `t ∈ [0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CfgSchedule {
    /// The maximum from the first window: `w = max`.
    Constant,
    /// `w = 1 + (max − 1)·t`.
    Linear,
    /// The paper's default: `w = 1 + (max − 1)·min(2t, 1)`.
    HalfLinear,
    /// No guidance (`w = 1`) for the first `windows` generation steps, then the maximum.
    DropFirst {
        /// How many windows are generated without guidance.
        windows: usize,
    },
    /// `w = 1 + (max − 1)·sin(πt/2)`: fast rise, then flattening.
    Sin,
    /// A logistic rise centred on t = 0.5, rescaled so that `w(0) = 1` and `w(1) = max`.
    Sigmoid,
}

impl CfgSchedule {
    /// The guidance scale for generation step `step` of `steps` (one step per window), rising to `max`.
    ///
    /// Progress is `t = step / (steps − 1)`: the first window has `t = 0`, the last `t = 1`.
    pub fn scale(&self, step: usize, steps: usize, max: f64) -> f64 {
        let t = if steps <= 1 {
            1.0
        } else {
            step as f64 / (steps - 1) as f64
        };
        let rise = match *self {
            CfgSchedule::Constant => 1.0,
            CfgSchedule::Linear => t,
            CfgSchedule::HalfLinear => (2.0 * t).min(1.0),
            CfgSchedule::DropFirst { windows } => {
                if step < windows {
                    0.0
                } else {
                    1.0
                }
            }
            CfgSchedule::Sin => (std::f64::consts::FRAC_PI_2 * t).sin(),
            CfgSchedule::Sigmoid => {
                let logistic = |x: f64| 1.0 / (1.0 + (-x).exp());
                const STEEPNESS: f64 = 10.0;
                let (low, high) = (logistic(-STEEPNESS / 2.0), logistic(STEEPNESS / 2.0));
                (logistic(STEEPNESS * (t - 0.5)) - low) / (high - low)
            }
        };
        1.0 + (max - 1.0) * rise
    }
}

impl fmt::Display for CfgSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CfgSchedule::Constant => write!(f, "constant"),
            CfgSchedule::Linear => write!(f, "linear"),
            CfgSchedule::HalfLinear => write!(f, "half-linear"),
            CfgSchedule::DropFirst { windows } => write!(f, "drop-first-{windows}"),
            CfgSchedule::Sin => write!(f, "sin"),
            CfgSchedule::Sigmoid => write!(f, "sigmoid"),
        }
    }
}

impl FromStr for CfgSchedule {
    type Err = String;

    /// Parses the command-line names: `constant`, `linear`, `half-linear`, `drop-first-K`, `sin`, `sigmoid`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "constant" => CfgSchedule::Constant,
            "linear" => CfgSchedule::Linear,
            "half-linear" => CfgSchedule::HalfLinear,
            "sin" => CfgSchedule::Sin,
            "sigmoid" => CfgSchedule::Sigmoid,
            _ => match s.strip_prefix("drop-first-").map(str::parse) {
                Some(Ok(windows)) => CfgSchedule::DropFirst { windows },
                _ => {
                    return Err(format!(
                        "unknown CFG schedule {s:?}: use constant, linear, half-linear, drop-first-K (K windows \
                         without guidance), sin or sigmoid"
                    ));
                }
            },
        })
    }
}

/// The largest guidance scale [`check_cfg_scale`] accepts. At 10⁶ the guided logits are already the scaled
/// difference of the two rows alone; far larger scales only overflow f32 (1e39 is infinite there), which would
/// read as corrupt weights.
pub const MAX_CFG_SCALE: f64 = 1e6;

/// Checks a classifier-free guidance scale: finite, ≥ 0 (1 = off) and at most [`MAX_CFG_SCALE`].
///
/// # Errors
/// A message naming the scale and the bound it breaks.
pub fn check_cfg_scale(scale: f64) -> Result<(), String> {
    if !(scale.is_finite() && scale >= 0.0) {
        return Err(format!(
            "guidance scale {scale} must be a finite number ≥ 0 (1 turns guidance off)"
        ));
    }
    if scale > MAX_CFG_SCALE {
        return Err(format!(
            "guidance scale {scale} is above {MAX_CFG_SCALE:e}: the guided logits would overflow f32 (and no larger \
             scale samples differently)"
        ));
    }
    Ok(())
}

/// Mixes conditional and unconditional logits: `u + w·(c − u)`. `w = 1` gives the conditional logits.
///
/// # Shapes
/// - `conditional`, `unconditional`: any shape, the same
/// - output: that shape
pub fn guide<B: Backend, const D: usize>(
    conditional: Tensor<B, D>,
    unconditional: Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    unconditional.clone() + (conditional - unconditional) * scale
}

/// Replaces each prompt by the empty prompt with probability `rate` (training for classifier-free guidance).
pub fn drop_prompts(texts: &[Vec<u32>], rate: f64, rng: &mut rand::rngs::StdRng) -> Vec<Vec<u32>> {
    use rand::RngExt;
    texts
        .iter()
        .map(|t| {
            if rng.random::<f64>() < rate {
                Vec::new()
            } else {
                t.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (schedule, w at t = 0, 0.5, 1) with max = 7.5, on a 3-step image (t = 0, 0.5, 1).
    #[test]
    fn schedules_at_start_middle_and_end() {
        let sigmoid_mid = 1.0 + 6.5 * 0.5;
        let cases = [
            (CfgSchedule::Constant, [7.5, 7.5, 7.5]),
            (CfgSchedule::Linear, [1.0, 4.25, 7.5]),
            (CfgSchedule::HalfLinear, [1.0, 7.5, 7.5]),
            (CfgSchedule::DropFirst { windows: 1 }, [1.0, 7.5, 7.5]),
            (CfgSchedule::DropFirst { windows: 2 }, [1.0, 1.0, 7.5]),
            (
                CfgSchedule::Sin,
                [1.0, 1.0 + 6.5 * std::f64::consts::FRAC_1_SQRT_2, 7.5],
            ),
            (CfgSchedule::Sigmoid, [1.0, sigmoid_mid, 7.5]),
        ];
        for (schedule, expected) in cases {
            for (step, want) in expected.iter().enumerate() {
                let got = schedule.scale(step, 3, 7.5);
                assert!((got - want).abs() < 1e-9, "{schedule} at step {step}: {got} vs {want}");
            }
        }
        // Half-linear at a quarter of the image is halfway up.
        assert!((CfgSchedule::HalfLinear.scale(1, 5, 7.5) - 4.25).abs() < 1e-12);
    }

    #[test]
    fn schedules_never_decrease() {
        for schedule in [
            CfgSchedule::Linear,
            CfgSchedule::HalfLinear,
            CfgSchedule::Sin,
            CfgSchedule::Sigmoid,
            CfgSchedule::DropFirst { windows: 7 },
        ] {
            let w: Vec<f64> = (0..64).map(|s| schedule.scale(s, 64, 5.0)).collect();
            assert!(w.windows(2).all(|p| p[1] >= p[0] - 1e-12), "{schedule}");
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_explained() {
        for s in [
            CfgSchedule::Constant,
            CfgSchedule::Linear,
            CfgSchedule::HalfLinear,
            CfgSchedule::DropFirst { windows: 3 },
            CfgSchedule::Sin,
            CfgSchedule::Sigmoid,
        ] {
            assert_eq!(s.to_string().parse::<CfgSchedule>().unwrap(), s);
        }
        let err = "cosine".parse::<CfgSchedule>().unwrap_err();
        assert!(err.contains("half-linear"), "{err}");
    }

    #[test]
    fn prompt_dropout_empties_about_the_asked_fraction() {
        let texts = vec![vec![1, 2, 3]; 10_000];
        let dropped = drop_prompts(&texts, 0.1, &mut crate::seeded_rng(4));
        let empty = dropped.iter().filter(|t| t.is_empty()).count();
        assert!((850..1150).contains(&empty), "{empty} of 10000 dropped");
        assert!(dropped.iter().all(|t| t.is_empty() || t == &texts[0]));
        assert!(
            drop_prompts(&texts, 0.0, &mut crate::seeded_rng(4))
                .iter()
                .all(|t| !t.is_empty())
        );
    }

    #[test]
    fn guidance_mixes_logits() {
        type B = token_shuffle_test_support::TestBackend;
        let device = Default::default();
        let c = Tensor::<B, 1>::from_floats([2.0, 0.0], &device);
        let u = Tensor::<B, 1>::from_floats([1.0, 1.0], &device);
        guide(c.clone(), u.clone(), 1.0)
            .into_data()
            .assert_eq(&c.clone().into_data(), true);
        guide(c, u, 3.0)
            .into_data()
            .assert_eq(&Tensor::<B, 1>::from_floats([4.0, -2.0], &device).into_data(), true);
    }
}
