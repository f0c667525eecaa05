use crate::conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::{Tensor, backend::Backend};

use crate::GroupNorm;
use crate::VqError;
use crate::resnet::group_norm;

/// Configuration of a [`PatchDiscriminator`].
#[derive(Config, Debug)]
pub struct PatchDiscriminatorConfig {
    /// Channels of the first layer; each later layer doubles them, up to 8×. Default: 64 (taming).
    #[config(default = 64)]
    pub channels: usize,
    /// Number of stride-2 layers. Default: 3 (taming): a 64×64 image gives 6×6 patch logits, 256×256 gives 30×30.
    #[config(default = 3)]
    pub layers: usize,
    /// GroupNorm groups in the inner layers. Default: 32.
    #[config(default = 32)]
    pub norm_groups: usize,
}

/// A 4×4 convolution, stride `stride`, padding 1 (every layer of the PatchGAN).
fn conv4x4<B: Backend>(channels_in: usize, channels_out: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([channels_in, channels_out], [4, 4])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// An inner PatchGAN layer: convolution, normalisation, LeakyReLU(0.2).
#[derive(Module, Debug)]
pub struct DiscriminatorLayer<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
}

/// taming's PatchGAN discriminator: a real/fake logit per image patch.
///
/// One difference from taming: GroupNorm instead of BatchNorm, so that the logits of an image do not depend on the
/// rest of its batch (small CPU batches make batch statistics noisy).
#[derive(Module, Debug)]
pub struct PatchDiscriminator<B: Backend> {
    conv_in: Conv2d<B>,
    layers: Vec<DiscriminatorLayer<B>>,
    conv_out: Conv2d<B>,
}

impl PatchDiscriminatorConfig {
    /// Builds the discriminator on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<PatchDiscriminator<B>, VqError> {
        let width = |layer: usize| self.channels * (1 << layer.min(3));
        if self.layers == 0 || self.channels == 0 {
            return Err(VqError::Config(
                "the discriminator needs at least one layer and one channel".into(),
            ));
        }
        if let Some(w) = (1..=self.layers)
            .map(width)
            .find(|w| self.norm_groups == 0 || w % self.norm_groups != 0)
        {
            return Err(VqError::Config(format!(
                "discriminator norm_groups = {} does not divide its width {w}; pick a divisor of channels",
                self.norm_groups
            )));
        }
        // Stride 2 on all inner layers but the last, which keeps the size (taming's NLayerDiscriminator).
        let layers = (1..=self.layers)
            .map(|layer| DiscriminatorLayer {
                conv: conv4x4(
                    width(layer - 1),
                    width(layer),
                    if layer < self.layers { 2 } else { 1 },
                    device,
                ),
                norm: group_norm(self.norm_groups, width(layer), device),
            })
            .collect();
        Ok(PatchDiscriminator {
            conv_in: conv4x4(3, self.channels, 2, device),
            layers,
            conv_out: conv4x4(width(self.layers), 1, 1, device),
        })
    }
}

impl<B: Backend> PatchDiscriminator<B> {
    /// # Shapes
    /// - input `[batch, 3, H, W]`
    /// - output `[batch, 1, h, w]`: one logit per patch (positive = looks real)
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = leaky_relu(conv2d(&self.conv_in, images), 0.2);
        for layer in &self.layers {
            h = leaky_relu(layer.norm.forward(conv2d(&layer.conv, h)), 0.2);
        }
        conv2d(&self.conv_out, h)
    }
}

/// The discriminator's hinge loss: `½·(mean(relu(1 − real)) + mean(relu(1 + fake)))`.
pub fn hinge_discriminator_loss<B: Backend>(real_logits: Tensor<B, 4>, fake_logits: Tensor<B, 4>) -> Tensor<B, 1> {
    (relu(real_logits.neg() + 1.0).mean() + relu(fake_logits + 1.0).mean()) * 0.5
}

/// The generator's side of the hinge GAN: `−mean(fake)`.
pub fn hinge_generator_loss<B: Backend>(fake_logits: Tensor<B, 4>) -> Tensor<B, 1> {
    fake_logits.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn patch_logits_have_taming_sizes() {
        let device = Default::default();
        let disc = PatchDiscriminatorConfig::new()
            .with_channels(8)
            .with_norm_groups(4)
            .init::<TestBackend>(&device)
            .unwrap();
        assert_eq!(
            disc.forward(Tensor::zeros([2, 3, 64, 64], &device)).dims(),
            [2, 1, 6, 6]
        );
        assert_eq!(
            disc.forward(Tensor::zeros([1, 3, 256, 256], &device)).dims(),
            [1, 1, 30, 30]
        );
    }

    #[test]
    fn every_discriminator_parameter_is_trained() {
        use burn::backend::Autodiff;
        use burn::tensor::Distribution;
        let device = Default::default();
        let config = PatchDiscriminatorConfig::new()
            .with_channels(8)
            .with_layers(2)
            .with_norm_groups(4);
        let disc = config.init::<Autodiff<TestBackend>>(&device).unwrap();
        let images = Tensor::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        token_shuffle_test_support::assert_every_parameter_has_gradient(&disc, disc.forward(images).square().mean());
    }

    #[test]
    fn hinge_losses_on_known_logits() {
        let device = Default::default();
        let logits =
            |v: [f32; 2]| Tensor::<TestBackend, 4>::from_data(TensorData::new(v.to_vec(), [1, 1, 1, 2]), &device);
        // real: relu(1 − 2) = 0, relu(1 − 0.5) = 0.5 → 0.25; fake: relu(1 − 3) = 0, relu(1 + 1) = 2 → 1.
        let d: f32 = hinge_discriminator_loss(logits([2.0, 0.5]), logits([-3.0, 1.0])).into_scalar();
        assert!((d - 0.625).abs() < 1e-6, "{d}");
        let g: f32 = hinge_generator_loss(logits([-3.0, 1.0])).into_scalar();
        assert!((g - 1.0).abs() < 1e-6, "{g}");
    }

    #[test]
    fn groups_that_do_not_divide_the_width_are_named() {
        let err = PatchDiscriminatorConfig::new()
            .with_channels(12)
            .with_norm_groups(16)
            .init::<TestBackend>(&Default::default());
        assert!(err.unwrap_err().to_string().contains("norm_groups = 16"));
    }
}
