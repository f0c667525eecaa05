//! burn `Dataset`s and `Batcher`s: pixel batches for tokenizer training, code batches for LM training.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::ImageCaption;
use crate::cache::CodeCache;
use crate::imaging::to_chw_signed;
use crate::scenes::SceneCorpus;

/// Images held in memory (a loaded folder or Twemoji split) as a burn dataset.
#[derive(Debug, Clone)]
pub struct InMemoryImages(pub Vec<ImageCaption>);

impl Dataset<ImageCaption> for InMemoryImages {
    fn get(&self, index: usize) -> Option<ImageCaption> {
        self.0.get(index).cloned()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The synthetic scene corpus as a burn dataset, rendered on demand at `resolution`.
#[derive(Debug, Clone, Copy)]
pub struct SceneImages {
    /// The corpus.
    pub corpus: SceneCorpus,
    /// Rendering resolution in pixels (32–2048; checked by [`SceneImages::new`]).
    pub resolution: u32,
}

impl SceneImages {
    /// Scenes of `corpus` at `resolution` px.
    ///
    /// # Errors
    /// [`crate::DataError::Resolution`] outside 32–2048 px.
    pub fn new(corpus: SceneCorpus, resolution: u32) -> Result<Self, crate::DataError> {
        crate::scenes::check_resolution(resolution)?;
        Ok(Self { corpus, resolution })
    }
}

impl Dataset<ImageCaption> for SceneImages {
    fn get(&self, index: usize) -> Option<ImageCaption> {
        (index < self.corpus.len).then(|| {
            let scene = self.corpus.scene(index as u64);
            let image = scene
                .render(self.resolution)
                .expect("resolution checked by SceneImages::new");
            ImageCaption {
                id: format!("scene-{index}"),
                caption: scene.caption,
                image,
            }
        })
    }
    fn len(&self) -> usize {
        self.corpus.len
    }
}

/// A batch of images for the tokenizer.
#[derive(Debug, Clone)]
pub struct PixelBatch<B: Backend> {
    /// `[B, 3, H, W]`, values in `[-1, 1]`.
    pub images: Tensor<B, 4>,
    /// The captions, in batch order.
    pub captions: Vec<String>,
}

/// Stacks square images of one size into a [`PixelBatch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PixelBatcher;

impl<B: Backend> Batcher<B, ImageCaption, PixelBatch<B>> for PixelBatcher {
    fn batch(&self, items: Vec<ImageCaption>, device: &B::Device) -> PixelBatch<B> {
        let (w, h) = items.first().map(|i| i.image.dimensions()).unwrap_or((0, 0));
        let mut values = Vec::with_capacity(items.len() * 3 * (w * h) as usize);
        let mut captions = Vec::with_capacity(items.len());
        for item in items {
            assert_eq!(
                item.image.dimensions(),
                (w, h),
                "{}: every image of a batch must be {w}×{h}",
                item.id
            );
            values.extend(to_chw_signed(&item.image));
            captions.push(item.caption);
        }
        let shape = [captions.len(), 3, h as usize, w as usize];
        PixelBatch {
            images: Tensor::from_data(TensorData::new(values, shape), device),
            captions,
        }
    }
}

/// One LM training example: a code grid and its caption's token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSample {
    /// `H'·W'` codes, row-major.
    pub codes: Vec<u32>,
    /// Caption token ids.
    pub text_ids: Vec<u32>,
}

impl Dataset<CodeSample> for CodeCache {
    fn get(&self, index: usize) -> Option<CodeSample> {
        (index < CodeCache::len(self)).then(|| {
            let (codes, text_ids) = self.sample(index);
            CodeSample {
                codes: codes.to_vec(),
                text_ids: text_ids.to_vec(),
            }
        })
    }
    fn len(&self) -> usize {
        CodeCache::len(self)
    }
}

/// A batch for the LM.
#[derive(Debug, Clone)]
pub struct CodeBatch<B: Backend> {
    /// `[B, H', W']` code grids.
    pub codes: Tensor<B, 3, Int>,
    /// `[B, T]` caption ids, right-padded with the batcher's pad id to the longest caption.
    pub text_ids: Tensor<B, 2, Int>,
    /// Each caption's length before padding.
    pub text_lengths: Vec<usize>,
}

/// Stacks [`CodeSample`]s into a [`CodeBatch`].
#[derive(Debug, Clone, Copy)]
pub struct CodeBatcher {
    /// Code grid `[H', W']` of every sample.
    pub grid: [usize; 2],
    /// Id that pads captions to a common length.
    pub pad_id: u32,
}

impl<B: Backend> Batcher<B, CodeSample, CodeBatch<B>> for CodeBatcher {
    fn batch(&self, items: Vec<CodeSample>, device: &B::Device) -> CodeBatch<B> {
        let [h, w] = self.grid;
        let longest = items.iter().map(|i| i.text_ids.len()).max().unwrap_or(0).max(1);
        let mut codes = Vec::with_capacity(items.len() * h * w);
        let mut text = Vec::with_capacity(items.len() * longest);
        let mut text_lengths = Vec::with_capacity(items.len());
        for item in &items {
            assert_eq!(
                item.codes.len(),
                h * w,
                "a code grid of {} codes in a batch of {h}×{w} grids",
                item.codes.len()
            );
            codes.extend(item.codes.iter().map(|&c| c as i64));
            text.extend(item.text_ids.iter().map(|&t| t as i64));
            text.extend(std::iter::repeat_n(self.pad_id as i64, longest - item.text_ids.len()));
            text_lengths.push(item.text_ids.len());
        }
        CodeBatch {
            codes: Tensor::from_data(TensorData::new(codes, [items.len(), h, w]), device),
            text_ids: Tensor::from_data(TensorData::new(text, [items.len(), longest]), device),
            text_lengths,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheKey, fingerprint};
    use crate::scenes::Split;

    type B = token_shuffle_test_support::TestBackend;

    #[test]
    fn pixel_batches_are_channel_first_in_signed_range() {
        let scenes = SceneImages::new(SceneCorpus::new(0, Split::Train, 10), 32).unwrap();
        assert_eq!(scenes.len(), 10);
        let items: Vec<ImageCaption> = (0..4).map(|i| scenes.get(i).unwrap()).collect();
        let first_pixel = items[0].image.get_pixel(0, 0).0;
        let batch: PixelBatch<B> = PixelBatcher.batch(items, &Default::default());
        assert_eq!(batch.images.dims(), [4, 3, 32, 32]);
        assert_eq!(batch.captions.len(), 4);
        let values = batch.images.clone().into_data().to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Pixel (0, 0) of image 0, channel by channel.
        for (c, &byte) in first_pixel.iter().enumerate() {
            assert_eq!(values[c * 32 * 32], byte as f32 / 127.5 - 1.0);
        }
        assert!(scenes.get(10).is_none());
        assert!(SceneImages::new(SceneCorpus::new(0, Split::Train, 10), 4096).is_err());
    }

    #[test]
    fn code_batches_pad_captions_and_keep_grids() {
        let key = CacheKey {
            tokenizer: fingerprint(b"t"),
            vq_model: fingerprint(b"v"),
            resolution: 32,
            grid: [2, 2],
        };
        let mut cache = CodeCache::new(key);
        cache.push(&[1, 2, 3, 4], &[10, 11, 12]).unwrap();
        cache.push(&[5, 6, 7, 8], &[13]).unwrap();
        let items: Vec<CodeSample> = (0..2).map(|i| cache.get(i).unwrap()).collect();
        let batch: CodeBatch<B> = CodeBatcher {
            grid: [2, 2],
            pad_id: 0,
        }
        .batch(items, &Default::default());
        batch
            .codes
            .into_data()
            .assert_eq(&TensorData::new(vec![1i32, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2]), false);
        batch
            .text_ids
            .into_data()
            .assert_eq(&TensorData::new(vec![10i32, 11, 12, 13, 0, 0], [2, 3]), false);
        assert_eq!(batch.text_lengths, vec![3, 1]);
    }
}
