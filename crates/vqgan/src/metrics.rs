use burn::tensor::{Int, Tensor, backend::Backend};

/// Peak signal-to-noise ratio of each image, in dB, for images with values in [−1, 1].
///
/// The reconstruction is clamped to [−1, 1] first (as it would be when saved), and both are mapped to [0, 1], so
/// that `PSNR = −10·log10(MSE)` on the usual 0–1 scale. Identical images give `f32::INFINITY`.
///
/// # Shapes
/// - inputs `[batch, channels, height, width]`; output one value per image
pub fn psnr<B: Backend>(images: Tensor<B, 4>, reconstruction: Tensor<B, 4>) -> Vec<f32> {
    let batch = images.dims()[0];
    let difference = (reconstruction.clamp(-1.0, 1.0) - images) * 0.5;
    let mse = difference.square().reshape([batch as i32, -1]).mean_dim(1);
    let mse: Vec<f32> = mse.into_data().convert::<f32>().to_vec().expect("f32 data");
    mse.into_iter().map(|m| -10.0 * m.log10()).collect()
}

/// Structural similarity (SSIM, Wang et al. 2004) of each image, for images with values in [−1, 1].
///
/// As the reference implementation: values mapped to [0, 1] (the reconstruction clamped first), an 11×11 Gaussian
/// window with σ = 1.5, `C1 = (0.01)²`, `C2 = (0.03)²`, the SSIM map over the positions where the window fits
/// ("valid"), averaged over positions and channels. Images smaller than 11 px on a side use a window of their
/// size. Identical images give exactly 1.
///
/// # Shapes
/// - inputs `[batch, channels, height, width]`; output one value per image
pub fn ssim<B: Backend>(images: Tensor<B, 4>, reconstruction: Tensor<B, 4>) -> Vec<f32> {
    let [batch, channels, height, width] = images.dims();
    let read = |t: Tensor<B, 4>| -> Vec<f32> {
        ((t + 1.0) * 0.5)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 data")
    };
    let (x, y) = (read(images), read(reconstruction.clamp(-1.0, 1.0)));
    let plane = height * width;
    (0..batch)
        .map(|b| {
            let planes = (0..channels).map(|c| {
                let at = (b * channels + c) * plane;
                ssim_plane(&x[at..at + plane], &y[at..at + plane], width, height)
            });
            (planes.sum::<f64>() / channels as f64) as f32
        })
        .collect()
}

/// Mean SSIM of one channel plane (row-major, values in [0, 1]).
fn ssim_plane(x: &[f32], y: &[f32], width: usize, height: usize) -> f64 {
    const C1: f64 = 0.01 * 0.01;
    const C2: f64 = 0.03 * 0.03;
    let size = 11.min(width).min(height);
    let weights: Vec<f64> = {
        let centre = (size - 1) as f64 / 2.0;
        let raw: Vec<f64> = (0..size)
            .map(|i| (-((i as f64 - centre).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let total: f64 = raw.iter().sum();
        raw.into_iter().map(|w| w / total).collect()
    };
    // Separable "valid" filtering of a plane: rows, then columns.
    let filter = |values: &dyn Fn(usize) -> f64| -> Vec<f64> {
        let (out_w, out_h) = (width - size + 1, height - size + 1);
        let rows: Vec<f64> = (0..height)
            .flat_map(|r| (0..out_w).map(move |c| (r, c)))
            .map(|(r, c)| {
                weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * values(r * width + c + k))
                    .sum()
            })
            .collect();
        (0..out_h)
            .flat_map(|r| (0..out_w).map(move |c| (r, c)))
            .map(|(r, c)| {
                weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * rows[(r + k) * out_w + c])
                    .sum()
            })
            .collect()
    };
    let (x, y) = (|i: usize| x[i] as f64, |i: usize| y[i] as f64);
    let mean_x = filter(&x);
    let mean_y = filter(&y);
    let xx = filter(&|i| x(i) * x(i));
    let yy = filter(&|i| y(i) * y(i));
    let xy = filter(&|i| x(i) * y(i));
    let map = (0..mean_x.len()).map(|i| {
        let (mx, my) = (mean_x[i], mean_y[i]);
        let (vx, vy, cov) = (xx[i] - mx * mx, yy[i] - my * my, xy[i] - mx * my);
        ((2.0 * mx * my + C1) * (2.0 * cov + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    });
    map.sum::<f64>() / mean_x.len() as f64
}

/// How a VQ model uses its codebook over a set of images: counts of each code.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookUsage {
    counts: Vec<u64>,
}

impl CodebookUsage {
    /// No codes counted yet, for a codebook of `codebook_size` entries.
    pub fn new(codebook_size: usize) -> Self {
        Self {
            counts: vec![0; codebook_size],
        }
    }

    /// Counts the codes of a batch.
    ///
    /// # Panics
    /// If a code is outside the codebook.
    pub fn add<B: Backend, const D: usize>(&mut self, codes: Tensor<B, D, Int>) {
        let codes: Vec<i64> = codes.into_data().convert::<i64>().to_vec().expect("i64 data");
        for code in codes {
            let code = usize::try_from(code).ok().filter(|&c| c < self.counts.len());
            self.counts[code.expect("a code outside the codebook")] += 1;
        }
    }

    /// Fraction of the codebook used at least once, in [0, 1].
    pub fn usage(&self) -> f32 {
        self.counts.iter().filter(|&&c| c > 0).count() as f32 / self.counts.len() as f32
    }

    /// `exp(entropy)` of the code distribution: the number of equally used codes that would give the same entropy
    /// (K when every code is equally frequent, 1 when one code is used).
    pub fn perplexity(&self) -> f32 {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let entropy: f64 = self
            .counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                -p * p.ln()
            })
            .sum();
        entropy.exp() as f32
    }

    /// Number of codes counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use token_shuffle_test_support::TestBackend;

    #[test]
    fn psnr_of_a_known_offset_and_of_identical_images() {
        let device = Default::default();
        let images = Tensor::<TestBackend, 4>::zeros([2, 3, 4, 4], &device);
        // An offset of 0.2 in [−1, 1] is 0.1 on the 0–1 scale: MSE 0.01, PSNR 20 dB.
        let offset = images.clone() + 0.2;
        let values = psnr(images.clone(), offset);
        assert!(values.iter().all(|v| (v - 20.0).abs() < 1e-4), "{values:?}");
        assert!(psnr(images.clone(), images).iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn psnr_clamps_the_reconstruction() {
        let device = Default::default();
        let white = Tensor::<TestBackend, 4>::ones([1, 3, 2, 2], &device);
        assert!(psnr(white.clone(), white * 3.0)[0].is_infinite());
    }

    #[test]
    fn ssim_of_identical_images_of_a_constant_offset_and_of_inverted_structure() {
        let device = Default::default();
        let images =
            Tensor::<TestBackend, 4>::random([2, 3, 16, 16], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
        assert!(
            ssim(images.clone(), images.clone())
                .iter()
                .all(|&v| (v - 1.0).abs() < 1e-6)
        );
        // Constant images a and b (0–1 scale): no variance, so SSIM = (2ab + C1) / (a² + b² + C1).
        let (a, b) = (0.5f64, 0.6f64);
        let constant = |v: f64| Tensor::<TestBackend, 4>::full([1, 3, 12, 12], v * 2.0 - 1.0, &device);
        let expected = (2.0 * a * b + 1e-4) / (a * a + b * b + 1e-4);
        let measured = ssim(constant(a), constant(b))[0] as f64;
        assert!((measured - expected).abs() < 1e-6, "{measured} vs {expected}");
        // The negative of a textured image: structure anti-correlated, so SSIM is strongly negative.
        let inverted = ssim(images.clone(), images.neg());
        assert!(inverted.iter().all(|&v| v < -0.5), "{inverted:?}");
    }

    #[test]
    fn usage_and_perplexity_of_known_counts() {
        let device = Default::default();
        let mut usage = CodebookUsage::new(8);
        // Codes 0 and 1, twice each: 2 of 8 used, two equally likely codes → perplexity 2.
        usage.add(Tensor::<TestBackend, 2, Int>::from_data(
            TensorData::from([[0i64, 1], [1, 0]]),
            &device,
        ));
        assert_eq!(usage.total(), 4);
        assert!((usage.usage() - 0.25).abs() < 1e-7);
        assert!((usage.perplexity() - 2.0).abs() < 1e-5);
    }
}
