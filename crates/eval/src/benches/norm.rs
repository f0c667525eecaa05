//! `bench norm`: GroupNorm (burn's and the tokenizer's own) against the element-wise ops it is made of.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use super::timing::{at_least_one, interleaved, median, ms, synced};
use crate::EvalError;

/// What to measure.
#[derive(Debug, Clone)]
pub struct NormBench {
    /// Activation `[N, C, H, W]`, f32.
    pub shape: [usize; 4],
    /// Groups of the GroupNorms.
    pub groups: usize,
    /// Timed rounds (after one warm-up).
    pub repeats: usize,
}

/// Every case, measured.
#[derive(Debug, Clone, Serialize)]
pub struct NormReport {
    /// `(case, median ms)`, the same-shape add first (the ratios' base).
    pub rows: Vec<(String, f64)>,
}

impl NormBench {
    /// Times each case in turn, every round.
    ///
    /// # Errors
    /// [`EvalError::Config`] when the groups do not divide the channels or nothing would be timed.
    pub fn run<B: Backend>(&self, device: &B::Device) -> Result<NormReport, EvalError> {
        let [n, c, h, w] = self.shape;
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            return Err(EvalError::Config(format!(
                "groups must divide the {c} channels; {} does not",
                self.groups
            )));
        }
        at_least_one("repeats", self.repeats)?;
        let x = Tensor::<B, 4>::random(self.shape, Distribution::Normal(0.0, 1.0), device);
        let same = Tensor::<B, 4>::random(self.shape, Distribution::Normal(0.0, 1.0), device);
        let channel = Tensor::<B, 1>::random([c], Distribution::Normal(0.0, 1.0), device);
        let per_row = Tensor::<B, 2>::random([n * c, 1], Distribution::Normal(0.0, 1.0), device);
        let ours = token_shuffle_vqgan::GroupNormConfig::new(self.groups, c).init::<B>(device);
        let burns = burn::nn::GroupNormConfig::new(self.groups, c)
            .with_epsilon(1e-6)
            .init::<B>(device);
        type Case<'a, B> = (&'static str, Box<dyn Fn() -> Tensor<B, 4> + 'a>);
        let cases: Vec<Case<B>> = vec![
            ("x + y (same shape)", Box::new(|| x.clone() + same.clone())),
            (
                "x + b, b [1,C,1,1] (4-D broadcast)",
                Box::new(|| x.clone() + channel.clone().reshape([1, c, 1, 1])),
            ),
            (
                "x + b as [N·C, H·W] + [N·C, 1] (2-D)",
                Box::new(|| (x.clone().reshape([n * c, h * w]) + per_row.clone()).reshape([n, c, h, w])),
            ),
            ("burn::nn::GroupNorm", Box::new(|| burns.forward(x.clone()))),
            ("token_shuffle_vqgan::GroupNorm", Box::new(|| ours.forward(x.clone()))),
        ];
        let times = interleaved(cases.len(), 1, self.repeats, |i| synced::<B, _>(device, &cases[i].1))?;
        let rows = cases
            .iter()
            .zip(&times)
            .map(|((name, _), t)| (name.to_string(), ms(median(t))))
            .collect();
        Ok(NormReport { rows })
    }
}

impl NormReport {
    /// The table as `bench norm` prints it.
    pub fn table(&self) -> String {
        let base = self.rows[0].1;
        let mut out = format!("{:<40} {:>10} {:>16}\n", "operation", "median ms", "× same-shape add");
        for (name, t) in &self.rows {
            out += &format!("{name:<40} {t:>10.2} {:>16.2}\n", t / base);
        }
        out
    }
}
