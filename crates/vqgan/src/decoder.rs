use crate::conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};

use crate::GroupNorm;
use crate::resnet::{conv3x3, group_norm, residual_stack};
use crate::{
    AttnBlock, AttnBlockConfig, MidBlock, ResampleConfig, ResnetBlock, ResnetBlockConfig, Upsample, VqModelConfig,
};

/// One resolution level of the [`Decoder`], lowest resolution first: `res_blocks + 1` residual blocks (each followed
/// by attention at the lowest level), then an [`Upsample`] on every level but the last.
#[derive(Module, Debug)]
pub struct DecoderLevel<B: Backend> {
    res: Vec<ResnetBlock<B>>,
    attn: Vec<AttnBlock<B>>,
    upsample: Option<Upsample<B>>,
}

/// The decoder, mirroring the [`Encoder`](crate::Encoder): feature map → image `f` times larger.
///
/// It is split in two for the GAN's adaptive weight, which needs gradients at the last layer only:
/// [`trunk`](Self::trunk) computes the features and [`head`](Self::head) the image from them.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid: MidBlock<B>,
    conv_blocks: Vec<DecoderLevel<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    /// Builds the decoder described by `config` (LlamaGen's constructor: levels in reverse order).
    pub(crate) fn new(config: &VqModelConfig, device: &B::Device) -> Self {
        let groups = config.norm_groups;
        let levels = config.channel_multipliers.len();
        let mut block_in = config.channels * config.channel_multipliers[levels - 1];
        let conv_in = conv3x3(config.z_channels, block_in, device);
        let mid = MidBlock::new(block_in, groups, device);
        let conv_blocks = (0..levels)
            .rev()
            .map(|level| {
                let block_out = config.channels * config.channel_multipliers[level];
                let lowest = level + 1 == levels;
                let mut res = Vec::new();
                let mut attn = Vec::new();
                for _ in 0..=config.res_blocks {
                    res.push(
                        ResnetBlockConfig::new(block_in, block_out)
                            .with_norm_groups(groups)
                            .init(device),
                    );
                    block_in = block_out;
                    if lowest {
                        attn.push(AttnBlockConfig::new(block_in).with_norm_groups(groups).init(device));
                    }
                }
                let upsample = (level != 0).then(|| ResampleConfig::new(block_in).init_up(device));
                DecoderLevel { res, attn, upsample }
            })
            .collect();
        Self {
            conv_in,
            mid,
            conv_blocks,
            norm_out: group_norm(groups, block_in, device),
            conv_out: conv3x3(block_in, 3, device),
        }
    }

    /// The image from a quantized feature map.
    ///
    /// # Shapes
    /// - input `[batch, z_channels, height, width]`
    /// - output `[batch, 3, f·height, f·width]`
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        self.head(self.trunk(z))
    }

    /// Everything but the last normalisation and convolution.
    ///
    /// # Shapes
    /// - input `[batch, z_channels, height, width]`
    /// - output `[batch, channels, f·height, f·width]`
    pub fn trunk(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid.forward(conv2d(&self.conv_in, z));
        for level in &self.conv_blocks {
            h = residual_stack(&level.res, &level.attn, h);
            if let Some(upsample) = &level.upsample {
                h = upsample.forward(h);
            }
        }
        h
    }

    /// The weight of the last convolution (what taming's adaptive GAN weight differentiates against).
    pub fn last_layer_weight(&self) -> Tensor<B, 4> {
        self.conv_out.weight.val()
    }

    /// The last layer: GroupNorm, SiLU, 3×3 convolution to RGB.
    ///
    /// # Shapes
    /// - input `[batch, channels, height, width]`
    /// - output `[batch, 3, height, width]`
    pub fn head(&self, features: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv_out, silu(self.norm_out.forward(features)))
    }
}
