use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

/// Elements of the input whose statistics are computed at once (16 MiB of f32); larger inputs go in chunks of
/// whole groups.
const STATS_ELEMENTS: usize = 4 << 20;

/// Configuration of a [`GroupNorm`].
#[derive(Config, Debug)]
pub struct GroupNormConfig {
    /// Groups G; must divide the channels.
    pub num_groups: usize,
    /// Channels C.
    pub num_channels: usize,
    /// Added to the variance. Default: 1e-6 (taming, LlamaGen).
    #[config(default = 1e-6)]
    pub epsilon: f64,
}

/// Group normalisation with a per-channel affine map, as `torch.nn.GroupNorm` (and burn's `GroupNorm`, whose
/// parameter names `gamma`/`beta` it keeps).
///
/// Why not burn's: its broadcasts are 4-D (`[N,G,L] − [N,G,1]`, `[N,C,H,W] · [1,C,1,1]`), which the Flex CPU
/// backend runs several times slower than 2-D ones (see docs/BUILDING.md). Here every full-size operation is a 2-D
/// row broadcast, and normalisation and affine map are folded into one scale and one shift per (image, channel):
/// the same numbers, faster on Flex.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale, `[C]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Per-channel shift, `[C]`.
    pub beta: Param<Tensor<B, 1>>,
    #[module(skip)]
    num_groups: usize,
    #[module(skip)]
    epsilon: f64,
}

impl GroupNormConfig {
    /// Builds the layer on `device` (γ = 1, β = 0).
    ///
    /// # Panics
    /// If `num_groups` does not divide `num_channels` (model configs check this first and return an error).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupNorm<B> {
        assert!(
            self.num_groups > 0 && self.num_channels.is_multiple_of(self.num_groups),
            "{} groups do not divide {} channels",
            self.num_groups,
            self.num_channels
        );
        GroupNorm {
            gamma: Param::from_tensor(Tensor::ones([self.num_channels], device)),
            beta: Param::from_tensor(Tensor::zeros([self.num_channels], device)),
            num_groups: self.num_groups,
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> GroupNorm<B> {
    /// # Shapes
    /// - input and output `[batch, channels, height, width]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, channels, height, width] = x.dims();
        let groups = self.num_groups;
        let per_group = channels / groups * height * width;
        // Statistics per (image, group): rows of [N·G, C/G·H·W], a few rows at a time, so that the centred copy
        // the variance needs stays small at any resolution (at 2048×2048 the whole copy would be 2 GiB).
        let rows = x.clone().reshape([batch * groups, per_group]);
        let rows_per_chunk = (STATS_ELEMENTS / per_group.max(1)).max(1);
        let (means, variances): (Vec<_>, Vec<_>) = (0..batch * groups)
            .step_by(rows_per_chunk)
            .map(|first| {
                let chunk = rows
                    .clone()
                    .narrow(0, first, rows_per_chunk.min(batch * groups - first));
                let mean = chunk.clone().mean_dim(1);
                let variance = (chunk - mean.clone()).square().mean_dim(1);
                (mean, variance)
            })
            .unzip();
        let (mean, variance) = (Tensor::cat(means, 0), Tensor::cat(variances, 0));
        let inverse_std = (variance + self.epsilon).sqrt().recip();
        // Per (image, channel): y = x·scale + shift with scale = γ/σ, shift = β − μ·γ/σ.
        let per_channel = |t: Tensor<B, 2>| {
            t.reshape([batch, groups, 1])
                .expand([batch, groups, channels / groups])
                .reshape([batch, channels])
        };
        let (mean, inverse_std) = (per_channel(mean), per_channel(inverse_std));
        let gamma = self.gamma.val().reshape([1, channels]);
        let scale = inverse_std * gamma;
        let shift = self.beta.val().reshape([1, channels]) - mean * scale.clone();
        let pixels = x.reshape([batch * channels, height * width]);
        (pixels * scale.reshape([batch * channels, 1]) + shift.reshape([batch * channels, 1]))
            .reshape([batch, channels, height, width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend;

    /// Same numbers as burn's GroupNorm (the straightforward formula) with non-trivial γ and β.
    #[test]
    fn matches_burn_group_norm() {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::random([3, 6, 4, 5], Distribution::Normal(1.0, 2.0), &device);
        let gamma = Tensor::<TestBackend, 1>::random([6], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<TestBackend, 1>::random([6], Distribution::Normal(0.0, 0.5), &device);
        let mut ours = GroupNormConfig::new(2, 6).init::<TestBackend>(&device);
        ours.gamma = Param::from_tensor(gamma.clone());
        ours.beta = Param::from_tensor(beta.clone());
        let mut theirs = burn::nn::GroupNormConfig::new(2, 6)
            .with_epsilon(1e-6)
            .init::<TestBackend>(&device);
        theirs.gamma = Some(Param::from_tensor(gamma));
        theirs.beta = Some(Param::from_tensor(beta));
        ours.forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&theirs.forward(x).into_data(), burn::tensor::Tolerance::absolute(1e-4));
    }
}
