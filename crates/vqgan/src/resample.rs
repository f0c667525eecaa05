use crate::conv::conv2d;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::resnet::conv3x3;

/// Configuration of a [`Downsample`] or an [`Upsample`].
#[derive(Config, Debug)]
pub struct ResampleConfig {
    /// Channels C (unchanged).
    pub channels: usize,
}

/// Halves the spatial size: a 3×3 convolution of stride 2 after padding one row and column at the bottom and right
/// (taming's asymmetric padding, kept so that LlamaGen's weights compute the same function).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    conv: Conv2d<B>,
}

/// Doubles the spatial size: nearest-neighbour upsampling, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    conv: Conv2d<B>,
}

impl ResampleConfig {
    /// Builds a [`Downsample`] on `device`.
    pub fn init_down<B: Backend>(&self, device: &B::Device) -> Downsample<B> {
        let conv = Conv2dConfig::new([self.channels, self.channels], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(device);
        Downsample { conv }
    }

    /// Builds an [`Upsample`] on `device`.
    pub fn init_up<B: Backend>(&self, device: &B::Device) -> Upsample<B> {
        Upsample {
            conv: conv3x3(self.channels, self.channels, device),
        }
    }
}

impl<B: Backend> Downsample<B> {
    /// # Shapes
    /// - input `[batch, channels, height, width]` (even height and width)
    /// - output `[batch, channels, height / 2, width / 2]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv, x)
    }
}

impl<B: Backend> Upsample<B> {
    /// # Shapes
    /// - input `[batch, channels, height, width]`
    /// - output `[batch, channels, 2·height, 2·width]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(&self.conv, upsample_nearest_2x(x))
    }
}

/// Nearest-neighbour ×2 upsampling as a broadcast: every pixel becomes a 2×2 block.
pub(crate) fn upsample_nearest_2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    x.reshape([batch, channels, height, 1, width, 1])
        .expand([batch, channels, height, 2, width, 2])
        .reshape([batch, channels, 2 * height, 2 * width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn nearest_upsampling_repeats_each_pixel_in_a_2x2_block() {
        let device = Default::default();
        let x =
            Tensor::<TestBackend, 4>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]), &device);
        let expected = [
            [1.0f32, 1.0, 2.0, 2.0],
            [1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 4.0, 4.0],
            [3.0, 3.0, 4.0, 4.0],
        ];
        upsample_nearest_2x(x)
            .into_data()
            .assert_eq(&TensorData::from([[expected]]), false);
    }

    #[test]
    fn resampling_halves_and_doubles_the_size() {
        let device = Default::default();
        let config = ResampleConfig::new(4);
        let x = Tensor::<TestBackend, 4>::ones([1, 4, 8, 6], &device);
        let down = config.init_down::<TestBackend>(&device).forward(x);
        assert_eq!(down.dims(), [1, 4, 4, 3]);
        assert_eq!(
            config.init_up::<TestBackend>(&device).forward(down).dims(),
            [1, 4, 8, 6]
        );
    }
}
