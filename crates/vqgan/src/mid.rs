use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::{AttnBlock, AttnBlockConfig, ResnetBlock, ResnetBlockConfig};

/// The block at the lowest resolution of the encoder and the decoder: residual block, self-attention, residual
/// block. (LlamaGen keeps these in a list `mid.0`, `mid.1`, `mid.2`; see [`crate::llamagen`] for the key mapping.)
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    block_1: ResnetBlock<B>,
    attn_1: AttnBlock<B>,
    block_2: ResnetBlock<B>,
}

impl<B: Backend> MidBlock<B> {
    pub(crate) fn new(channels: usize, norm_groups: usize, device: &B::Device) -> Self {
        let block = || {
            ResnetBlockConfig::new(channels, channels)
                .with_norm_groups(norm_groups)
                .init(device)
        };
        Self {
            block_1: block(),
            attn_1: AttnBlockConfig::new(channels)
                .with_norm_groups(norm_groups)
                .init(device),
            block_2: block(),
        }
    }

    /// # Shapes
    /// - input and output `[batch, channels, height, width]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.block_2.forward(self.attn_1.forward(self.block_1.forward(x)))
    }
}
