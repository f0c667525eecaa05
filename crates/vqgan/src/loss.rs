use burn::config::Config;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use crate::{
    PatchDiscriminator, PatchDiscriminatorConfig, VqForward, VqModel, hinge_discriminator_loss, hinge_generator_loss,
};

/// The pixel loss between an image and its reconstruction.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Reconstruction {
    /// Mean absolute error (taming).
    L1,
    /// Mean squared error (LlamaGen; what PSNR measures).
    L2,
}

impl Reconstruction {
    /// The loss between `images` and `reconstruction`, averaged over every value.
    pub fn loss<B: Backend>(self, images: Tensor<B, 4>, reconstruction: Tensor<B, 4>) -> Tensor<B, 1> {
        let difference = reconstruction - images;
        match self {
            Self::L1 => difference.abs().mean(),
            Self::L2 => difference.square().mean(),
        }
    }
}

/// Configuration of the tokenizer's training loss. No perceptual (LPIPS) term: its VGG weights cannot be had
/// offline, so the GAN and the pixel loss carry sharpness on their own.
#[derive(Config, Debug)]
pub struct VqLossConfig {
    /// Pixel loss. Default: L2.
    #[config(default = "Reconstruction::L2")]
    pub reconstruction: Reconstruction,
    /// Weight of the codebook + commitment (+ entropy) losses. Default: 1.
    #[config(default = 1.0)]
    pub codebook_weight: f32,
    /// Weight of the generator's GAN loss, on top of taming's adaptive weight; 0 trains without a discriminator.
    /// Default: 0.
    #[config(default = 0.0)]
    pub gan_weight: f32,
    /// Step from which the GAN loss is on (the discriminator starts training then too). Default: 0.
    #[config(default = 0)]
    pub gan_start_step: usize,
    /// The discriminator. Default: taming's PatchGAN.
    #[config(default = "PatchDiscriminatorConfig::new()")]
    pub discriminator: PatchDiscriminatorConfig,
}

/// The parts of the tokenizer's loss at one step.
#[derive(Debug, Clone)]
pub struct GeneratorLoss<B: Backend> {
    /// What is back-propagated into the tokenizer.
    pub total: Tensor<B, 1>,
    /// Pixel loss.
    pub reconstruction: Tensor<B, 1>,
    /// Codebook loss (moves codes to encoder outputs).
    pub codebook: Tensor<B, 1>,
    /// β-weighted commitment loss.
    pub commitment: Tensor<B, 1>,
    /// Weighted entropy loss (zero when off).
    pub entropy: Tensor<B, 1>,
    /// The generator's hinge loss, when the GAN is on at this step.
    pub gan: Option<Tensor<B, 1>>,
    /// taming's adaptive weight of the GAN loss (0 when the GAN is off).
    pub adaptive_weight: f32,
}

impl VqLossConfig {
    /// Whether the GAN is on at `step`.
    pub fn gan_active(&self, step: usize) -> bool {
        self.gan_weight > 0.0 && step >= self.gan_start_step
    }

    /// The tokenizer's loss for one forward pass. `discriminator` is used only when the GAN is on at `step`.
    pub fn generator<B: AutodiffBackend>(
        &self,
        model: &VqModel<B>,
        discriminator: Option<&PatchDiscriminator<B>>,
        images: Tensor<B, 4>,
        out: &VqForward<B>,
        step: usize,
    ) -> GeneratorLoss<B> {
        let reconstruction = self.reconstruction.loss(images.clone(), out.reconstruction.clone());
        let quantized = &out.quantized;
        let codebook_total =
            (quantized.codebook_loss.clone() + quantized.commitment_loss.clone() + quantized.entropy_loss.clone())
                * self.codebook_weight;
        let mut total = reconstruction.clone() + codebook_total;
        let (gan, adaptive_weight) = match discriminator.filter(|_| self.gan_active(step)) {
            Some(discriminator) => {
                let gan = hinge_generator_loss(discriminator.forward(out.reconstruction.clone()));
                let weight = self.adaptive_weight(model, discriminator, images, out.features.clone());
                total = total + gan.clone() * (weight * self.gan_weight);
                (Some(gan), weight)
            }
            None => (None, 0.0),
        };
        GeneratorLoss {
            total,
            reconstruction,
            codebook: quantized.codebook_loss.clone(),
            commitment: quantized.commitment_loss.clone(),
            entropy: quantized.entropy_loss.clone(),
            gan,
            adaptive_weight,
        }
    }

    /// taming's adaptive weight `‖∇_W L_rec‖ / (‖∇_W L_gan‖ + 1e-4)`, clamped to [0, 10⁴], where W is the decoder's
    /// last convolution. Those gradients depend only on the last layer's input, so they are taken on a small graph
    /// from the detached decoder features: two cheap backward passes instead of two through the whole model.
    fn adaptive_weight<B: AutodiffBackend>(
        &self,
        model: &VqModel<B>,
        discriminator: &PatchDiscriminator<B>,
        images: Tensor<B, 4>,
        features: Tensor<B, 4>,
    ) -> f32 {
        let features = features.detach();
        let head = model.decoder();
        let last_layer_gradient_norm = |loss: Tensor<B, 1>| -> f32 {
            let grads = loss.backward();
            let grad = head
                .last_layer_weight()
                .grad(&grads)
                .expect("the last decoder layer is trainable");
            grad.square().sum().sqrt().into_scalar().elem()
        };
        let rec = last_layer_gradient_norm(self.reconstruction.loss(images, head.head(features.clone())));
        let gan = last_layer_gradient_norm(hinge_generator_loss(discriminator.forward(head.head(features))));
        (rec / (gan + 1e-4)).clamp(0.0, 1e4)
    }

    /// The discriminator's hinge loss on real images and (detached) reconstructions.
    pub fn discriminator<B: AutodiffBackend>(
        &self,
        discriminator: &PatchDiscriminator<B>,
        images: Tensor<B, 4>,
        reconstruction: Tensor<B, 4>,
    ) -> Tensor<B, 1> {
        hinge_discriminator_loss(
            discriminator.forward(images),
            discriminator.forward(reconstruction.detach()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// With the GAN on, the adaptive weight is taken on its own small graphs; the main loss must still reach every
    /// tokenizer parameter afterwards.
    #[test]
    fn with_the_gan_on_gradients_reach_the_whole_tokenizer_and_discriminator() {
        use burn::backend::Autodiff;
        use burn::tensor::Distribution;
        use token_shuffle_test_support::TestBackend;
        type A = Autodiff<TestBackend>;
        let device = Default::default();
        let model = crate::VqModelConfig::new(16)
            .with_code_dim(4)
            .with_channels(8)
            .with_channel_multipliers(vec![1, 2])
            .with_res_blocks(1)
            .with_z_channels(8)
            .with_norm_groups(4)
            .init::<A>(&device)
            .unwrap();
        let config = VqLossConfig::new()
            .with_gan_weight(0.5)
            .with_gan_start_step(3)
            .with_discriminator(
                PatchDiscriminatorConfig::new()
                    .with_channels(8)
                    .with_layers(2)
                    .with_norm_groups(4),
            );
        let discriminator = config.discriminator.init::<A>(&device).unwrap();
        let images = Tensor::<A, 4>::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        let out = model.forward(images.clone()).unwrap();

        let before = config.generator(&model, Some(&discriminator), images.clone(), &out, 2);
        assert!(
            before.gan.is_none() && before.adaptive_weight == 0.0,
            "the GAN starts at step 3"
        );

        let loss = config.generator(&model, Some(&discriminator), images.clone(), &out, 3);
        assert!(loss.gan.is_some());
        assert!(
            loss.adaptive_weight.is_finite() && loss.adaptive_weight > 0.0,
            "{}",
            loss.adaptive_weight
        );
        token_shuffle_test_support::assert_every_parameter_has_gradient(&model, loss.total);
        // Near initialisation all logits sit inside the hinge margins: the loss is ½·(1 + 1) give or take.
        let d_loss: f32 = config
            .discriminator(&discriminator, images, out.reconstruction)
            .into_scalar();
        assert!((d_loss - 1.0).abs() < 0.5, "{d_loss}");
    }

    #[test]
    fn reconstruction_losses_on_a_known_offset() {
        type B = token_shuffle_test_support::TestBackend;
        let device = Default::default();
        let images = Tensor::<B, 4>::zeros([1, 3, 2, 2], &device);
        let shifted = Tensor::<B, 4>::from_data(TensorData::new(vec![0.5f32; 12], [1, 3, 2, 2]), &device);
        let l1: f32 = Reconstruction::L1
            .loss(images.clone(), shifted.clone().neg())
            .into_scalar();
        let l2: f32 = Reconstruction::L2.loss(images, shifted).into_scalar();
        assert!((l1 - 0.5).abs() < 1e-7 && (l2 - 0.25).abs() < 1e-7, "{l1} {l2}");
    }
}
