//! The pure index shuffles: s×s windows of a token grid to channel-concatenated tokens, and back.

use burn::tensor::{BasicOps, Element, Int, Tensor, backend::Backend};

use crate::ShuffleError;

/// Checks that s×s windows tile an `height × width` token grid.
///
/// # Errors
/// [`ShuffleError::ZeroWindow`] for s = 0, [`ShuffleError::GridNotDivisible`] when s does not divide H and W.
pub fn check_grid(height: usize, width: usize, window: usize) -> Result<(), ShuffleError> {
    if window == 0 {
        return Err(ShuffleError::ZeroWindow);
    }
    if !height.is_multiple_of(window) || !width.is_multiple_of(window) {
        return Err(ShuffleError::GridNotDivisible { height, width, window });
    }
    Ok(())
}

/// The order in which a layout's C-wide rows are stored, as seen from the other layout.
enum Layout {
    /// Rows in grid order `(b, h, w)`: merging reads them window by window.
    Grid,
    /// Rows in merged order `(b, i, j, u, v)`: splitting reads them back in grid order.
    Windows,
}

/// The row permutation that takes `from`'s rows to the other layout: row r of the result is row `order[r]` of
/// the input, where rows are the C-channel vectors of `[B·H·W, C]`.
///
/// Both shuffles move whole rows, so they are one row gather (`select` on dim 0): every backend does that at
/// copy speed, while the equivalent 6-D permute + reshape falls into a per-element strided copy on the CPU
/// backend (see docs/BENCHMARKS.md). The permutation itself is built on the device from `arange`, so nothing
/// is uploaded; it is C times smaller than the tensor it reorders.
fn row_order<B: Backend>(grid: [usize; 3], s: usize, from: Layout, device: &B::Device) -> Tensor<B, 1, Int> {
    let [batch, height, width] = grid;
    let rows = Tensor::<B, 1, Int>::arange(0..(batch * height * width) as i64, device);
    let (rows_by_grid, rows_by_window) = (
        [batch, height / s, s, width / s, s],
        [batch, height / s, width / s, s, s],
    );
    // [.., i, u, j, v] <-> [.., i, j, u, v] swaps axes 2 and 3 either way.
    let shape = match from {
        Layout::Grid => rows_by_grid,
        Layout::Windows => rows_by_window,
    };
    rows.reshape(shape)
        .permute([0, 1, 3, 2, 4])
        .reshape([batch * height * width])
}

/// Merges each s×s window of a token grid into one token by concatenating its s² tokens along channels.
///
/// Windows are taken in raster order (left to right, then top to bottom), and the s² tokens inside a window
/// in row-major order, so merged token `n = i·(W/s) + j` holds, for `0 ≤ u, v < s` and `0 ≤ c < C`:
///
/// `out[b, n, (u·s + v)·C + c] = x[b, i·s + u, j·s + v, c]`
///
/// With `s = 1` this is a reshape to `[B, H·W, C]`: the no-shuffle baseline.
/// Works on any tensor kind (float embeddings, integer code grids with a trailing unit channel).
///
/// # Shapes
/// - `x`: `[B, H, W, C]`
/// - output: `[B, (H/s)·(W/s), s²·C]`
///
/// # Errors
/// [`ShuffleError::ZeroWindow`] for `s = 0`, [`ShuffleError::GridNotDivisible`] when `s` does not divide H and W.
pub fn window_merge<B, K>(x: Tensor<B, 4, K>, window: usize) -> Result<Tensor<B, 3, K>, ShuffleError>
where
    B: Backend,
    K: BasicOps<B>,
    K::Elem: Element,
{
    let [batch, height, width, channels] = x.dims();
    check_grid(height, width, window)?;
    let s = window;
    let windows = (height / s) * (width / s);
    if s == 1 {
        return Ok(x.reshape([batch, windows, channels]));
    }
    let order = row_order::<B>([batch, height, width], s, Layout::Grid, &x.device());
    let merged =
        x.reshape([batch * height * width, channels])
            .select(0, order)
            .reshape([batch, windows, s * s * channels]);
    Ok(merged)
}

/// The exact inverse of [`window_merge`]: splits each merged token back into its s×s window of the grid.
///
/// `window_split(window_merge(x, s)?, [H, W], s)? == x` element for element.
///
/// # Shapes
/// - `x`: `[B, (H/s)·(W/s), s²·C]`
/// - `grid`: `[H, W]`, the grid size in tokens before merging
/// - output: `[B, H, W, C]`
///
/// # Errors
/// As [`window_merge`] for the grid, plus [`ShuffleError::TokenCountMismatch`] when the sequence length is not
/// (H/s)·(W/s) and [`ShuffleError::WidthNotDivisible`] when the token width is not a multiple of s².
pub fn window_split<B, K>(x: Tensor<B, 3, K>, grid: [usize; 2], window: usize) -> Result<Tensor<B, 4, K>, ShuffleError>
where
    B: Backend,
    K: BasicOps<B>,
    K::Elem: Element,
{
    let [batch, tokens, merged_width] = x.dims();
    let [height, width] = grid;
    check_grid(height, width, window)?;
    let s = window;
    let expected = (height / s) * (width / s);
    if tokens != expected {
        return Err(ShuffleError::TokenCountMismatch {
            tokens,
            height,
            width,
            window,
            expected,
        });
    }
    if merged_width % (s * s) != 0 {
        return Err(ShuffleError::WidthNotDivisible {
            d_model: merged_width,
            window,
        });
    }
    let channels = merged_width / (s * s);
    if s == 1 {
        return Ok(x.reshape([batch, height, width, channels]));
    }
    let order = row_order::<B>([batch, height, width], s, Layout::Windows, &x.device());
    let grid = x
        .reshape([batch * height * width, channels])
        .select(0, order)
        .reshape([batch, height, width, channels]);
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use token_shuffle_test_support::TestBackend as B;

    fn device() -> burn::tensor::Device<B> {
        Default::default()
    }

    /// x[0, h, w, c] = 10·(h·W + w) + c on a 2×4 grid with 2 channels, merged with s = 2 by hand.
    #[test]
    fn merge_order_matches_hand_computed_example() {
        let (h, w, c) = (2, 4, 2);
        let values: Vec<f32> = (0..h * w)
            .flat_map(|p| (0..c).map(move |ch| (10 * p + ch) as f32))
            .collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(values, [1, h, w, c]), &device());
        let merged = window_merge(x, 2).unwrap();
        assert_eq!(merged.dims(), [1, 2, 8]);
        // Window 0 holds grid cells (0,0) (0,1) (1,0) (1,1) = positions 0, 1, 4, 5; window 1 holds 2, 3, 6, 7.
        let expected = TensorData::new(
            vec![
                0.0f32, 1., 10., 11., 40., 41., 50., 51., //
                20., 21., 30., 31., 60., 61., 70., 71.,
            ],
            [1, 2, 8],
        );
        merged.into_data().assert_eq(&expected, true);
    }

    #[test]
    fn windows_are_in_raster_order_on_a_tall_grid() {
        // 4×2 grid, one channel, value = position; s = 2 gives windows top then bottom.
        let x = Tensor::<B, 1, Int>::arange(0..8, &device()).reshape([1, 4, 2, 1]);
        let merged = window_merge(x, 2).unwrap();
        merged
            .into_data()
            .assert_eq(&TensorData::new(vec![0i32, 1, 2, 3, 4, 5, 6, 7], [1, 2, 4]), false);
    }

    #[test]
    fn split_inverts_merge_exactly() {
        for s in [1, 2, 4] {
            for (h, w) in [(4, 8), (8, 4), (12, 16), (8, 8)] {
                let x = Tensor::<B, 4>::random([2, h, w, 3], Distribution::Normal(0.0, 1.0), &device());
                let merged = window_merge(x.clone(), s).unwrap();
                assert_eq!(merged.dims(), [2, (h / s) * (w / s), s * s * 3]);
                let back = window_split(merged, [h, w], s).unwrap();
                back.into_data().assert_eq(&x.into_data(), true);
            }
        }
    }

    #[test]
    fn split_inverts_merge_on_integer_code_grids() {
        let codes = Tensor::<B, 4, Int>::random([3, 8, 12, 1], Distribution::Uniform(0.0, 8192.0), &device());
        let back = window_split(window_merge(codes.clone(), 4).unwrap(), [8, 12], 4).unwrap();
        back.into_data().assert_eq(&codes.into_data(), true);
    }

    #[test]
    fn window_one_is_a_plain_reshape() {
        let x = Tensor::<B, 4>::random([2, 3, 5, 4], Distribution::Default, &device());
        let merged = window_merge(x.clone(), 1).unwrap();
        merged.into_data().assert_eq(&x.reshape([2, 15, 4]).into_data(), true);
    }

    #[test]
    fn grid_not_divisible_is_named() {
        let x = Tensor::<B, 4>::zeros([1, 6, 8, 2], &device());
        let err = window_merge(x.clone(), 4).unwrap_err();
        assert_eq!(
            err,
            ShuffleError::GridNotDivisible {
                height: 6,
                width: 8,
                window: 4
            }
        );
        assert!(err.to_string().contains("6×8"), "{err}");
        let err = window_merge(Tensor::<B, 4>::zeros([1, 8, 6, 2], &device()), 4).unwrap_err();
        assert_eq!(
            err,
            ShuffleError::GridNotDivisible {
                height: 8,
                width: 6,
                window: 4
            }
        );
        assert_eq!(window_merge(x, 0).unwrap_err(), ShuffleError::ZeroWindow);
    }

    #[test]
    fn split_rejects_a_sequence_that_does_not_fit_the_grid() {
        let merged = Tensor::<B, 3>::zeros([1, 6, 8], &device());
        let err = window_split(merged.clone(), [4, 4], 2).unwrap_err();
        assert_eq!(
            err,
            ShuffleError::TokenCountMismatch {
                tokens: 6,
                height: 4,
                width: 4,
                window: 2,
                expected: 4
            }
        );
        let err = window_split(Tensor::<B, 3>::zeros([1, 4, 6], &device()), [4, 4], 2).unwrap_err();
        assert_eq!(err, ShuffleError::WidthNotDivisible { d_model: 6, window: 2 });
    }
}
