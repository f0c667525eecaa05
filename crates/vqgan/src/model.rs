use crate::conv::conv2d;
use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{Int, Tensor, backend::Backend};
use burn_store::{ApplyResult, ModuleSnapshot, SafetensorsStore};

use crate::resnet::conv1x1;
use crate::{Decoder, Encoder, Quantized, VectorQuantizer, VectorQuantizerConfig, VqError};

/// Configuration of a [`VqModel`]. Defaults are LlamaGen's VQ-16 (`configs/llamagen-vq16.json`). Presets:
/// [`micro`](Self::micro), [`tiny`](Self::tiny), [`vq8`](Self::vq8), [`llamagen_vq16`](Self::llamagen_vq16); the files
/// in `configs/` are tested equal to them.
#[derive(Config, Debug, PartialEq)]
pub struct VqModelConfig {
    /// Codebook entries K.
    pub codebook_size: usize,
    /// Dimension of a code vector. Default: 8 (LlamaGen: low-dimensional codes are used more evenly).
    #[config(default = 8)]
    pub code_dim: usize,
    /// Base channel width. Default: 128.
    #[config(default = 128)]
    pub channels: usize,
    /// Channel multiplier of each resolution level; the downsample factor is 2^(levels − 1). Default: [1, 1, 2, 2, 4]
    /// (factor 16).
    #[config(default = "vec![1, 1, 2, 2, 4]")]
    pub channel_multipliers: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more). Default: 2.
    #[config(default = 2)]
    pub res_blocks: usize,
    /// Channels of the encoder output before the projection to `code_dim`. Default: 256.
    #[config(default = 256)]
    pub z_channels: usize,
    /// GroupNorm groups; must divide every channel count. Default: 32.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// Weight β of the commitment loss. Default: 0.25.
    #[config(default = 0.25)]
    pub commitment_beta: f32,
    /// Weight of the codebook entropy loss (0 = off). Default: 0.
    #[config(default = 0.0)]
    pub entropy_loss_weight: f32,
    /// Softmax temperature of the entropy loss. Default: 0.01.
    #[config(default = 0.01)]
    pub entropy_temperature: f32,
}

impl VqModelConfig {
    /// `vq-micro`: 8 base channels × (1, 2, 2), f = 4, K = 32, code dim 4, one residual block: the tokenizer of
    /// `configs/run-tiny.json`, for tests and smoke runs.
    pub fn micro() -> Self {
        Self::new(32)
            .with_code_dim(4)
            .with_channels(8)
            .with_channel_multipliers(vec![1, 2, 2])
            .with_res_blocks(1)
            .with_z_channels(8)
            .with_norm_groups(4)
    }

    /// `vq-tiny` (`configs/vq-tiny.json`): 16 base channels × (1, 1, 2), f = 4 (64 px → 16×16 codes), K = 256, one
    /// residual block per level. CPU tests and the demo.
    pub fn tiny() -> Self {
        Self::new(256)
            .with_channels(16)
            .with_channel_multipliers(vec![1, 1, 2])
            .with_res_blocks(1)
            .with_z_channels(32)
            .with_norm_groups(8)
    }

    /// `vq8` (`configs/vq8.json`): f = 8, K = 8192, LlamaGen's widths (128 base channels × 1, 2, 2, 4): the paper's
    /// main setting, for GPU training.
    pub fn vq8() -> Self {
        Self::new(8192).with_channel_multipliers(vec![1, 2, 2, 4])
    }

    /// LlamaGen's VQ-16 (`configs/llamagen-vq16.json`): f = 16, K = 16384, code dim 8, multipliers 1, 1, 2, 2, 4 —
    /// the layout of its published checkpoints (`llamagen::load_llamagen`).
    pub fn llamagen_vq16() -> Self {
        Self::new(16384)
    }

    /// How many times smaller the code grid is than the image, per side.
    pub fn downsample_factor(&self) -> usize {
        1 << self.channel_multipliers.len().saturating_sub(1)
    }

    /// Checks that the model can be built: non-empty levels, positive sizes, GroupNorm groups dividing every width.
    pub fn check(&self) -> Result<(), VqError> {
        let fail = |message: String| Err(VqError::Config(message));
        if self.channel_multipliers.is_empty() {
            return fail("channel_multipliers is empty; give one multiplier per resolution level".into());
        }
        if self.codebook_size == 0 || self.code_dim == 0 || self.channels == 0 || self.z_channels == 0 {
            return fail("codebook_size, code_dim, channels and z_channels must all be positive".into());
        }
        let widths = self.channel_multipliers.iter().map(|m| m * self.channels);
        if let Some(width) = widths
            .chain([self.channels])
            .find(|w| self.norm_groups == 0 || w % self.norm_groups != 0)
        {
            return fail(format!(
                "norm_groups = {} does not divide the channel width {width}; pick a divisor of every \
                 channels × multiplier",
                self.norm_groups
            ));
        }
        Ok(())
    }

    /// Checks that a `height × width` image can be encoded.
    pub fn check_image_size(&self, height: usize, width: usize) -> Result<(), VqError> {
        check_image_size(height, width, self.downsample_factor())
    }

    /// Builds the model on `device` with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<VqModel<B>, VqError> {
        self.check()?;
        Ok(VqModel {
            encoder: Encoder::new(self, device),
            decoder: Decoder::new(self, device),
            quantize: VectorQuantizerConfig::new(self.codebook_size, self.code_dim)
                .with_commitment_beta(self.commitment_beta)
                .with_entropy_loss_weight(self.entropy_loss_weight)
                .with_entropy_temperature(self.entropy_temperature)
                .init(device),
            quant_conv: conv1x1(self.z_channels, self.code_dim, device),
            post_quant_conv: conv1x1(self.code_dim, self.z_channels, device),
            downsample_factor: self.downsample_factor(),
        })
    }
}

/// The VQGAN tokenizer: image → encoder → 1×1 projection to `code_dim` → nearest code → 1×1 projection back →
/// decoder → image. Images are `[batch, 3, H, W]` with values in [−1, 1].
///
/// Field names follow LlamaGen's `VQModel`, so that its checkpoints load (see [`crate::llamagen`]).
#[derive(Module, Debug)]
pub struct VqModel<B: Backend> {
    encoder: Encoder<B>,
    decoder: Decoder<B>,
    quantize: VectorQuantizer<B>,
    quant_conv: Conv2d<B>,
    post_quant_conv: Conv2d<B>,
    #[module(skip)]
    downsample_factor: usize,
}

/// What a training forward pass ([`VqModel::forward`]) returns.
#[derive(Debug, Clone)]
pub struct VqForward<B: Backend> {
    /// The decoded images, `[batch, 3, H, W]`.
    pub reconstruction: Tensor<B, 4>,
    /// The decoder's features before its last layer, `[batch, channels, H, W]` (for the GAN's adaptive weight).
    pub features: Tensor<B, 4>,
    /// The quantizer's output: codes, straight-through vectors and the codebook losses.
    pub quantized: Quantized<B>,
}

impl<B: Backend> VqModel<B> {
    /// How many times smaller the code grid is than the image, per side.
    pub fn downsample_factor(&self) -> usize {
        self.downsample_factor
    }

    /// Number of codebook entries K.
    pub fn codebook_size(&self) -> usize {
        self.quantize.codebook_size()
    }

    /// The normalised codebook, `[codebook_size, code_dim]`.
    pub fn codebook(&self) -> Tensor<B, 2> {
        self.quantize.codebook()
    }

    /// The decoder (its [`head`](Decoder::head) is the last layer the GAN's adaptive weight looks at).
    pub fn decoder(&self) -> &Decoder<B> {
        &self.decoder
    }

    fn quantize(&self, images: Tensor<B, 4>) -> Result<Quantized<B>, VqError> {
        let [_, _, height, width] = images.dims();
        check_image_size(height, width, self.downsample_factor)?;
        Ok(self
            .quantize
            .forward(conv2d(&self.quant_conv, self.encoder.forward(images))))
    }

    /// Encodes images to code ids.
    ///
    /// # Shapes
    /// - input `[batch, 3, H, W]`, values in [−1, 1]; H and W multiples of the downsample factor f
    /// - output `[batch, H / f, W / f]`
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 3, Int>, VqError> {
        Ok(self.quantize(images)?.codes)
    }

    /// Decodes code ids to images (values near [−1, 1]; clamp before display).
    ///
    /// # Shapes
    /// - input `[batch, h, w]`
    /// - output `[batch, 3, f·h, f·w]`
    pub fn decode(&self, codes: Tensor<B, 3, Int>) -> Tensor<B, 4> {
        self.decoder
            .forward(conv2d(&self.post_quant_conv, self.quantize.lookup(codes)))
    }

    /// Encode, quantize and decode, keeping what training needs.
    ///
    /// # Shapes
    /// - input `[batch, 3, H, W]`; see [`VqForward`] for the outputs
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<VqForward<B>, VqError> {
        let quantized = self.quantize(images)?;
        let features = self
            .decoder
            .trunk(conv2d(&self.post_quant_conv, quantized.vectors.clone()));
        let reconstruction = self.decoder.head(features.clone());
        Ok(VqForward {
            reconstruction,
            features,
            quantized,
        })
    }

    /// Writes the weights to a safetensors file (through a temporary file, so a crash never leaves half a file).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), VqError> {
        let temporary = path.with_extension("safetensors.partial");
        let error = |message: String| VqError::Weights {
            path: path.to_path_buf(),
            message,
        };
        let mut store = SafetensorsStore::from_file(&temporary).metadata("format", "token-shuffle-rs vqgan");
        self.save_into(&mut store).map_err(|e| error(e.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|e| error(e.to_string()))
    }

    /// Loads weights written by [`save_safetensors`](Self::save_safetensors) into a model built from the same
    /// config; a file from another config is refused, naming what does not fit.
    pub fn load_safetensors(mut self, path: &Path) -> Result<Self, VqError> {
        let mut store = SafetensorsStore::from_file(path).allow_partial(true).validate(false);
        let result = self.load_from(&mut store).map_err(|e| VqError::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        check_applied(&result, path, |key| key.to_string())?;
        Ok(self)
    }
}

fn check_image_size(height: usize, width: usize, factor: usize) -> Result<(), VqError> {
    if height == 0 || width == 0 {
        return Err(VqError::EmptyImage { height, width, factor });
    }
    if !height.is_multiple_of(factor) || !width.is_multiple_of(factor) {
        return Err(VqError::ImageSize { height, width, factor });
    }
    Ok(())
}

/// Turns burn-store's report into an error when a tensor was missing or did not fit; `name` translates our
/// parameter paths into the file's key names for the message.
pub(crate) fn check_applied(result: &ApplyResult, path: &Path, name: impl Fn(&str) -> String) -> Result<(), VqError> {
    if !result.errors.is_empty() {
        let messages: Vec<String> = result.errors.iter().take(3).map(ToString::to_string).collect();
        return Err(VqError::Weights {
            path: path.to_path_buf(),
            message: format!(
                "{} tensor(s) do not fit this model ({}); was it saved from a model with this config?",
                result.errors.len(),
                messages.join("; ")
            ),
        });
    }
    if !result.missing.is_empty() {
        let mut missing: Vec<String> = result.missing.iter().map(|(key, _)| name(key)).collect();
        missing.sort();
        return Err(VqError::MissingTensors {
            path: path.to_path_buf(),
            missing,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VqLossConfig;
    use burn::backend::Autodiff;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend;

    type B = TestBackend;

    /// A model small enough for unit tests, with `levels` resolution levels (f = 2^(levels − 1)).
    pub(crate) fn small_config(levels: usize) -> VqModelConfig {
        VqModelConfig::new(32)
            .with_code_dim(4)
            .with_channels(8)
            .with_channel_multipliers([1, 2].into_iter().cycle().take(levels).collect())
            .with_res_blocks(1)
            .with_z_channels(8)
            .with_norm_groups(4)
    }

    #[test]
    fn code_grids_are_the_image_size_over_8_and_16() {
        let device = Default::default();
        for (levels, factor) in [(4, 8), (5, 16)] {
            let model = small_config(levels).init::<B>(&device).unwrap();
            assert_eq!(model.downsample_factor(), factor);
            let images = Tensor::<B, 4>::random([2, 3, 64, 32], Distribution::Uniform(-1.0, 1.0), &device);
            let codes = model.encode(images).unwrap();
            assert_eq!(codes.dims(), [2, 64 / factor, 32 / factor]);
            assert_eq!(model.decode(codes).dims(), [2, 3, 64, 32]);
        }
    }

    #[test]
    fn image_sizes_off_the_grid_and_bad_configs_are_named() {
        let device = Default::default();
        let model = small_config(4).init::<B>(&device).unwrap();
        let message = model
            .encode(Tensor::zeros([1, 3, 60, 64], &device))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("60×64") && message.contains("factor 8") && message.contains("64×64"),
            "{message}"
        );
        let message = small_config(3)
            .with_norm_groups(3)
            .init::<B>(&device)
            .unwrap_err()
            .to_string();
        assert!(message.contains("norm_groups = 3"), "{message}");
    }

    #[test]
    fn a_few_steps_lower_the_loss_on_a_fixed_batch() {
        type A = Autodiff<TestBackend>;
        let device = Default::default();
        let mut model = small_config(3).init::<A>(&device).unwrap();
        let loss = VqLossConfig::new();
        let images = Tensor::<A, 4>::random([4, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
        let mut losses = Vec::new();
        for step in 0..12 {
            let out = model.forward(images.clone()).unwrap();
            let total = loss.generator(&model, None, images.clone(), &out, step).total;
            losses.push(total.clone().into_scalar());
            let grads = GradientsParams::from_grads(total.backward(), &model);
            model = optimizer.step(2e-3, model, grads);
        }
        assert!(losses[11] < 0.8 * losses[0], "{losses:?}");
    }

    #[test]
    fn every_parameter_gets_a_gradient_through_the_straight_through_estimator() {
        type A = Autodiff<TestBackend>;
        let device = Default::default();
        let model = small_config(2).init::<A>(&device).unwrap();
        let images = Tensor::<A, 4>::random([2, 3, 8, 8], Distribution::Uniform(-1.0, 1.0), &device);
        let out = model.forward(images.clone()).unwrap();
        let total = VqLossConfig::new().generator(&model, None, images, &out, 0).total;
        token_shuffle_test_support::assert_every_parameter_has_gradient(&model, total);
    }

    #[test]
    fn save_then_load_gives_identical_codes_and_another_config_is_refused() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vq.safetensors");
        let model = small_config(3).init::<B>(&device).unwrap();
        model.save_safetensors(&path).unwrap();
        let loaded = small_config(3)
            .init::<B>(&device)
            .unwrap()
            .load_safetensors(&path)
            .unwrap();
        let images = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
        let codes = model.encode(images.clone()).unwrap().into_data();
        assert_eq!(codes, loaded.encode(images).unwrap().into_data());

        let wider = small_config(3).with_code_dim(8).init::<B>(&device).unwrap();
        let message = wider.load_safetensors(&path).unwrap_err().to_string();
        assert!(
            message.contains("do not fit") && message.contains("quant_conv"),
            "{message}"
        );
        let deeper = small_config(3).with_res_blocks(2).init::<B>(&device).unwrap();
        let message = deeper.load_safetensors(&path).unwrap_err().to_string();
        assert!(
            message.contains("has no tensor decoder.conv_blocks.0.attn.2.k.bias") && message.contains("68 missing"),
            "{message}"
        );
    }

    #[test]
    fn preset_files_equal_the_rust_presets() {
        let load = |json: &str| serde_json::from_str::<VqModelConfig>(json).unwrap();
        assert_eq!(
            load(include_str!("../../../configs/vq-tiny.json")),
            VqModelConfig::tiny()
        );
        assert_eq!(load(include_str!("../../../configs/vq8.json")), VqModelConfig::vq8());
        assert_eq!(
            load(include_str!("../../../configs/llamagen-vq16.json")),
            VqModelConfig::llamagen_vq16()
        );
        for preset in [VqModelConfig::micro(), VqModelConfig::tiny(), VqModelConfig::vq8()] {
            preset.check().unwrap();
        }
        assert_eq!(VqModelConfig::tiny().downsample_factor(), 4);
        assert_eq!(VqModelConfig::vq8().downsample_factor(), 8);
        assert_eq!(VqModelConfig::llamagen_vq16().downsample_factor(), 16);
    }
}
