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

/// How a VQ model uses its codebook over a set of images: counts of each code.
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookUsage {
    counts: Vec<u64>,
}

impl CodebookUsage {
    /// No codes counted yet, for a codebook of `codebook_size` entries.
    pub fn new(codebook_size: usize) -> Self {
        Self { counts: vec![0; codebook_size] }
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
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    #[test]
    fn psnr_of_a_known_offset_and_of_identical_images() {
        let device = Default::default();
        let images = Tensor::<Flex, 4>::zeros([2, 3, 4, 4], &device);
        // An offset of 0.2 in [−1, 1] is 0.1 on the 0–1 scale: MSE 0.01, PSNR 20 dB.
        let offset = images.clone() + 0.2;
        let values = psnr(images.clone(), offset);
        assert!(values.iter().all(|v| (v - 20.0).abs() < 1e-4), "{values:?}");
        assert!(psnr(images.clone(), images).iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn psnr_clamps_the_reconstruction() {
        let device = Default::default();
        let white = Tensor::<Flex, 4>::ones([1, 3, 2, 2], &device);
        assert!(psnr(white.clone(), white * 3.0)[0].is_infinite());
    }

    #[test]
    fn usage_and_perplexity_of_known_counts() {
        let device = Default::default();
        let mut usage = CodebookUsage::new(8);
        // Codes 0 and 1, twice each: 2 of 8 used, two equally likely codes → perplexity 2.
        usage.add(Tensor::<Flex, 2, Int>::from_data(TensorData::from([[0i64, 1], [1, 0]]), &device));
        assert_eq!(usage.total(), 4);
        assert!((usage.usage() - 0.25).abs() < 1e-7);
        assert!((usage.perplexity() - 2.0).abs() < 1e-5);
    }
}
