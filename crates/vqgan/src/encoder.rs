use crate::conv::conv2d;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};

use crate::GroupNorm;
use crate::resnet::{conv3x3, group_norm, residual_stack};
use crate::{
    AttnBlock, AttnBlockConfig, Downsample, MidBlock, ResampleConfig, ResnetBlock, ResnetBlockConfig, VqModelConfig,
};

/// One resolution level of the [`Encoder`]: residual blocks (each followed by attention at the lowest level), then a
/// [`Downsample`] on every level but the last.
#[derive(Module, Debug)]
pub struct EncoderLevel<B: Backend> {
    res: Vec<ResnetBlock<B>>,
    attn: Vec<AttnBlock<B>>,
    downsample: Option<Downsample<B>>,
}

/// The convolutional encoder: image → feature map `f` times smaller, with `z_channels` channels.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    conv_blocks: Vec<EncoderLevel<B>>,
    mid: MidBlock<B>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// Builds the encoder described by `config` (LlamaGen's constructor, level by level).
    pub(crate) fn new(config: &VqModelConfig, device: &B::Device) -> Self {
        let groups = config.norm_groups;
        let levels = config.channel_multipliers.len();
        let mut block_in = config.channels;
        let conv_blocks = config
            .channel_multipliers
            .iter()
            .enumerate()
            .map(|(level, multiplier)| {
                let block_out = config.channels * multiplier;
                let lowest = level + 1 == levels;
                let mut res = Vec::new();
                let mut attn = Vec::new();
                for _ in 0..config.res_blocks {
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
                let downsample = (!lowest).then(|| ResampleConfig::new(block_in).init_down(device));
                EncoderLevel { res, attn, downsample }
            })
            .collect();
        Self {
            conv_in: conv3x3(3, config.channels, device),
            conv_blocks,
            mid: MidBlock::new(block_in, groups, device),
            norm_out: group_norm(groups, block_in, device),
            conv_out: conv3x3(block_in, config.z_channels, device),
        }
    }

    /// # Shapes
    /// - input `[batch, 3, height, width]`
    /// - output `[batch, z_channels, height / f, width / f]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = conv2d(&self.conv_in, images);
        for level in &self.conv_blocks {
            h = residual_stack(&level.res, &level.attn, h);
            if let Some(downsample) = &level.downsample {
                h = downsample.forward(h);
            }
        }
        let h = self.mid.forward(h);
        conv2d(&self.conv_out, silu(self.norm_out.forward(h)))
    }
}
