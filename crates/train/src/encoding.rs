//! Images and captions into code caches, with the tokenizers of a run.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use token_shuffle_data::ImageCaption;
use token_shuffle_data::batch::PixelBatcher;
use token_shuffle_data::cache::{CacheKey, CodeCache};
use token_shuffle_data::text::TextTokenizer;
use token_shuffle_vqgan::VqModel;

use crate::TrainError;

/// The key of the code caches at `resolution` px made with these tokenizers.
pub(crate) fn cache_key<B: Backend>(
    vq: &VqModel<B>,
    vq_fingerprint: &str,
    text: &TextTokenizer,
    resolution: usize,
) -> Result<CacheKey, TrainError> {
    Ok(CacheKey {
        tokenizer: text.fingerprint()?,
        vq_model: vq_fingerprint.to_string(),
        resolution: resolution as u32,
        grid: [resolution / vq.downsample_factor(); 2],
    })
}

/// Encodes `count` images (fetched by index range) and their captions into a code cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_cache<B: Backend>(
    vq: &VqModel<B>,
    text: &TextTokenizer,
    key: CacheKey,
    count: usize,
    fetch: impl Fn(std::ops::Range<usize>) -> Vec<ImageCaption>,
    batch_size: usize,
    device: &B::Device,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<CodeCache, TrainError> {
    let mut cache = CodeCache::new(key);
    let chunk = batch_size.max(1) * 4;
    for start in (0..count).step_by(chunk) {
        let images = fetch(start..(start + chunk).min(count));
        let captions: Vec<Vec<u32>> = images
            .iter()
            .map(|i| text.encode(&i.caption))
            .collect::<Result<_, _>>()?;
        let pixels = Batcher::<B, _, _>::batch(&PixelBatcher, images, device).images;
        let codes: Vec<i64> = vq
            .encode(pixels)?
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("i64 codes");
        let per_image = codes.len() / captions.len().max(1);
        for (grid, caption) in codes.chunks(per_image).zip(&captions) {
            let grid: Vec<u32> = grid.iter().map(|&c| c as u32).collect();
            cache.push(&grid, caption)?;
        }
        on_progress(cache.len(), count);
    }
    Ok(cache)
}
