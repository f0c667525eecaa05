//! Image-text data in the webdataset layout: tar shards whose members are grouped into samples by key.
//!
//! A sample is the run of consecutive members that share a key — the member's path up to the first `.` of its
//! file name — with an image (`{key}.png`, `.jpg`, `.jpeg` or `.webp`) and a caption (`{key}.txt`, or `{key}.json`
//! with a `caption` or `text` field). Shards are named by a directory (every `*.tar` in it, sorted), one `.tar`
//! file, or a brace pattern `shards/{00000..00127}.tar` (the numbers keep the width written).
//!
//! Shards are read one at a time (a shard is the unit of memory: its members are read whole, then decoded in
//! parallel with rayon). The bad-file policy is the image folders': an image that cannot be decoded is skipped and
//! named (`shard.tar:key.png`, with the reason) in the [`LoadReport`]; a sample without a caption is an error naming
//! it unless uncaptioned images are allowed; a shard that is not a tar file is an error naming it; nothing usable
//! left is [`DataError::NoImages`]. The train/valid split is a hash of each sample's shard and key, as for folders.
//!
//! ```
//! use token_shuffle_data::shards::{shard_paths, write_shard};
//!
//! let dir = std::env::temp_dir().join(format!("shards-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! for shard in 0..3 {
//!     write_shard(&dir.join(format!("{shard:03}.tar")), &[("a", "png", vec![0u8; 4], Some("a cat"))])?;
//! }
//! let pattern = format!("{}/{{000..002}}.tar", dir.display());
//! assert_eq!(shard_paths(&pattern)?.len(), 3);
//! assert_eq!(shard_paths(dir.to_str().unwrap())?, shard_paths(&pattern)?);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::folder::{FolderOptions, ImageFolder, LoadReport, Skipped, in_valid_split, split_decoded};
use crate::imaging::decode_square;
use crate::{DataError, ImageCaption};

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// Whether a `--data` value names shards (a `.tar` file or brace pattern, or a directory holding `.tar` files).
pub fn names_shards(spec: &str) -> bool {
    let path = Path::new(spec);
    spec.ends_with(".tar")
        || (path.is_dir()
            && std::fs::read_dir(path)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == "tar"))
                })
                .unwrap_or(false))
}

/// The shard files `spec` names, in order: a directory (its `*.tar` files, sorted by name), a `.tar` file, or a
/// pattern with one numeric brace range, `dir/{00000..00127}.tar`.
///
/// # Errors
/// [`DataError::Shards`] for a malformed pattern, a shard of the pattern that does not exist (the first is named,
/// with the count), or a directory without `.tar` files; [`DataError::Io`] when a directory cannot be listed.
pub fn shard_paths(spec: &str) -> Result<Vec<PathBuf>, DataError> {
    let bad = |why: String| DataError::Shards {
        spec: spec.to_string(),
        why,
    };
    let paths = if let Some(open) = spec.find('{') {
        let close = spec[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| bad("a `{` without its `}`".into()))?;
        let (first, last) = spec[open + 1..close]
            .split_once("..")
            .ok_or_else(|| bad("the braces must hold a range like {00000..00127}".into()))?;
        let number = |n: &str| {
            n.parse::<u64>()
                .map_err(|_| bad(format!("`{n}` in the brace range is not a number")))
        };
        let (from, to) = (number(first)?, number(last)?);
        if from > to {
            return Err(bad(format!("the range {first}..{last} is empty")));
        }
        let width = if first.starts_with('0') && first.len() > 1 {
            first.len()
        } else {
            0
        };
        (from..=to)
            .map(|n| PathBuf::from(format!("{}{n:0width$}{}", &spec[..open], &spec[close + 1..])))
            .collect()
    } else if Path::new(spec).is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(spec)
            .map_err(|source| DataError::Io {
                path: spec.into(),
                source,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(bad("the directory holds no .tar shard".into()));
        }
        paths
    } else {
        vec![PathBuf::from(spec)]
    };
    let missing: Vec<&PathBuf> = paths.iter().filter(|p| !p.is_file()).collect();
    if let Some(first) = missing.first() {
        return Err(bad(format!(
            "{} of {} shards do not exist, the first is {}",
            missing.len(),
            paths.len(),
            first.display()
        )));
    }
    Ok(paths)
}

/// One sample's members as read from a shard, not yet decoded.
#[derive(Debug, Default)]
struct RawSample {
    key: String,
    /// `<shard stem>/<key>`: the sample's id in an [`ImageCaption`] and for the train/valid split.
    id: String,
    image: Option<(String, Vec<u8>)>,
    caption: Option<Result<String, String>>,
}

/// Splits a member path into its key and extension (`dir/a.b.png` → `dir/a`, `b.png`).
fn key_and_extension(path: &str) -> (&str, &str) {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    match path[name_start..].find('.') {
        Some(dot) => (&path[..name_start + dot], &path[name_start + dot + 1..]),
        None => (path, ""),
    }
}

/// The caption in a `.txt` or `.json` member.
fn caption_of(extension: &str, bytes: Vec<u8>) -> Result<String, String> {
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 (invalid byte at {})", e.utf8_error().valid_up_to()))?;
    if extension == "txt" {
        return Ok(text.trim().to_string());
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON ({e})"))?;
    ["caption", "text"]
        .iter()
        .find_map(|field| value.get(field).and_then(|v| v.as_str()))
        .map(|c| c.trim().to_string())
        .ok_or_else(|| "a JSON caption needs a string field `caption` or `text`".into())
}

/// Which samples of a shard to read, and whether to read their images' bytes.
struct Reading<'a> {
    /// Whether to read the sample with this id (`<shard stem>/<key>`).
    keep: &'a (dyn Fn(&str) -> bool + Sync),
    /// Read image bytes (false: an image member is noted, its bytes left unread, for captions only).
    images: bool,
}

/// Reads a shard's samples that `reading` keeps (members grouped by key, in order; other members are ignored).
fn read_shard(path: &Path, reading: &Reading) -> Result<Vec<RawSample>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_tar = |e: std::io::Error| DataError::Shards {
        spec: path.display().to_string(),
        why: format!("not a readable tar file ({e})"),
    };
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let mut archive = tar::Archive::new(std::io::BufReader::new(std::fs::File::open(path).map_err(io)?));
    let mut samples: Vec<RawSample> = Vec::new();
    // Members of samples left out are skipped by seeking past them: neither held nor decoded.
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(not_tar)?.to_string_lossy().into_owned();
        let (key, extension) = key_and_extension(&member);
        let extension = extension.to_ascii_lowercase();
        let is_image = IMAGE_EXTENSIONS.contains(&extension.as_str());
        let known = is_image || extension == "txt" || extension == "json";
        let id = format!("{stem}/{key}");
        if !known || !(reading.keep)(&id) {
            continue;
        }
        let mut bytes = Vec::new();
        if !is_image || reading.images {
            bytes.reserve(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(not_tar)?;
        }
        if samples.last().is_none_or(|s| s.key != key) {
            samples.push(RawSample {
                key: key.to_string(),
                id,
                ..Default::default()
            });
        }
        let sample = samples.last_mut().expect("pushed above");
        if is_image {
            sample.image = Some((extension, bytes));
        } else if sample.caption.is_none() || extension == "txt" {
            sample.caption = Some(caption_of(&extension, bytes));
        }
    }
    Ok(samples)
}

/// Where a sample's member is named in reports and errors: `shard.tar:key.ext`.
fn member_path(shard: &Path, key: &str, extension: &str) -> PathBuf {
    PathBuf::from(format!("{}:{key}.{extension}", shard.display()))
}

/// A sample that passed the caption policy: its id (`<shard stem>/<key>`), caption, image (extension, bytes) and
/// key.
type Entry = (String, String, (String, Vec<u8>), String);

/// The samples of a shard that `reading` keeps, with the caption policy applied: the entries with an image, and the
/// samples skipped for having none.
fn shard_entries(
    path: &Path,
    options: &FolderOptions,
    reading: &Reading,
) -> Result<(Vec<Entry>, Vec<Skipped>), DataError> {
    let member = |key: &str, ext: &str| member_path(path, key, ext);
    let samples = read_shard(path, reading)?;
    let mut uncaptioned = Vec::new();
    let mut entries = Vec::with_capacity(samples.len());
    let mut no_image = Vec::new();
    for sample in samples {
        let caption = match sample.caption {
            Some(Err(why)) => {
                return Err(DataError::BadCaption {
                    path: member(&sample.key, "txt|json"),
                    why,
                });
            }
            Some(Ok(c)) if !c.is_empty() => c,
            _ if options.allow_uncaptioned => String::new(),
            _ => {
                uncaptioned.push(member(&sample.key, "txt"));
                continue;
            }
        };
        match sample.image {
            Some(image) => entries.push((sample.id, caption, image, sample.key)),
            None => no_image.push(Skipped {
                path: member(&sample.key, "png|jpg|webp"),
                reason: "the sample has a caption but no image".into(),
            }),
        }
    }
    if let Some(first) = uncaptioned.first() {
        return Err(DataError::MissingCaption {
            path: first.clone(),
            count: uncaptioned.len(),
            source_of_captions: "a .txt or .json member of the same key in the shard",
        });
    }
    Ok((entries, no_image))
}

/// Loads one shard at `options.resolution` px: its samples decoded in parallel and split into train and valid
/// (see the module docs for what is skipped and what is an error).
///
/// # Errors
/// [`DataError::Io`] or [`DataError::Shards`] for a shard that cannot be read; [`DataError::MissingCaption`] or
/// [`DataError::BadCaption`] (naming `shard.tar:key`) for a sample without a usable caption, unless uncaptioned
/// images are allowed.
pub fn load_shard(path: &Path, options: &FolderOptions) -> Result<ImageFolder, DataError> {
    load_shard_where(path, options, &|_| true)
}

fn load_shard_where(
    path: &Path,
    options: &FolderOptions,
    keep: &(dyn Fn(&str) -> bool + Sync),
) -> Result<ImageFolder, DataError> {
    let (entries, no_image) = shard_entries(path, options, &Reading { keep, images: true })?;
    let decoded: Vec<Result<ImageCaption, Skipped>> = entries
        .into_par_iter()
        .map(
            |(id, caption, (extension, bytes), key)| match decode_square(&bytes, options.resolution) {
                Ok(image) => Ok(ImageCaption { id, caption, image }),
                Err(reason) => Err(Skipped {
                    path: member_path(path, &key, &extension),
                    reason,
                }),
            },
        )
        .collect();
    let (train, valid, mut report) = split_decoded(decoded, options.valid_fraction);
    report.found += no_image.len();
    report.skipped.extend(no_image);
    Ok(ImageFolder { train, valid, report })
}

/// Loads every shard of `paths` (one at a time) into one data set, for data small enough to hold in memory; a
/// code cache is encoded shard by shard instead, and the tokenizer holds a sample ([`load_shards_sample`]).
///
/// # Errors
/// As [`load_shard`]; [`DataError::NoImages`] when no shard has a usable image.
pub fn load_shards(paths: &[PathBuf], options: &FolderOptions) -> Result<ImageFolder, DataError> {
    load_shards_where(paths, options, &|_| true)
}

/// Loads about `samples` of the shards' samples (train and valid together), chosen uniformly across all shards by
/// a hash of `seed` and each sample's id, so that memory is bounded by `samples` and not by the data set; the other
/// samples' images are neither read into memory nor decoded. All of them when the shards hold no more than
/// `samples` (counted first, from the tar headers). Returns the data and the number of samples in the shards.
///
/// # Errors
/// As [`load_shards`].
pub fn load_shards_sample(
    paths: &[PathBuf],
    options: &FolderOptions,
    samples: usize,
    seed: u64,
) -> Result<(ImageFolder, usize), DataError> {
    let total = paths.iter().map(|p| count_samples(p)).sum::<Result<usize, _>>()?;
    let folder = if total <= samples {
        load_shards(paths, options)?
    } else {
        let fraction = samples as f64 / total as f64;
        load_shards_where(paths, options, &|id| seeded_unit(seed, id) < fraction)?
    };
    Ok((folder, total))
}

/// A number in [0, 1) drawn from `seed` and `id` (the same for the same pair, independent of the validation split's
/// hash of the id alone).
fn seeded_unit(seed: u64, id: &str) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(id.as_bytes());
    let value = u64::from_le_bytes(hasher.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    value as f64 / (u64::MAX as f64 + 1.0)
}

fn load_shards_where(
    paths: &[PathBuf],
    options: &FolderOptions,
    keep: &(dyn Fn(&str) -> bool + Sync),
) -> Result<ImageFolder, DataError> {
    let mut all = ImageFolder {
        train: Vec::new(),
        valid: Vec::new(),
        report: LoadReport::default(),
    };
    for path in paths {
        let shard = load_shard_where(path, options, keep)?;
        all.train.extend(shard.train);
        all.valid.extend(shard.valid);
        all.report.add(shard.report);
    }
    if all.report.loaded == 0 {
        return Err(DataError::NoImages {
            root: paths.first().cloned().unwrap_or_default(),
            summary: format!("{} shards: {}", paths.len(), all.report.summary()),
        });
    }
    Ok(all)
}

/// The first `count` validation images of the shards, in shard order — the validation split of
/// [`load_shards`] cut to `count` — reading shards only until there are enough and decoding only validation
/// samples (an evaluation's held-out images from a large shard set).
///
/// # Errors
/// As [`load_shard`] for the shards read; [`DataError::NoImages`] when they hold no validation image.
pub fn validation_images(
    paths: &[PathBuf],
    options: &FolderOptions,
    count: usize,
) -> Result<Vec<ImageCaption>, DataError> {
    let mut images = Vec::new();
    let mut report = LoadReport::default();
    for path in paths {
        if images.len() >= count {
            break;
        }
        let shard = load_shard_where(path, options, &|id| in_valid_split(id, options.valid_fraction))?;
        images.extend(shard.valid);
        report.add(shard.report);
    }
    if images.is_empty() {
        return Err(DataError::NoImages {
            root: paths.first().cloned().unwrap_or_default(),
            summary: format!("no validation image in {} shards: {}", paths.len(), report.summary()),
        });
    }
    images.truncate(count);
    Ok(images)
}

/// The number of samples with an image in a shard, from its tar headers (members' contents are skipped).
///
/// # Errors
/// As [`load_shard`] for a shard that cannot be read.
pub fn count_samples(path: &Path) -> Result<usize, DataError> {
    let samples = read_shard(
        path,
        &Reading {
            keep: &|_| true,
            images: false,
        },
    )?;
    Ok(samples.iter().filter(|s| s.image.is_some()).count())
}

/// The captions of the training split of every shard (the samples with an image, by the split's hash of their id),
/// read without reading or decoding any image: what a text tokenizer trains on. An image that would not decode
/// still gives its caption here.
///
/// # Errors
/// As [`load_shards`], for captions; [`DataError::NoImages`] when no sample has an image.
pub fn training_captions(paths: &[PathBuf], options: &FolderOptions) -> Result<Vec<String>, DataError> {
    let mut captions = Vec::new();
    let mut samples = 0;
    for path in paths {
        let reading = Reading {
            keep: &|_| true,
            images: false,
        };
        let (entries, _) = shard_entries(path, options, &reading)?;
        samples += entries.len();
        captions.extend(
            entries
                .into_iter()
                .filter(|(id, ..)| !in_valid_split(id, options.valid_fraction))
                .map(|(_, caption, ..)| caption),
        );
    }
    if samples == 0 {
        return Err(DataError::NoImages {
            root: paths.first().cloned().unwrap_or_default(),
            summary: format!("{} shards without an image", paths.len()),
        });
    }
    Ok(captions)
}

/// Writes a shard of `(key, image extension, image bytes, caption)` samples (the caption as `{key}.txt`, left out
/// when `None`): for tests, examples and converting data.
///
/// # Errors
/// [`DataError::Io`] when the file cannot be written.
pub fn write_shard(path: &Path, samples: &[(&str, &str, Vec<u8>, Option<&str>)]) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, bytes)
    };
    for (key, extension, image, caption) in samples {
        if let Some(caption) = caption {
            append(format!("{key}.txt"), caption.as_bytes()).map_err(io)?;
        }
        append(format!("{key}.{extension}"), image).map_err(io)?;
    }
    let bytes = builder.into_inner().map_err(io)?;
    crate::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(colour: [u8; 3]) -> Vec<u8> {
        let image = image::RgbImage::from_pixel(8, 8, image::Rgb(colour));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn members_are_grouped_by_key_and_bad_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000.tar");
        write_shard(
            &path,
            &[
                ("a", "png", png([255, 0, 0]), Some("a red square")),
                ("sub/b.x", "png", png([0, 0, 255]), Some("a blue square")),
                ("broken", "jpg", b"not a jpeg".to_vec(), Some("broken")),
            ],
        )
        .unwrap();
        assert_eq!(key_and_extension("sub/b.x.png"), ("sub/b", "x.png"));
        let options = FolderOptions {
            valid_fraction: 0.0,
            ..FolderOptions::new(4)
        };
        let shard = load_shard(&path, &options).unwrap();
        let ids: Vec<_> = shard
            .train
            .iter()
            .map(|i| (i.id.as_str(), i.caption.as_str()))
            .collect();
        // `sub/b.x.png` has key `sub/b` and extension `x.png`, which is not an image: ignored.
        assert_eq!(ids, [("000/a", "a red square")]);
        assert_eq!(shard.train[0].image.dimensions(), (4, 4));
        assert_eq!(shard.report.skipped.len(), 1, "{:?}", shard.report);
        assert!(
            shard.report.skipped[0]
                .path
                .to_string_lossy()
                .ends_with("000.tar:broken.jpg")
        );
    }

    /// Two shards of 60 captioned samples each (the last of the second shard a broken JPEG).
    fn two_shards(dir: &Path) -> Vec<PathBuf> {
        let red = png([200, 0, 0]);
        (0..2)
            .map(|shard| {
                let keys: Vec<String> = (0..60).map(|i| format!("s{shard}-{i:02}")).collect();
                let captions: Vec<String> = (0..60).map(|i| format!("caption {shard} {i}")).collect();
                let samples: Vec<(&str, &str, Vec<u8>, Option<&str>)> = (0..60)
                    .map(|i| {
                        let broken = shard == 1 && i == 59;
                        let (extension, bytes) = if broken {
                            ("jpg", b"no".to_vec())
                        } else {
                            ("png", red.clone())
                        };
                        (keys[i].as_str(), extension, bytes, Some(captions[i].as_str()))
                    })
                    .collect();
                let path = dir.join(format!("{shard}.tar"));
                write_shard(&path, &samples).unwrap();
                path
            })
            .collect()
    }

    #[test]
    fn a_sample_of_the_shards_is_seeded_spread_over_every_shard_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = two_shards(dir.path());
        let options = FolderOptions::new(4);
        assert_eq!(count_samples(&paths[0]).unwrap(), 60);
        let ids = |folder: &ImageFolder| -> Vec<String> {
            folder.train.iter().chain(&folder.valid).map(|i| i.id.clone()).collect()
        };
        let (sample, total) = load_shards_sample(&paths, &options, 30, 7).unwrap();
        assert_eq!(total, 120);
        let chosen = ids(&sample);
        // About a quarter of each shard: the hash is uniform, not the first shard's first samples.
        assert!((15..=45).contains(&chosen.len()), "{}", chosen.len());
        for shard in ["0/", "1/"] {
            assert!(chosen.iter().any(|id| id.starts_with(shard)), "{chosen:?}");
        }
        assert_eq!(
            ids(&load_shards_sample(&paths, &options, 30, 7).unwrap().0),
            chosen,
            "same seed, same sample"
        );
        assert_ne!(ids(&load_shards_sample(&paths, &options, 30, 8).unwrap().0), chosen);
        // Asking for as many as there are loads them all, as `load_shards` does.
        let (all, _) = load_shards_sample(&paths, &options, 120, 7).unwrap();
        assert_eq!(ids(&all), ids(&load_shards(&paths, &options).unwrap()));
        assert_eq!(all.report.loaded, 119, "the broken JPEG is skipped");
    }

    #[test]
    fn validation_images_are_the_validation_split_read_only_as_far_as_needed() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = two_shards(dir.path());
        let options = FolderOptions {
            valid_fraction: 0.2,
            ..FolderOptions::new(4)
        };
        let ids = |images: &[ImageCaption]| images.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        let all_valid = load_shards(&paths, &options).unwrap().valid;
        let first_shard = all_valid.iter().filter(|i| i.id.starts_with("0/")).count();
        assert!(first_shard >= 2 && all_valid.len() > first_shard, "{}", all_valid.len());
        for count in [2, first_shard + 1, 1000] {
            let expected = &all_valid[..count.min(all_valid.len())];
            assert_eq!(ids(&validation_images(&paths, &options, count).unwrap()), ids(expected));
        }
        // A third shard that is not a tar file is never opened while the first has enough.
        let garbage = dir.path().join("2.tar");
        std::fs::write(&garbage, b"not a tar file").unwrap();
        paths.push(garbage);
        assert!(load_shards(&paths, &options).is_err());
        assert_eq!(validation_images(&paths, &options, 2).unwrap().len(), 2);
    }

    #[test]
    fn training_captions_are_the_training_splits_read_without_images() {
        let dir = tempfile::tempdir().unwrap();
        let paths = two_shards(dir.path());
        let options = FolderOptions::new(4);
        let captions = training_captions(&paths, &options).unwrap();
        let loaded = load_shards(&paths, &options).unwrap();
        let mut expected: Vec<String> = loaded.train.iter().map(|i| i.caption.clone()).collect();
        // The broken image's caption is a caption all the same (it is in the training split by its hash).
        if !in_valid_split("1/s1-59", options.valid_fraction) {
            expected.push("caption 1 59".into());
        }
        assert_eq!(captions, expected);
        assert!(
            !loaded.valid.is_empty() && captions.len() < 120,
            "validation captions left out"
        );
    }

    #[test]
    fn a_missing_caption_is_an_error_naming_the_sample_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tar");
        write_shard(
            &path,
            &[
                ("a", "png", png([1, 2, 3]), Some("x")),
                ("b", "png", png([1, 2, 3]), None),
            ],
        )
        .unwrap();
        let err = load_shard(&path, &FolderOptions::new(4)).unwrap_err().to_string();
        assert!(err.contains("s.tar:b.txt"), "{err}");
        let allowed = FolderOptions {
            allow_uncaptioned: true,
            valid_fraction: 0.0,
            ..FolderOptions::new(4)
        };
        assert_eq!(load_shard(&path, &allowed).unwrap().train.len(), 2);
    }

    #[test]
    fn json_captions_and_patterns_and_bad_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            ("k.json", br#"{"caption": " a green square "}"#.to_vec()),
            ("k.webp", Vec::new()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_cksum();
            builder.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        std::fs::write(dir.path().join("01.tar"), builder.into_inner().unwrap()).unwrap();
        let options = FolderOptions {
            valid_fraction: 0.0,
            ..FolderOptions::new(4)
        };
        let shard = load_shard(&dir.path().join("01.tar"), &options).unwrap();
        assert_eq!(shard.report.loaded, 0, "the empty webp is skipped");
        let err = load_shards(&[dir.path().join("01.tar")], &options).unwrap_err();
        assert!(matches!(err, DataError::NoImages { .. }), "{err}");

        let pattern = format!("{}/{{01..03}}.tar", dir.path().display());
        let err = shard_paths(&pattern).unwrap_err().to_string();
        assert!(
            err.contains("2 of 3 shards do not exist") && err.contains("02.tar"),
            "{err}"
        );
        std::fs::write(dir.path().join("02.tar"), b"garbage that is not a tar archive").unwrap();
        let err = load_shard(&dir.path().join("02.tar"), &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("02.tar") && err.contains("tar"), "{err}");
        for bad in ["x/{1..}.tar", "x/{a..b}.tar", "x/{5..1}.tar", "x/{1..2.tar"] {
            assert!(shard_paths(bad).is_err(), "{bad}");
        }
        assert!(names_shards(dir.path().to_str().unwrap()) && names_shards("x/{1..2}.tar"));
        assert!(!names_shards("scenes"));
    }
}
