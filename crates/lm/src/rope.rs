//! Rotary frequency scaling for long contexts, as pretrained LLMs carry it in their `config.json`
//! (`rope_scaling`): the two kinds Llama-family checkpoints use. Formulas from transformers'
//! `modeling_rope_utils.py` (`_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`).

use serde::{Deserialize, Serialize};

/// How the rotary frequencies `θ_i = base^(-2i/hd)` are rescaled. Our own models use none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's: low frequencies (wavelength above `original_max_position_embeddings / low_freq_factor`)
    /// divided by `factor`, high ones (below `… / high_freq_factor`) kept, those between interpolated smoothly.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Sets the wavelength above which frequencies are divided.
        low_freq_factor: f64,
        /// Sets the wavelength below which frequencies are kept.
        high_freq_factor: f64,
        /// The context length the model was first trained at.
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// Checks that the factors are finite and positive and that `high_freq_factor > low_freq_factor`.
    ///
    /// # Errors
    /// A sentence naming the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = |name: &str, value: f64| match value.is_finite() && value > 0.0 {
            true => Ok(()),
            false => Err(format!(
                "rope_scaling.{name} is {value}; it must be finite and positive"
            )),
        };
        match *self {
            Self::Linear { factor } => positive("factor", factor),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("factor", factor)?;
                positive("low_freq_factor", low_freq_factor)?;
                positive("high_freq_factor", high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope_scaling.high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                    ));
                }
                if original_max_position_embeddings == 0 {
                    return Err("rope_scaling.original_max_position_embeddings is 0".into());
                }
                Ok(())
            }
        }
    }

    /// The scaled frequency of one unscaled frequency `theta` (radians per position).
    pub fn scale(&self, theta: f64) -> f64 {
        match *self {
            Self::Linear { factor } => theta / factor,
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let context = original_max_position_embeddings as f64;
                let wavelength = 2.0 * std::f64::consts::PI / theta;
                if wavelength > context / low_freq_factor {
                    theta / factor
                } else if wavelength < context / high_freq_factor {
                    theta
                } else {
                    let smooth = (context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * theta / factor + smooth * theta
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        scaling.check().unwrap();
        let tau = 2.0 * std::f64::consts::PI;
        // Wavelength 100 < 8192 / 4: kept. Wavelength 10,000 > 8192: divided by 8.
        assert_eq!(scaling.scale(tau / 100.0), tau / 100.0);
        assert!((scaling.scale(tau / 10_000.0) - tau / 80_000.0).abs() < 1e-15);
        // Wavelength 4096: smooth = (2 - 1) / 3, between the two.
        let theta = tau / 4096.0;
        let want = (2.0 / 3.0) * theta / 8.0 + theta / 3.0;
        assert!((scaling.scale(theta) - want).abs() < 1e-15);
        assert_eq!(RopeScaling::Linear { factor: 2.0 }.scale(1.0), 0.5);
        let bad = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 4.0,
            high_freq_factor: 1.0,
            original_max_position_embeddings: 8192,
        };
        assert!(bad.check().unwrap_err().contains("high_freq_factor"));
    }
}
