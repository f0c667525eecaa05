//! burn `Dataset`s and the `Batcher` of pixel batches for tokenizer training. (The LM reads its micro-batches
//! from the code caches directly: see the train crate's `lm/batches.rs`.)

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::ImageCaption;
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
