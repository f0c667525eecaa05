//! Bounds on training values: each value out of bounds is refused naming its field with its section
//! (`lm.batch_size`, `tokenizer.weight_decay`) and the value, before anything is written.

use crate::TrainError;

/// One section of a config (`lm`, `tokenizer`), whose fields are checked against their bounds.
pub(crate) struct Section(pub &'static str);

impl Section {
    fn refuse(&self, field: &str, value: impl std::fmt::Display, rule: &str) -> TrainError {
        TrainError::Config(format!("{}.{field} = {value}: {rule}", self.0))
    }

    /// A count that must be at least 1.
    pub fn at_least_one(&self, field: &str, value: usize) -> Result<(), TrainError> {
        if value == 0 {
            return Err(self.refuse(field, value, "must be at least 1"));
        }
        Ok(())
    }

    /// A finite number above 0.
    pub fn positive(&self, field: &str, value: f64) -> Result<(), TrainError> {
        if !(value.is_finite() && value > 0.0) {
            return Err(self.refuse(field, value, "must be a finite number above 0"));
        }
        Ok(())
    }

    /// A finite number of at least 0.
    pub fn non_negative(&self, field: &str, value: f64) -> Result<(), TrainError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(self.refuse(field, value, "must be a finite number of at least 0"));
        }
        Ok(())
    }

    /// The learning-rate schedule's end as a fraction of its peak, in [0, 1] (a negative one would make the
    /// learning rate negative: the loss climbs while the run reports success).
    pub fn final_ratio(&self, field: &str, value: f64) -> Result<(), TrainError> {
        if !(0.0..=1.0).contains(&value) {
            return Err(self.refuse(
                field,
                value,
                "must be in [0, 1] (the last step's learning rate as a fraction of the peak)",
            ));
        }
        Ok(())
    }

    /// AdamW's optimizer values shared by both sections: weight decay ≥ 0 and a clip norm > 0 when given (a
    /// negative one flips the gradients, 0 zeroes them).
    pub fn optimizer(
        &self,
        final_learning_rate_ratio: f64,
        weight_decay: f32,
        gradient_clip_norm: Option<f32>,
    ) -> Result<(), TrainError> {
        self.final_ratio("final_learning_rate_ratio", final_learning_rate_ratio)?;
        self.non_negative("weight_decay", f64::from(weight_decay))?;
        if let Some(norm) = gradient_clip_norm {
            self.positive("gradient_clip_norm", f64::from(norm))
                .map_err(|e| TrainError::Config(format!("{e} (use null for no clipping)")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bound_names_section_field_and_value() {
        let lm = Section("lm");
        assert_eq!(
            lm.at_least_one("batch_size", 0).unwrap_err().to_string(),
            "training config: lm.batch_size = 0: must be at least 1"
        );
        assert!(lm.at_least_one("batch_size", 1).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(lm.positive("learning_rate", bad).is_err(), "{bad}");
        }
        assert!(lm.non_negative("weight_decay", 0.0).is_ok());
        for (ratio, ok) in [
            (0.0, true),
            (1.0, true),
            (0.1, true),
            (-1.0, false),
            (1.5, false),
            (f64::NAN, false),
        ] {
            assert_eq!(
                lm.final_ratio("final_learning_rate_ratio", ratio).is_ok(),
                ok,
                "{ratio}"
            );
        }
        let err = Section("tokenizer").optimizer(0.1, -5.0, None).unwrap_err().to_string();
        assert!(err.contains("tokenizer.weight_decay = -5"), "{err}");
        let err = lm.optimizer(0.1, 0.0, Some(-1.0)).unwrap_err().to_string();
        assert!(
            err.contains("lm.gradient_clip_norm = -1") && err.contains("null"),
            "{err}"
        );
        assert!(lm.optimizer(0.1, 0.01, None).is_ok());
    }
}
