//! The LM's micro-batches on the host: code grids and captions read from a code cache.

use token_shuffle_data::codes::Codes;
use token_shuffle_lm::{drop_prompts, seeded_rng};

use super::LmTrainingConfig;
use crate::TrainError;
use crate::images::EpochOrder;

/// A micro-batch on the host: code grids `[batch, h, w]` (row-major) and captions (after prompt dropout).
pub(super) struct HostBatch {
    pub(super) codes: Vec<i64>,
    pub(super) shape: [usize; 3],
    pub(super) texts: Vec<Vec<u32>>,
}

impl HostBatch {
    /// Text ids of the batch's longest caption (the length its prompts are padded to).
    pub(super) fn longest_text(&self) -> usize {
        self.texts.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The [`LmTrainingConfig::gradient_accumulation`] micro-batches of step `step` (counting from 0) from `cache`:
/// consecutive stream positions in the epoch order `order` keeps, their captions after prompt dropout. The
/// dropout's generator depends only on the seed and the step and runs through the micro-batches in turn, so a
/// resumed run draws what an uninterrupted one does.
pub(super) fn step_batches(
    cache: &Codes,
    order: &mut EpochOrder,
    step: usize,
    config: &LmTrainingConfig,
) -> Result<Vec<HostBatch>, TrainError> {
    let mut rng = seeded_rng(config.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..config.gradient_accumulation)
        .map(|micro| {
            let start = (step * config.gradient_accumulation + micro) * config.batch_size;
            let indices = order.indices(cache.len(), config.seed, start..start + config.batch_size);
            let batch = read_samples(cache, indices.into_iter())?;
            Ok(HostBatch {
                texts: drop_prompts(&batch.texts, config.model.prompt_dropout, &mut rng),
                ..batch
            })
        })
        .collect()
}

/// Samples `indices` of `cache` as one batch.
pub(super) fn read_samples(
    cache: &Codes,
    indices: impl ExactSizeIterator<Item = usize>,
) -> Result<HostBatch, TrainError> {
    let [h, w] = cache.key().grid;
    let batch_size = indices.len();
    let mut grids = Vec::with_capacity(batch_size * h * w);
    let mut texts = Vec::with_capacity(batch_size);
    for i in indices {
        let mut text = Vec::new();
        cache.read(i, &mut grids, &mut text)?;
        texts.push(text);
    }
    Ok(HostBatch {
        codes: grids.into_iter().map(i64::from).collect(),
        shape: [batch_size, h, w],
        texts,
    })
}
