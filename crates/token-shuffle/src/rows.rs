use burn::tensor::{Tensor, backend::Backend};

/// Applies `layer` (anything that maps the last axis: a linear layer, an MLP block) to `x` viewed as rows
/// `[N, d]`, and gives the result `x`'s leading shape back.
///
/// Layers over the last axis should see 2-D rows in training: burn 0.21's `linear` backward computes the weight
/// gradient of an N-D input as a batched product, one `[d_in, d_out]` matrix per leading index, and only then sums
/// them. On the LM's image head (input `[B, N, s², d]`, `K` outputs) that is `B·N` copies of a `d × K` matrix:
/// 6.4 GB for lm-small at batch 1, s = 2 (docs/BENCHMARKS.md). On rows it is one matrix product.
///
/// # Shapes
/// - `x`: `[..., d]`
/// - `layer`: `[N, d] → [N, d']`, with `N` the product of `x`'s leading sizes
/// - output: `[..., d']`
pub fn on_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    layer: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let out = layer(x.reshape([rows, width]));
    dims[D - 1] = out.dims()[1];
    out.reshape(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;
    use token_shuffle_test_support::TestBackend as B;

    #[test]
    fn rows_give_the_same_values_as_the_layer_on_the_whole_tensor() {
        let device = Default::default();
        let linear = LinearConfig::new(6, 5).init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let rows = on_rows(x.clone(), |x| linear.forward(x));
        assert_eq!(rows.dims(), [2, 3, 4, 5]);
        assert!(rows.all_close(linear.forward(x), None, Some(1e-6)));
    }
}
