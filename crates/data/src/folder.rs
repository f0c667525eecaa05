//! Image folders with captions: the way users bring their own data.
//!
//! A folder (searched recursively) of PNG, JPEG and WebP images, captioned either by a manifest at its root —
//! `captions.jsonl` (`{"path": "cats/1.png", "caption": "a cat"}` per line) or `captions.csv` (columns `path,caption`)
//! — or by a sidecar text file next to each image (`cats/1.txt`). Images are decoded in parallel, centre-cropped
//! and resized ([`decode_square`]). An unreadable image is skipped and reported in [`LoadReport`], never a crash
//! and never a silently shorter data set; a missing caption is an error naming the image, unless uncaptioned
//! images are allowed. The train/valid split is a hash of each image's relative path: stable when files are
//! added or removed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::imaging::decode_square;
use crate::{DataError, ImageCaption};

/// How to load a folder.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    /// Side of the square images, in pixels.
    pub resolution: u32,
    /// Load images without a caption (with an empty caption) instead of refusing the folder.
    pub allow_uncaptioned: bool,
    /// Fraction of images (by hash of their path) put in the validation split.
    pub valid_fraction: f64,
}

impl FolderOptions {
    /// Options for `resolution` px, captions required, 5% validation.
    pub fn new(resolution: u32) -> Self {
        Self {
            resolution,
            allow_uncaptioned: false,
            valid_fraction: 0.05,
        }
    }
}

/// An image that was found but could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// What loading found: how many images, and which were skipped and why.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Image files found.
    pub found: usize,
    /// Images loaded.
    pub loaded: usize,
    /// Images skipped as unreadable, with reasons.
    pub skipped: Vec<Skipped>,
}

impl LoadReport {
    /// Adds what another load (of another shard) found.
    pub fn add(&mut self, other: LoadReport) {
        self.found += other.found;
        self.loaded += other.loaded;
        self.skipped.extend(other.skipped);
    }

    /// One line for a log: counts, and the first few skipped files by name.
    pub fn summary(&self) -> String {
        let mut line = format!("loaded {} of {} images", self.loaded, self.found);
        if !self.skipped.is_empty() {
            let named: Vec<String> = self
                .skipped
                .iter()
                .take(5)
                .map(|s| format!("{} ({})", s.path.display(), s.reason))
                .collect();
            let more = self.skipped.len().saturating_sub(named.len());
            line += &format!("; skipped {} unreadable: {}", self.skipped.len(), named.join("; "));
            if more > 0 {
                line += &format!("; and {more} more");
            }
        }
        line
    }
}

/// A loaded folder: its two splits and the report.
#[derive(Debug)]
pub struct ImageFolder {
    /// Training images.
    pub train: Vec<ImageCaption>,
    /// Validation images.
    pub valid: Vec<ImageCaption>,
    /// What was found and skipped.
    pub report: LoadReport,
}

const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

#[derive(Deserialize)]
struct ManifestRow {
    path: String,
    caption: String,
}

/// Every image under `root` with its caption, without decoding any: what [`load_image_folder`] will load. A run
/// calls it before any work starts, so that a missing caption is found before hours of training, not after.
///
/// # Errors
/// As [`load_image_folder`], except for decoding (which this does not do).
pub fn captioned_images(root: &Path, allow_uncaptioned: bool) -> Result<Vec<(PathBuf, String, String)>, DataError> {
    let manifest = read_manifest(root)?;
    let paths = list_images(root)?;

    let mut entries = Vec::with_capacity(paths.len());
    let mut uncaptioned = Vec::new();
    for path in paths {
        let relative = relative_name(root, &path);
        let caption = match &manifest {
            Some(captions) => captions.get(&relative).cloned(),
            None => read_sidecar(&path.with_extension("txt"))?,
        }
        .filter(|c| !c.is_empty());
        match caption {
            Some(caption) => entries.push((path, relative, caption)),
            None if allow_uncaptioned => entries.push((path, relative, String::new())),
            None => uncaptioned.push(path),
        }
    }
    if let Some(first) = uncaptioned.first() {
        return Err(DataError::MissingCaption {
            path: first.clone(),
            count: uncaptioned.len(),
            source_of_captions: if manifest.is_some() {
                "the folder's captions manifest"
            } else {
                "a sidecar .txt file"
            },
        });
    }
    Ok(entries)
}

/// Loads every image under `root` with its caption (see the module docs).
///
/// # Errors
/// [`DataError::Io`] when the folder or a manifest cannot be read, [`DataError::Manifest`] for a malformed manifest
/// line, [`DataError::MissingCaption`] for an image without a caption (unless allowed), [`DataError::NoImages`]
/// when nothing loadable is found.
pub fn load_image_folder(root: &Path, options: &FolderOptions) -> Result<ImageFolder, DataError> {
    let entries = captioned_images(root, options.allow_uncaptioned)?;
    let decoded: Vec<Result<ImageCaption, Skipped>> = entries
        .into_par_iter()
        .map(|(path, id, caption)| {
            let image = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode_square(&bytes, options.resolution));
            match image {
                Ok(image) => Ok(ImageCaption { id, caption, image }),
                Err(reason) => Err(Skipped { path, reason }),
            }
        })
        .collect();

    let (train, valid, report) = split_decoded(decoded, options.valid_fraction);
    if report.loaded == 0 {
        return Err(DataError::NoImages {
            root: root.to_path_buf(),
            summary: report.summary(),
        });
    }
    Ok(ImageFolder { train, valid, report })
}

/// The caption in a sidecar text file: `None` when there is none; an error naming the file when it cannot be read
/// or is not UTF-8 (a caption silently dropped would train the image with an empty one).
fn read_sidecar(path: &Path) -> Result<Option<String>, DataError> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DataError::BadCaption {
            path: path.to_path_buf(),
            why: format!("cannot be read ({e})"),
        }),
        Ok(bytes) => String::from_utf8(bytes)
            .map(|text| Some(text.trim().to_string()))
            .map_err(|e| DataError::BadCaption {
                path: path.to_path_buf(),
                why: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            }),
    }
}

/// Sorts decoded items into the train and valid splits (by [`in_valid_split`]) and failures into the report.
pub(crate) fn split_decoded(
    decoded: Vec<Result<ImageCaption, Skipped>>,
    valid_fraction: f64,
) -> (Vec<ImageCaption>, Vec<ImageCaption>, LoadReport) {
    let mut report = LoadReport {
        found: decoded.len(),
        ..Default::default()
    };
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for item in decoded {
        match item {
            Ok(item) if in_valid_split(&item.id, valid_fraction) => valid.push(item),
            Ok(item) => train.push(item),
            Err(skipped) => report.skipped.push(skipped),
        }
    }
    report.loaded = train.len() + valid.len();
    (train, valid, report)
}

/// Whether an item goes to the validation split: a hash of its id, so the split never depends on file order.
pub fn in_valid_split(id: &str, valid_fraction: f64) -> bool {
    let hash = blake3::hash(id.as_bytes());
    let value = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap());
    (value as f64 / u64::MAX as f64) < valid_fraction
}

fn relative_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The images under `root`, sorted, each file once: a directory reached again through a symbolic link (`loop -> .`)
/// is not walked again, and an image reached through several links is listed under its first path in sorted
/// order.
fn list_images(root: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut paths = Vec::new();
    walk_images(root, &mut HashSet::new(), &mut paths)?;
    paths.sort();
    let mut seen = HashSet::new();
    paths.retain(|path| seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())));
    Ok(paths)
}

fn walk_images(dir: &Path, visited: &mut HashSet<PathBuf>, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !visited.insert(dir.canonicalize().map_err(io)?) {
        return Ok(());
    }
    // In sorted order, so that which of two links to one folder is walked does not depend on the file system.
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk_images(&path, visited, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads `captions.jsonl` or `captions.csv` at the root, if there is one: relative path → caption. An image given
/// two different captions is an error naming both lines (the same caption twice is accepted: it says one thing).
fn read_manifest(root: &Path) -> Result<Option<HashMap<String, String>>, DataError> {
    let jsonl = root.join("captions.jsonl");
    let csv_path = root.join("captions.csv");
    let (manifest, rows): (&Path, Vec<(usize, ManifestRow)>) = if jsonl.is_file() {
        let text = std::fs::read_to_string(&jsonl).map_err(|source| DataError::Io {
            path: jsonl.clone(),
            source,
        })?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map(|row| (i + 1, row))
                    .map_err(|e| DataError::Manifest {
                        path: jsonl.clone(),
                        line: i + 1,
                        why: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|rows| (jsonl.as_path(), rows))?
    } else if csv_path.is_file() {
        let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| DataError::Manifest {
            path: csv_path.clone(),
            line: 1,
            why: e.to_string(),
        })?;
        reader
            .deserialize()
            .enumerate()
            .map(|(i, row)| {
                row.map(|row| (i + 2, row)).map_err(|e| DataError::Manifest {
                    path: csv_path.clone(),
                    line: i + 2,
                    why: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|rows| (csv_path.as_path(), rows))?
    } else {
        return Ok(None);
    };
    let mut captions: HashMap<String, (usize, String)> = HashMap::with_capacity(rows.len());
    for (line, row) in rows {
        let path = row.path.trim_start_matches("./").to_string();
        let caption = row.caption.trim().to_string();
        match captions.get(&path) {
            Some((first, earlier)) if *earlier != caption => {
                return Err(DataError::Manifest {
                    path: manifest.to_path_buf(),
                    line,
                    why: format!("{path} already has another caption on line {first}; keep one of the two"),
                });
            }
            Some(_) => {}
            None => {
                captions.insert(path, (line, caption));
            }
        }
    }
    Ok(Some(
        captions
            .into_iter()
            .map(|(path, (_, caption))| (path, caption))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

    /// A folder with mixed formats and sizes, a nested directory, and one corrupt file.
    fn fixture(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("data-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("nested")).unwrap();
        let save = |path: &str, w: u32, h: u32, colour: [u8; 3], format: ImageFormat| {
            DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(colour)))
                .save_with_format(root.join(path), format)
                .unwrap();
        };
        save("red.png", 30, 20, [255, 0, 0], ImageFormat::Png);
        save("green.JPG", 50, 40, [0, 255, 0], ImageFormat::Jpeg);
        save("nested/blue.webp", 16, 16, [0, 0, 255], ImageFormat::WebP);
        std::fs::write(root.join("broken.png"), b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
        std::fs::write(root.join("notes.md"), "not an image").unwrap();
        root
    }

    fn sidecars(root: &Path) {
        for (file, caption) in [
            ("red.txt", "a red card"),
            ("green.txt", "a green card\n"),
            ("nested/blue.txt", "a blue card"),
            ("broken.txt", "a broken card"),
        ] {
            std::fs::write(root.join(file), caption).unwrap();
        }
    }

    #[test]
    fn loads_mixed_formats_and_reports_the_corrupt_file() {
        let root = fixture("mixed");
        sidecars(&root);
        let folder = load_image_folder(
            &root,
            &FolderOptions {
                valid_fraction: 0.0,
                ..FolderOptions::new(8)
            },
        )
        .unwrap();
        assert_eq!(folder.report.found, 4);
        assert_eq!(folder.report.loaded, 3);
        assert_eq!(folder.report.skipped.len(), 1);
        assert_eq!(folder.report.skipped[0].path, root.join("broken.png"));
        assert!(
            folder.report.summary().contains("broken.png"),
            "{}",
            folder.report.summary()
        );
        let mut items: Vec<(String, String, [u8; 3])> = folder
            .train
            .iter()
            .map(|i| (i.id.clone(), i.caption.clone(), i.image.get_pixel(4, 4).0))
            .collect();
        items.sort();
        assert_eq!(items[0].0, "green.JPG");
        assert_eq!(items[0].1, "a green card");
        assert!(items[0].2[1] > 240 && items[0].2[0] < 15, "{:?}", items[0].2);
        assert_eq!(
            (items[1].0.as_str(), items[1].1.as_str(), items[1].2),
            ("nested/blue.webp", "a blue card", [0, 0, 255])
        );
        assert_eq!((items[2].0.as_str(), items[2].2), ("red.png", [255, 0, 0]));
        assert!(folder.train.iter().all(|i| i.image.dimensions() == (8, 8)));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_missing_caption_is_an_error_naming_the_image_unless_allowed() {
        let root = fixture("missing");
        sidecars(&root);
        std::fs::remove_file(root.join("nested/blue.txt")).unwrap();
        let err = load_image_folder(&root, &FolderOptions::new(8)).unwrap_err();
        assert!(
            matches!(&err, DataError::MissingCaption { path, count: 1, .. } if path.ends_with("nested/blue.webp")),
            "{err}"
        );
        let allowed = FolderOptions {
            allow_uncaptioned: true,
            valid_fraction: 0.0,
            ..FolderOptions::new(8)
        };
        let folder = load_image_folder(&root, &allowed).unwrap();
        assert_eq!(
            folder
                .train
                .iter()
                .find(|i| i.id == "nested/blue.webp")
                .unwrap()
                .caption,
            ""
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn manifests_caption_images_and_bad_lines_are_named() {
        let root = fixture("manifest");
        std::fs::write(
            root.join("captions.jsonl"),
            "{\"path\": \"red.png\", \"caption\": \"red\"}\n{\"path\": \"green.JPG\", \"caption\": \"green\"}\n\
             {\"path\": \"nested/blue.webp\", \"caption\": \"blue\"}\n{\"path\": \"broken.png\", \"caption\": \"x\"}\n",
        )
        .unwrap();
        let folder = load_image_folder(
            &root,
            &FolderOptions {
                valid_fraction: 0.0,
                ..FolderOptions::new(8)
            },
        )
        .unwrap();
        assert_eq!(
            folder
                .train
                .iter()
                .find(|i| i.id == "nested/blue.webp")
                .unwrap()
                .caption,
            "blue"
        );

        std::fs::write(
            root.join("captions.jsonl"),
            "{\"path\": \"red.png\", \"caption\": \"red\"}\n{\"path\": \"green.JPG\"}\n",
        )
        .unwrap();
        let err = load_image_folder(&root, &FolderOptions::new(8)).unwrap_err();
        assert!(matches!(err, DataError::Manifest { line: 2, .. }), "{err}");

        // One image, two different captions: named with both lines (the same caption twice says one thing).
        std::fs::write(
            root.join("captions.jsonl"),
            "{\"path\": \"red.png\", \"caption\": \"red\"}\n{\"path\": \"green.JPG\", \"caption\": \"green\"}\n\
             {\"path\": \"red.png\", \"caption\": \"red\"}\n{\"path\": \"./red.png\", \"caption\": \"blue\"}\n",
        )
        .unwrap();
        let err = load_image_folder(&root, &FolderOptions::new(8)).unwrap_err();
        assert!(matches!(err, DataError::Manifest { line: 4, .. }), "{err}");
        assert!(
            err.to_string()
                .contains("red.png already has another caption on line 1"),
            "{err}"
        );

        std::fs::remove_file(root.join("captions.jsonl")).unwrap();
        std::fs::write(
            root.join("captions.csv"),
            "path,caption\nred.png,\"red, bright\"\ngreen.JPG,green\nnested/blue.webp,blue\nbroken.png,x\n",
        )
        .unwrap();
        let folder = load_image_folder(
            &root,
            &FolderOptions {
                valid_fraction: 0.0,
                ..FolderOptions::new(8)
            },
        )
        .unwrap();
        assert_eq!(
            folder.train.iter().find(|i| i.id == "red.png").unwrap().caption,
            "red, bright"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_or_a_linked_folder_loads_each_image_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        std::fs::create_dir_all(root.join("nested")).unwrap();
        let square = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]));
        for name in ["a.png", "b.png", "nested/c.png"] {
            square.save(root.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(".", root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root.join("nested"), root.join("again")).unwrap();
        std::os::unix::fs::symlink(root.join("a.png"), root.join("z-link.png")).unwrap();
        let names: Vec<String> = list_images(&root)
            .unwrap()
            .iter()
            .map(|p| relative_name(&root, p))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.contains(&"a.png".to_string()) && names.contains(&"b.png".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn the_split_is_a_stable_hash_of_the_path() {
        let ids: Vec<String> = (0..2000).map(|i| format!("img/{i}.png")).collect();
        let valid = ids.iter().filter(|id| in_valid_split(id, 0.1)).count();
        assert!((150..250).contains(&valid), "{valid} of 2000 in valid");
        assert!(ids.iter().all(|id| in_valid_split(id, 0.1) == in_valid_split(id, 0.1)));
        assert!(ids.iter().all(|id| !in_valid_split(id, 0.0)));
    }

    #[test]
    fn an_empty_folder_is_an_error() {
        let root = std::env::temp_dir().join(format!("data-folder-empty-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        assert!(matches!(
            load_image_folder(&root, &FolderOptions::new(8)),
            Err(DataError::NoImages { .. })
        ));
        std::fs::remove_dir_all(root).unwrap();
    }
}
