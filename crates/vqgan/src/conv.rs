//! Convolutions in bounded memory: a large input is convolved a band of output rows at a time.
//!
//! Why: burn-flex's convolution copies its whole input to NHWC before its tiled im2col, so a 3×3 convolution of
//! a 2048×2048×128 activation (2 GiB) holds the input, that copy and the output at once — with the residual
//! block's shortcut, 8 GiB. A band of rows needs only its rows plus the kernel's halo; the input (which the
//! caller hands over) is let go once every band is done, before the bands are joined, so the input, the bands and
//! the output are never all held at once. Convolution has no cross-row state, so the result is the same as the whole
//! convolution's (the same sums in the same order per output; tested). Small inputs, and convolutions that are
//! not plain stride-1 ones with explicit padding, go to `Conv2d::forward` unchanged.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::module::conv2d as conv2d_op;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, backend::Backend};

/// Inputs above this many elements (16 MiB of f32) are convolved in bands of about this many input elements (a
/// band's copies — the slice, its padding, Flex's NHWC copy — stay that small).
pub const BAND_ELEMENTS: usize = 4 << 20;

/// `conv.forward(x)`, in bands of output rows when `x` is larger than [`BAND_ELEMENTS`]. Pass `x` by value and
/// keep no other handle to it, so that its memory can go before the output is assembled.
///
/// # Shapes
/// - input `[batch, channels_in, height, width]`
/// - output `[batch, channels_out, height_out, width_out]`, as `conv.forward`
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    conv2d_in_bands(conv, x, BAND_ELEMENTS)
}

fn conv2d_in_bands<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, band_elements: usize) -> Tensor<B, 4> {
    let PaddingConfig2d::Explicit(top, left, bottom, right) = conv.padding else {
        return conv.forward(x);
    };
    let [batch, channels, height, width] = x.dims();
    let [kh, _] = conv.kernel_size;
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    let row_elements = batch * channels * width;
    if !plain || x.shape().num_elements() <= band_elements || height + top + bottom < kh {
        return conv.forward(x);
    }
    let out_h = height + top + bottom - kh + 1;
    let rows_per_band = (band_elements / row_elements).max(1);
    let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let weight = conv.weight.val();
    let bias = conv.bias.as_ref().map(|b| b.val());
    let mut bands = Vec::new();
    let mut first = 0;
    while first < out_h {
        let rows = rows_per_band.min(out_h - first);
        // Output rows first..first + rows read padded rows first..first + rows + kh − 1, i.e. input rows from
        // first − top; the part outside the input is the zero padding.
        let (start, end) = (
            first as isize - top as isize,
            (first + rows + kh - 1) as isize - top as isize,
        );
        let (lo, hi) = (start.max(0) as usize, (end.min(height as isize)) as usize);
        let band = x.clone().slice([0..batch, 0..channels, lo..hi, 0..width]).pad(
            [
                ((lo as isize - start) as usize, (end - hi as isize) as usize),
                (left, right),
            ],
            0.0,
        );
        bands.push(conv2d_op(band, weight.clone(), bias.clone(), options.clone()));
        first += rows;
    }
    // The input goes before the bands are joined: the input, the bands and the joined output are never all held.
    drop(x);
    Tensor::cat(bands, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};
    use token_shuffle_test_support::TestBackend;

    /// In bands of 1, 2 and 5 rows (band_elements over one row's), the same numbers as the whole convolution, for
    /// the 3×3 "same" convolution, a 1×1 and an asymmetric padding; convolutions it does not band pass through.
    #[test]
    fn bands_give_the_whole_convolutions_result() {
        let device = Default::default();
        let pad = |t, l, b, r| PaddingConfig2d::Explicit(t, l, b, r);
        let x = Tensor::<TestBackend, 4>::random([2, 3, 11, 6], Distribution::Normal(0.0, 1.0), &device);
        let row = 2 * 3 * 6;
        for config in [
            Conv2dConfig::new([3, 4], [3, 3]).with_padding(pad(1, 1, 1, 1)),
            Conv2dConfig::new([3, 4], [1, 1]),
            Conv2dConfig::new([3, 2], [3, 3])
                .with_padding(pad(0, 2, 1, 0))
                .with_bias(false),
            Conv2dConfig::new([3, 2], [3, 3])
                .with_stride([2, 2])
                .with_padding(pad(0, 0, 1, 1)),
        ] {
            let conv = config.init::<TestBackend>(&device);
            let expected = conv.forward(x.clone()).into_data();
            for rows in [1, 2, 5] {
                conv2d_in_bands(&conv, x.clone(), rows * row)
                    .into_data()
                    .assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-5));
            }
        }
    }
}
