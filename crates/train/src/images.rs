use std::path::PathBuf;
use std::str::FromStr;

use rayon::prelude::*;
use token_shuffle_data::ImageCaption;
use token_shuffle_data::folder::{FolderOptions, LoadReport, load_image_folder};
use token_shuffle_data::rng::SplitMix64;
use token_shuffle_data::scenes::{SceneCorpus, Split};
use token_shuffle_data::shards::{load_shards, load_shards_sample, validation_images};
use token_shuffle_data::twemoji::load_twemoji;

use crate::TrainError;

/// Where training images come from: `scenes`, `twemoji`, or a folder path (the `--data` argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The synthetic scene generator (train split for training, valid split for validation).
    Scenes,
    /// The embedded Twemoji corpus, split by a hash of each emoji.
    Twemoji,
    /// A folder of PNG/JPEG/WebP images, split by a hash of each path (captions are not needed).
    Folder(PathBuf),
    /// Webdataset shards (`shards/{00000..00127}.tar`, a directory of `.tar` files, or one), split by a hash of each
    /// sample's shard and key. The LM's code caches are encoded shard by shard, one cache file per shard.
    Shards {
        /// The shards as written in the config.
        spec: String,
        /// The shard files, in order.
        paths: Vec<PathBuf>,
    },
}

impl FromStr for ImageSource {
    type Err = String;
    /// A source named by one string (`--data`): see [`DataSource::from_name`].
    fn from_str(s: &str) -> Result<Self, String> {
        DataSource::from_name(s).resolve().map_err(|e| match e {
            TrainError::Config(message) => message,
            other => other.to_string(),
        })
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scenes => f.write_str("scenes"),
            Self::Twemoji => f.write_str("twemoji"),
            Self::Folder(path) => write!(f, "{}", path.display()),
            Self::Shards { spec, paths } => write!(f, "{spec} ({} shards)", paths.len()),
        }
    }
}

/// Where a run's images come from, as its config says: `"scenes"`, `"twemoji"`, `{"folder": "photos"}` or
/// `{"shards": "shards/{00000..00127}.tar"}` (a pattern, a folder of `.tar` files, or one). A plain path string,
/// as configs before this form wrote it, is still read: shards when it ends in `.tar` or names a folder holding
/// `.tar` files, else a folder. [`resolve`](Self::resolve) finds the files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The synthetic scene generator.
    Scenes,
    /// The embedded Twemoji corpus.
    Twemoji,
    /// A folder of images (with captions beside them).
    Folder(PathBuf),
    /// Webdataset shards.
    Shards(String),
}

impl DataSource {
    /// A source named by one string (the form of older configs and of `--data`): `scenes`, `twemoji`, shards
    /// (see [`DataSource`]) or a folder.
    pub fn from_name(name: &str) -> Self {
        match name {
            "scenes" => Self::Scenes,
            "twemoji" => Self::Twemoji,
            spec if token_shuffle_data::shards::names_shards(spec) => Self::Shards(spec.to_string()),
            path => Self::Folder(path.into()),
        }
    }

    /// The one-string form: what step records hold (so that runs recorded before the typed form still match)
    /// and what messages show.
    pub fn name(&self) -> String {
        match self {
            Self::Scenes => "scenes".into(),
            Self::Twemoji => "twemoji".into(),
            Self::Folder(path) => path.display().to_string(),
            Self::Shards(spec) => spec.clone(),
        }
    }

    /// The images this source names: the shard files listed, a folder checked to exist.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming a missing folder or shard, with the forms a source can take.
    pub fn resolve(&self) -> Result<ImageSource, TrainError> {
        match self {
            Self::Scenes => Ok(ImageSource::Scenes),
            Self::Twemoji => Ok(ImageSource::Twemoji),
            Self::Shards(spec) => token_shuffle_data::shards::shard_paths(spec)
                .map(|paths| ImageSource::Shards {
                    spec: spec.clone(),
                    paths,
                })
                .map_err(|e| TrainError::Config(e.to_string())),
            Self::Folder(path) if path.is_dir() => Ok(ImageSource::Folder(path.clone())),
            Self::Folder(path) => Err(TrainError::Config(format!(
                "{:?} is neither `scenes`, `twemoji`, a folder of images nor webdataset shards (a .tar file, a \
                 pattern like shards/{{00000..00127}}.tar, or a folder of .tar files)",
                path.display().to_string()
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DataSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTED: &str = r#""scenes", "twemoji", {"folder": "<dir>"} or {"shards": "<pattern, dir or .tar>"}"#;
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = DataSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<DataSource, E> {
                Ok(DataSource::from_name(name))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<DataSource, M::Error> {
                use serde::de::Error;
                let Some((key, value)) = map.next_entry::<String, String>()? else {
                    return Err(M::Error::custom(format!("an empty map; expected {EXPECTED}")));
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(M::Error::custom(format!(
                        "a map of more than one key; expected {EXPECTED}"
                    )));
                }
                match key.as_str() {
                    "folder" => Ok(DataSource::Folder(value.into())),
                    "shards" => Ok(DataSource::Shards(value)),
                    other => Err(M::Error::custom(format!(
                        "unknown source {other:?}; expected {EXPECTED}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Training and validation images at one resolution, served in a fixed order: batch `n` is the same for a given
/// seed however the run is interrupted.
#[derive(Debug)]
pub struct TrainingImages {
    train: TrainImages,
    valid: Vec<ImageCaption>,
    /// What a folder or Twemoji load found and skipped (none for scenes).
    pub report: Option<LoadReport>,
    /// When only a sample of webdataset shards is held ([`load_at_most`](Self::load_at_most)): how many samples
    /// the shards hold.
    pub sampled_from: Option<usize>,
}

#[derive(Debug)]
enum TrainImages {
    /// Rendered on demand: every batch is new scenes.
    Scenes { corpus: SceneCorpus, resolution: u32 },
    /// Held in memory and visited in a new seeded order each epoch.
    Loaded(Vec<ImageCaption>),
}

/// Fraction of a loaded corpus kept for validation.
const VALID_FRACTION: f64 = 0.05;

/// How many images of webdataset shards a tokenizer of `steps` × `batch_size` with `valid_images` validation images
/// holds in memory ([`TrainingImages::load_at_most`]): enough that each training image is seen about once, and that
/// the validation split (5%) has its images. A tokenizer sees no more images than that however large the data.
pub fn images_to_hold(steps: usize, batch_size: usize, valid_images: usize) -> usize {
    (steps * batch_size).max(valid_images * (1.0 / VALID_FRACTION).ceil() as usize)
}

/// How a folder or shards are loaded at `resolution` px.
pub(crate) fn folder_options(resolution: u32, allow_uncaptioned: bool) -> FolderOptions {
    FolderOptions {
        allow_uncaptioned,
        valid_fraction: VALID_FRACTION,
        ..FolderOptions::new(resolution)
    }
}

impl TrainingImages {
    /// Loads (or prepares to render) `source` at `resolution` px, keeping at most `valid_images` for validation.
    /// A folder's images need no captions here (the tokenizer does not read them): see
    /// [`load_captioned`](Self::load_captioned) for the LM's data.
    pub fn load(source: &ImageSource, resolution: u32, valid_images: usize, seed: u64) -> Result<Self, TrainError> {
        Self::load_from(source, resolution, valid_images, seed, true, None)
    }

    /// The first `count` validation images of `source` at `resolution` px (an evaluation's held-out images from
    /// data that has no held-out split of its own): those of [`load`](Self::load), but of webdataset shards only
    /// as many shards are read, and only their validation samples decoded, as `count` needs.
    pub fn load_valid(
        source: &ImageSource,
        resolution: u32,
        count: usize,
        seed: u64,
    ) -> Result<Vec<ImageCaption>, TrainError> {
        match source {
            ImageSource::Shards { paths, .. } => {
                Ok(validation_images(paths, &folder_options(resolution, true), count)?)
            }
            other => Ok(Self::load(other, resolution, count, seed)?.valid),
        }
    }

    /// [`load`](Self::load), holding about `images` images (train and valid) of webdataset shards: a sample seeded
    /// by `seed` and spread over every shard, so that memory does not grow with the data set
    /// ([`load_shards_sample`]). Other sources load as [`load`](Self::load) does. See [`images_to_hold`].
    pub fn load_at_most(
        source: &ImageSource,
        resolution: u32,
        valid_images: usize,
        seed: u64,
        images: usize,
    ) -> Result<Self, TrainError> {
        Self::load_from(source, resolution, valid_images, seed, true, Some(images))
    }

    /// [`load`](Self::load) for data whose captions are used: a folder image without a caption (or with a caption
    /// file that is not UTF-8) is an error naming it, unless `allow_uncaptioned` (then it gets an empty caption).
    pub fn load_captioned(
        source: &ImageSource,
        resolution: u32,
        valid_images: usize,
        seed: u64,
        allow_uncaptioned: bool,
    ) -> Result<Self, TrainError> {
        Self::load_from(source, resolution, valid_images, seed, allow_uncaptioned, None)
    }

    fn load_from(
        source: &ImageSource,
        resolution: u32,
        valid_images: usize,
        seed: u64,
        allow_uncaptioned: bool,
        hold: Option<usize>,
    ) -> Result<Self, TrainError> {
        let mut sampled_from = None;
        let (train, mut valid, report) = match source {
            ImageSource::Scenes => {
                token_shuffle_data::scenes::check_resolution(resolution)?;
                let valid_corpus = SceneCorpus::new(seed, Split::Valid, valid_images);
                let valid = (0..valid_images as u64)
                    .into_par_iter()
                    .map(|i| {
                        let scene = valid_corpus.scene(i);
                        let image = scene.render(resolution).expect("resolution checked");
                        ImageCaption {
                            id: format!("valid-scene-{i}"),
                            caption: scene.caption,
                            image,
                        }
                    })
                    .collect();
                let corpus = SceneCorpus::new(seed, Split::Train, usize::MAX);
                (TrainImages::Scenes { corpus, resolution }, valid, None)
            }
            ImageSource::Twemoji => {
                let (train, valid, report) = load_twemoji(resolution, VALID_FRACTION)?;
                (TrainImages::Loaded(train), valid, Some(report))
            }
            ImageSource::Folder(path) => {
                let folder = load_image_folder(path, &folder_options(resolution, allow_uncaptioned))?;
                (TrainImages::Loaded(folder.train), folder.valid, Some(folder.report))
            }
            ImageSource::Shards { paths, .. } => {
                let options = folder_options(resolution, allow_uncaptioned);
                let shards = match hold {
                    Some(images) => {
                        let (shards, total) = load_shards_sample(paths, &options, images, seed)?;
                        sampled_from = (total > images).then_some(total);
                        shards
                    }
                    None => load_shards(paths, &options)?,
                };
                (TrainImages::Loaded(shards.train), shards.valid, Some(shards.report))
            }
        };
        if let TrainImages::Loaded(images) = &train
            && (images.is_empty() || valid.is_empty())
        {
            return Err(TrainError::Config(format!(
                "{source} has {} training and {} validation images at {resolution} px; it needs some of each \
                 (validation takes {:.0}% of the images by hash of their name)",
                images.len(),
                valid.len(),
                VALID_FRACTION * 100.0
            )));
        }
        valid.truncate(valid_images);
        Ok(Self {
            train,
            valid,
            report,
            sampled_from,
        })
    }

    /// The validation images.
    pub fn valid(&self) -> &[ImageCaption] {
        &self.valid
    }

    /// Number of training images, when finite (loaded corpora; scenes are endless).
    pub fn train_len(&self) -> Option<usize> {
        match &self.train {
            TrainImages::Scenes { .. } => None,
            TrainImages::Loaded(images) => Some(images.len()),
        }
    }

    /// Training images `range`, in corpus order (for encoding a corpus once).
    pub fn train_range(&self, range: std::ops::Range<usize>) -> Vec<ImageCaption> {
        match &self.train {
            TrainImages::Scenes { corpus, resolution } => range
                .into_par_iter()
                .map(|i| {
                    let scene = corpus.scene(i as u64);
                    let image = scene.render(*resolution).expect("resolution checked");
                    ImageCaption {
                        id: format!("scene-{i}"),
                        caption: scene.caption,
                        image,
                    }
                })
                .collect(),
            TrainImages::Loaded(images) => images[range.start.min(images.len())..range.end.min(images.len())].to_vec(),
        }
    }

    /// The `batch_size` training images of step `step`.
    pub fn batch(&self, step: usize, batch_size: usize, seed: u64) -> Vec<ImageCaption> {
        let positions = step * batch_size..(step + 1) * batch_size;
        match &self.train {
            TrainImages::Scenes { .. } => self.train_range(positions),
            TrainImages::Loaded(images) => sample_indices(images.len(), seed, positions)
                .into_iter()
                .map(|i| images[i].clone())
                .collect(),
        }
    }
}

/// The dataset indices at stream positions `positions` of a dataset of `len` samples visited epoch after epoch,
/// each epoch in its own seeded order: position p is sample `order(p / len)[p % len]`. Training runs take batch n
/// at positions `n·B .. (n+1)·B`, so a resumed run sees the same batches as an uninterrupted one.
pub(crate) fn sample_indices(len: usize, seed: u64, positions: std::ops::Range<usize>) -> Vec<usize> {
    EpochOrder::default().indices(len, seed, positions)
}

/// [`sample_indices`] for a training loop: the permutation of the current epoch is kept between calls (8 bytes a
/// sample), not drawn again for every batch (at a million samples that is a million swaps per batch).
#[derive(Debug, Default)]
pub(crate) struct EpochOrder {
    /// `(len, seed, epoch)` and that epoch's order.
    current: Option<((usize, u64, usize), Vec<usize>)>,
}

impl EpochOrder {
    /// The indices at `positions`, as [`sample_indices`] gives them.
    pub(crate) fn indices(&mut self, len: usize, seed: u64, positions: std::ops::Range<usize>) -> Vec<usize> {
        positions
            .map(|position| {
                let id = (len, seed, position / len);
                if self.current.as_ref().is_none_or(|(current, _)| *current != id) {
                    self.current = Some((id, epoch_order(len, seed, id.2)));
                }
                let (_, permutation) = self.current.as_ref().expect("set above");
                permutation[position % len]
            })
            .collect()
    }
}

/// Model images `[N, 3, H, W]` (values in [−1, 1]) as RGB images, clamped.
pub(crate) fn tensor_to_images<B: burn::tensor::backend::Backend>(
    images: burn::tensor::Tensor<B, 4>,
) -> Vec<image::RgbImage> {
    let [n, _, h, w] = images.dims();
    let values: Vec<f32> = images.into_data().convert::<f32>().to_vec().expect("f32 pixels");
    values
        .chunks(3 * h * w)
        .take(n)
        .map(|v| token_shuffle_data::imaging::from_chw_signed(v, w as u32, h as u32))
        .collect()
}

/// A seeded Fisher–Yates permutation of `0..len` for one epoch.
fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed, epoch as u64);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sources_read_in_the_typed_form_and_the_old_string_form_alike() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        let tars = dir.path().join("tars");
        std::fs::create_dir_all(&photos).unwrap();
        std::fs::create_dir_all(&tars).unwrap();
        std::fs::write(tars.join("0.tar"), b"").unwrap();
        let read = |json: serde_json::Value| serde_json::from_value::<DataSource>(json);
        let (photos_name, tars_name) = (photos.display().to_string(), tars.display().to_string());
        for (typed, old) in [
            (serde_json::json!("scenes"), serde_json::json!("scenes")),
            (
                serde_json::json!({ "folder": photos_name }),
                serde_json::json!(photos_name),
            ),
            (serde_json::json!({ "shards": tars_name }), serde_json::json!(tars_name)),
            (
                serde_json::json!({ "shards": "s/{0..3}.tar" }),
                serde_json::json!("s/{0..3}.tar"),
            ),
        ] {
            let source = read(typed.clone()).unwrap();
            assert_eq!(read(old.clone()).unwrap(), source, "{old} reads as {typed}");
            assert_eq!(
                serde_json::to_value(&source).unwrap(),
                typed,
                "written in the typed form"
            );
            // Step records hold the one-string form, so runs recorded with the old form still match.
            assert_eq!(serde_json::json!(source.name()), old);
        }
        assert_eq!(
            DataSource::Folder(photos.clone()).resolve().unwrap(),
            ImageSource::Folder(photos)
        );
        let missing = DataSource::Folder("missing".into()).resolve().unwrap_err();
        assert!(
            matches!(&missing, TrainError::Config(m) if m.contains("\"missing\" is neither")),
            "{missing}"
        );
        for (bad, says) in [
            (serde_json::json!({ "bucket": "x" }), "unknown source \"bucket\""),
            (serde_json::json!({ "folder": "a", "shards": "b" }), "more than one key"),
            (serde_json::json!(42), "expected \"scenes\", \"twemoji\", {\"folder\""),
        ] {
            let error = read(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn epochs_visit_every_image_once_in_a_seeded_order() {
        let a = epoch_order(50, 7, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 7, 0));
        assert_ne!(a, epoch_order(50, 7, 1));
        assert_ne!(a, epoch_order(50, 8, 0));
    }

    #[test]
    fn a_kept_epoch_order_gives_the_indices_of_a_fresh_one() {
        let mut order = EpochOrder::default();
        // Batches of 7 over 20 samples cross epoch boundaries; the data set changes size in the middle.
        for (len, start) in [(20, 0), (20, 7), (20, 14), (20, 35), (9, 42), (20, 49)] {
            assert_eq!(
                order.indices(len, 3, start..start + 7),
                sample_indices(len, 3, start..start + 7)
            );
        }
    }

    #[test]
    fn scene_batches_are_fixed_by_step_and_seed() {
        let images = TrainingImages::load(&ImageSource::Scenes, 32, 4, 1).unwrap();
        assert_eq!(images.valid().len(), 4);
        let ids = |step| images.batch(step, 3, 1).into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(2), ["scene-6", "scene-7", "scene-8"]);
        assert_eq!(images.batch(2, 3, 1)[0].image, images.batch(2, 3, 1)[0].image);
    }

    #[test]
    fn an_unknown_source_is_named() {
        let err = "no/such/folder".parse::<ImageSource>().unwrap_err();
        assert!(err.contains("no/such/folder"), "{err}");
    }
}
