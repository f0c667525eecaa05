//! Writing a run's files so that a killed process never leaves a half-written one under the real name.
//!
//! Every file or directory is first written beside its target under a `.partial` name (`model.mpk` →
//! `model.partial.mpk`, `step-00000100` → `step-00000100.partial`; the extension is kept because some writers,
//! burn's recorders and `image`, choose the format from it), then renamed onto the target, which on one file
//! system replaces it in one step.

use std::path::{Path, PathBuf};

use crate::DataError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where [`replace_atomically`] writes `target` before renaming it: `<stem>.partial[.<extension>]`.
pub fn partial_path(target: &Path) -> PathBuf {
    let stem = target.file_stem().unwrap_or_default().to_os_string();
    let mut name = stem;
    name.push(".partial");
    if let Some(extension) = target.extension() {
        name.push(".");
        name.push(extension);
    }
    target.with_file_name(name)
}

fn remove(path: &Path) -> Result<(), DataError> {
    if path.is_dir() {
        std::fs::remove_dir_all(path).map_err(io(path))
    } else if path.exists() {
        std::fs::remove_file(path).map_err(io(path))
    } else {
        Ok(())
    }
}

/// Creates or replaces `target` (a file or a directory): `write` fills [`partial_path`]`(target)`, which is then
/// renamed onto `target`. A leftover partial from a killed earlier write is removed first. When `write` fails,
/// `target` is untouched.
///
/// # Errors
/// What `write` returns, or [`DataError::Io`] (converted into `E`) naming the path that could not be removed or
/// renamed.
pub fn replace_atomically<E: From<DataError>>(
    target: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let partial = partial_path(target);
    remove(&partial)?;
    write(&partial)?;
    if partial.is_file() {
        // The data must be on disk before the name points at it, or a crash could leave an empty file.
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io(&partial))?;
    }
    if target.is_dir() {
        remove(target)?;
    }
    std::fs::rename(&partial, target).map_err(io(target))?;
    Ok(())
}

/// Writes `bytes` to `path` through [`replace_atomically`].
///
/// # Errors
/// [`DataError::Io`] naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    replace_atomically(path, |partial| std::fs::write(partial, bytes).map_err(io(partial)))
}

/// Saves `image` as a PNG at `path` (creating its parent directories) through [`replace_atomically`].
///
/// # Errors
/// [`DataError::Io`] naming the file.
pub fn save_png(image: &image::RgbImage, path: &Path) -> Result<(), DataError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    replace_atomically(path, |partial| {
        image
            .save_with_format(partial, image::ImageFormat::Png)
            .map_err(|e| DataError::Io {
                path: partial.to_path_buf(),
                source: std::io::Error::other(e),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_target_untouched_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("codes.bin");
        write_atomically(&target, b"old").unwrap();
        let failed: Result<(), DataError> = replace_atomically(&target, |partial| {
            std::fs::write(partial, b"half").unwrap();
            Err(DataError::Io {
                path: partial.to_path_buf(),
                source: std::io::Error::other("disk full"),
            })
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        // The next write clears the leftover partial and lands.
        write_atomically(&target, b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!partial_path(&target).exists());
    }

    #[test]
    fn directories_are_replaced_whole_and_keep_their_extension_rule() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("step-00000002");
        assert_eq!(partial_path(&target), dir.path().join("step-00000002.partial"));
        assert_eq!(partial_path(Path::new("a/model.mpk")), Path::new("a/model.partial.mpk"));
        for content in ["first", "second"] {
            replace_atomically::<DataError>(&target, |partial| {
                std::fs::create_dir(partial).unwrap();
                std::fs::write(partial.join(content), content).unwrap();
                Ok(())
            })
            .unwrap();
        }
        let names: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["second"], "the old directory's files are gone");
    }

    #[test]
    fn png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/samples.png");
        let image = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        save_png(&image, &path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), image);
    }
}
