/// Learning rate: linear warm-up from 0 to `peak` over `warmup_steps`, then a cosine decay to
/// `peak · final_ratio` at `total_steps` (and constant after).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// Highest learning rate, reached at the end of the warm-up.
    pub peak: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Step at which the decay ends.
    pub total_steps: usize,
    /// Final learning rate as a fraction of the peak.
    pub final_ratio: f64,
}

impl WarmupCosine {
    /// The learning rate for step `step` (counting from 0).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_the_final_ratio() {
        let schedule = WarmupCosine {
            peak: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            final_ratio: 0.1,
        };
        assert!((schedule.at(0) - 0.1).abs() < 1e-12);
        assert!((schedule.at(4) - 0.5).abs() < 1e-12);
        assert!((schedule.at(10) - 1.0).abs() < 1e-12);
        // Half-way through the decay the cosine is at its midpoint: 0.1 + 0.9 · 0.5.
        assert!((schedule.at(60) - 0.55).abs() < 1e-12);
        assert!((schedule.at(110) - 0.1).abs() < 1e-12);
        assert!((schedule.at(500) - 0.1).abs() < 1e-12);
        assert!(
            (11..200).all(|s| schedule.at(s) <= schedule.at(s - 1) + 1e-12),
            "the decay never rises"
        );
    }
}
