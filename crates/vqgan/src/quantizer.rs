use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, backend::Backend};

/// Configuration of a [`VectorQuantizer`].
#[derive(Config, Debug)]
pub struct VectorQuantizerConfig {
    /// Codebook entries K.
    pub codebook_size: usize,
    /// Dimension of a code vector.
    pub code_dim: usize,
    /// Weight β of the commitment loss. Default: 0.25.
    #[config(default = 0.25)]
    pub commitment_beta: f32,
    /// Weight of the entropy loss (0 switches it off). Default: 0.
    #[config(default = 0.0)]
    pub entropy_loss_weight: f32,
    /// Softmax temperature of the entropy loss. Default: 0.01 (LlamaGen).
    #[config(default = 0.01)]
    pub entropy_temperature: f32,
}

/// Nearest-code quantization over an l2-normalised codebook (LlamaGen's `VectorQuantizer` with `l2_norm`).
///
/// Inputs and codebook entries are normalised to unit length, so the nearest code is the one of highest cosine
/// similarity. Gradients pass the quantization unchanged (straight-through estimator).
#[derive(Module, Debug)]
pub struct VectorQuantizer<B: Backend> {
    embedding: Embedding<B>,
    #[module(skip)]
    commitment_beta: f32,
    #[module(skip)]
    entropy_loss_weight: f32,
    #[module(skip)]
    entropy_temperature: f32,
}

/// What [`VectorQuantizer::forward`] returns.
#[derive(Debug, Clone)]
pub struct Quantized<B: Backend> {
    /// The chosen codebook vectors, `[batch, code_dim, height, width]`, carrying the input's gradient
    /// (straight-through).
    pub vectors: Tensor<B, 4>,
    /// The chosen code ids, `[batch, height, width]`.
    pub codes: Tensor<B, 3, Int>,
    /// `mean((e - sg[z])²)`: moves the codebook towards the encoder outputs.
    pub codebook_loss: Tensor<B, 1>,
    /// `β · mean((sg[e] - z)²)`: keeps the encoder outputs near their codes.
    pub commitment_loss: Tensor<B, 1>,
    /// Weighted entropy loss (sharp per-sample code choice, spread-out codebook use); zero when switched off.
    pub entropy_loss: Tensor<B, 1>,
}

impl VectorQuantizerConfig {
    /// Builds the quantizer on `device` with a random codebook.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VectorQuantizer<B> {
        VectorQuantizer {
            embedding: EmbeddingConfig::new(self.codebook_size, self.code_dim).init(device),
            commitment_beta: self.commitment_beta,
            entropy_loss_weight: self.entropy_loss_weight,
            entropy_temperature: self.entropy_temperature,
        }
    }
}

/// Scales each row to unit l2 norm (as `F.normalize`: norms below 1e-12 are taken as 1e-12).
fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

impl<B: Backend> VectorQuantizer<B> {
    /// The normalised codebook, `[codebook_size, code_dim]`.
    pub fn codebook(&self) -> Tensor<B, 2> {
        l2_normalize(self.embedding.weight.val())
    }

    /// Number of codebook entries K.
    pub fn codebook_size(&self) -> usize {
        self.embedding.weight.dims()[0]
    }

    /// Quantizes a feature map.
    ///
    /// # Shapes
    /// - input `[batch, code_dim, height, width]`
    /// - `vectors` `[batch, code_dim, height, width]`, `codes` `[batch, height, width]`
    pub fn forward(&self, z: Tensor<B, 4>) -> Quantized<B> {
        let [batch, code_dim, height, width] = z.dims();
        let z = l2_normalize(z.permute([0, 2, 3, 1]).reshape([batch * height * width, code_dim]));
        let codebook = self.codebook();
        // Unit vectors: the nearest code (least squared distance) is the one of greatest cosine similarity.
        let similarity = z.clone().matmul(codebook.clone().transpose());
        let codes = similarity.clone().argmax(1).flatten::<1>(0, 1);
        let chosen = codebook.select(0, codes.clone());

        let codebook_loss = (chosen.clone() - z.clone().detach()).square().mean();
        let commitment_loss = (chosen.clone().detach() - z.clone()).square().mean() * self.commitment_beta;
        let entropy_loss = if self.entropy_loss_weight > 0.0 {
            // LlamaGen's affinity is −distance = 2·similarity − 2; the constant drops out of the softmax.
            entropy_loss(similarity * (2.0 / self.entropy_temperature)) * self.entropy_loss_weight
        } else {
            Tensor::zeros([1], &z.device())
        };

        let vectors = z.clone() + (chosen - z).detach();
        let vectors = vectors.reshape([batch, height, width, code_dim]).permute([0, 3, 1, 2]);
        Quantized {
            vectors,
            codes: codes.reshape([batch, height, width]),
            codebook_loss,
            commitment_loss,
            entropy_loss,
        }
    }

    /// The normalised codebook vectors of `codes`.
    ///
    /// # Shapes
    /// - input `[batch, height, width]`
    /// - output `[batch, code_dim, height, width]`
    pub fn lookup(&self, codes: Tensor<B, 3, Int>) -> Tensor<B, 4> {
        let [batch, height, width] = codes.dims();
        let codebook = self.codebook();
        let code_dim = codebook.dims()[1];
        codebook
            .select(0, codes.flatten::<1>(0, 2))
            .reshape([batch, height, width, code_dim])
            .permute([0, 3, 1, 2])
    }
}

/// Mean per-sample entropy minus the entropy of the mean code distribution (MaskGIT / LlamaGen): low when each
/// position picks one code confidently and the batch as a whole spreads over many codes.
fn entropy_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let probs = softmax(logits.clone(), 1);
    let sample_entropy = -(probs.clone() * log_softmax(logits, 1)).sum_dim(1).mean();
    let mean_probs = probs.mean_dim(0);
    let mean_entropy = -(mean_probs.clone() * (mean_probs + 1e-5).log()).sum();
    sample_entropy - mean_entropy
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};
    use token_shuffle_test_support::TestBackend;

    type B = TestBackend;

    /// A codebook of the four unit axes of the plane (given unnormalised, to check the normalisation too).
    fn axes_quantizer(device: &burn::tensor::Device<B>) -> VectorQuantizer<B> {
        let mut quantizer = VectorQuantizerConfig::new(4, 2).init::<B>(device);
        let axes = TensorData::new(vec![2.0f32, 0.0, 0.0, 3.0, -1.0, 0.0, 0.0, -0.5], [4, 2]);
        quantizer.embedding.weight = Param::from_tensor(Tensor::from_data(axes, device));
        quantizer
    }

    #[test]
    fn picks_the_code_of_highest_cosine_similarity() {
        let device = Default::default();
        let quantizer = axes_quantizer(&device);
        // Three vectors in a row, laid out as [batch 1, dim 2, height 1, width 3].
        // (0.9, 0.2) → +x (code 0); (0.1, -5) → −y (code 3); (-3, 2.9) → −x (code 2), although it is nearer +y in
        // raw distance (|(-3, 2.9) − (0, 3)| < |(-3, 2.9) − (−1, 0)|): only the direction counts.
        let z = TensorData::new(vec![0.9f32, 0.1, -3.0, 0.2, -5.0, 2.9], [1, 2, 1, 3]);
        let out = quantizer.forward(Tensor::from_data(z, &device));
        assert_eq!(out.codes.dims(), [1, 1, 3]);
        assert_eq!(
            out.codes.into_data().convert::<i64>().to_vec::<i64>().unwrap(),
            [0, 3, 2]
        );
        let expected = TensorData::new(vec![1.0f32, 0.0, -1.0, 0.0, -1.0, 0.0], [1, 2, 1, 3]);
        out.vectors
            .into_data()
            .assert_approx_eq::<f32>(&expected, Default::default());
    }

    #[test]
    fn lookup_returns_the_normalised_vectors_of_codes() {
        let device = Default::default();
        let quantizer = axes_quantizer(&device);
        let codes = Tensor::<B, 3, Int>::from_data(TensorData::from([[[1i32, 3]]]), &device);
        let expected = TensorData::new(vec![0.0f32, 0.0, 1.0, -1.0], [1, 2, 1, 2]);
        quantizer
            .lookup(codes)
            .into_data()
            .assert_approx_eq::<f32>(&expected, Default::default());
    }

    #[test]
    fn losses_are_the_squared_distance_to_the_chosen_code() {
        let device = Default::default();
        let quantizer = axes_quantizer(&device);
        // One vector at 45° between +x and +y, slightly nearer +x: unit (cos θ, sin θ) with θ = 40°.
        let theta = 40f32.to_radians();
        let z = TensorData::new(vec![theta.cos(), theta.sin()], [1, 2, 1, 1]);
        let out = quantizer.forward(Tensor::from_data(z, &device));
        let distance = (theta.cos() - 1.0).powi(2) + theta.sin().powi(2);
        let mean = distance / 2.0; // mean over the 2 components
        let codebook: f32 = out.codebook_loss.into_scalar();
        let commitment: f32 = out.commitment_loss.into_scalar();
        assert!((codebook - mean).abs() < 1e-6, "{codebook} vs {mean}");
        assert!(
            (commitment - 0.25 * mean).abs() < 1e-6,
            "{commitment} vs {}",
            0.25 * mean
        );
    }

    #[test]
    fn gradients_pass_straight_through_and_the_codebook_learns_from_its_loss() {
        type A = Autodiff<TestBackend>;
        let device = Default::default();
        let quantizer = VectorQuantizerConfig::new(16, 4).init::<A>(&device);
        let z = Tensor::<A, 4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let out = quantizer.forward(z.clone());
        // A loss on the quantized vectors alone: its gradient reaches z only through the straight-through path.
        let grads = (out.vectors.sum() + out.codebook_loss).backward();
        let z_grad = z.grad(&grads).expect("no gradient reached the encoder output");
        assert!(z_grad.abs().sum().into_scalar() > 0.0);
        let codebook_grad = quantizer
            .embedding
            .weight
            .grad(&grads)
            .expect("no gradient reached the codebook");
        assert!(codebook_grad.abs().sum().into_scalar() > 0.0);
    }

    #[test]
    fn entropy_loss_prefers_confident_and_diverse_choices() {
        let device = Default::default();
        let logits = |rows: [[f32; 2]; 2]| Tensor::<B, 2>::from_data(TensorData::from(rows), &device);
        // Each row sure of a different code: sample entropy 0, mean entropy ln 2.
        let diverse: f32 = entropy_loss(logits([[50.0, 0.0], [0.0, 50.0]])).into_scalar();
        // Both rows sure of the same code: both entropies 0.
        let collapsed: f32 = entropy_loss(logits([[50.0, 0.0], [50.0, 0.0]])).into_scalar();
        // Unsure rows: sample entropy ln 2, mean entropy ln 2.
        let unsure: f32 = entropy_loss(logits([[0.0, 0.0], [0.0, 0.0]])).into_scalar();
        assert!((diverse + 2f32.ln()).abs() < 1e-3, "{diverse}");
        assert!(collapsed.abs() < 1e-3, "{collapsed}");
        assert!(unsure.abs() < 1e-3, "{unsure}");
    }
}
