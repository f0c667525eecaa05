//! Writing files so that a killed process never leaves a half-written one under the real name, and so that an
//! output path a user names never costs them a file they had.
//!
//! A run's own files go through [`replace_atomically`]: each file or directory is first written beside its target
//! under a `.partial` name (`model.mpk` → `model.partial.mpk`, `step-00000100` → `step-00000100.partial`; the
//! extension is kept because some writers, burn's recorders, choose the format from it), then renamed onto the
//! target, which on one file system replaces it in one step. A file replaces only a file and a directory only a
//! directory.
//!
//! A path given on the command line (`generate --out`) goes through [`save_user_image`] / [`write_user_file`]:
//! they refuse a directory, a device or pipe, a symbolic link, and an existing file inside a run directory (its
//! weights, records and reports are written only by the run), write through a temporary file of their own, and
//! report every write error (the data is synced before the rename, on the descriptor that wrote it).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::DataError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn refused(path: &Path, why: impl Into<String>) -> DataError {
    DataError::OutputRefused {
        path: path.to_path_buf(),
        why: why.into(),
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

/// What is at `path`, without following a symbolic link there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Missing,
    File,
    Directory,
    /// A symbolic link, a device, a pipe or a socket.
    Other,
}

fn entry(path: &Path) -> Result<Entry, DataError> {
    match std::fs::symlink_metadata(path) {
        // A path under a file (`file.txt/x.png`) does not exist either.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Entry::Missing)
        }
        Err(source) => Err(DataError::Io {
            path: path.to_path_buf(),
            source,
        }),
        Ok(meta) if meta.is_file() => Ok(Entry::File),
        Ok(meta) if meta.is_dir() => Ok(Entry::Directory),
        Ok(_) => Ok(Entry::Other),
    }
}

/// Removes a leftover partial of a killed earlier write (only ever a `.partial` path this module names).
fn remove_partial(path: &Path) -> Result<(), DataError> {
    match entry(path)? {
        Entry::Missing => Ok(()),
        Entry::Directory => std::fs::remove_dir_all(path).map_err(io(path)),
        Entry::File | Entry::Other => std::fs::remove_file(path).map_err(io(path)),
    }
}

/// Writes `bytes` into a new file at `path` and syncs it on the same descriptor, so that every error — a full disk
/// included, which may only surface at the sync — is returned.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(path))
}

/// Creates or replaces `target` (a file or a directory): `write` fills [`partial_path`]`(target)`, which is then
/// renamed onto `target`. A leftover partial from a killed earlier write is removed first. When `write` fails,
/// `target` is untouched. A directory is replaced only by a directory and a file only by a file; a target that is
/// neither (a device, a pipe, a symbolic link) is refused.
///
/// # Errors
/// What `write` returns; [`DataError::OutputRefused`] for a target of another kind; [`DataError::Io`] (converted
/// into `E`) naming the path that could not be removed or renamed.
pub fn replace_atomically<E: From<DataError>>(
    target: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let before = entry(target)?;
    if before == Entry::Other {
        return Err(refused(
            target,
            "is not a regular file or directory (a link, device, pipe or socket)",
        )
        .into());
    }
    let partial = partial_path(target);
    remove_partial(&partial)?;
    write(&partial)?;
    let written = entry(&partial)?;
    if written == Entry::File {
        // The data must be on disk before the name points at it, or a crash could leave an empty file. (Writers in
        // this module sync on their own descriptor; this covers the others, such as burn's recorders.)
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io(&partial))?;
    }
    match (before, written) {
        (Entry::Directory, Entry::Directory) => std::fs::remove_dir_all(target).map_err(io(target))?,
        (Entry::Directory, _) => {
            remove_partial(&partial)?;
            return Err(refused(target, "is a directory; only a directory may replace it").into());
        }
        (Entry::File, Entry::Directory) => {
            remove_partial(&partial)?;
            return Err(refused(target, "is a file; only a file may replace it").into());
        }
        _ => {}
    }
    std::fs::rename(&partial, target).map_err(io(target))?;
    Ok(())
}

/// Writes `bytes` to `path` through [`replace_atomically`].
///
/// # Errors
/// [`DataError::Io`] naming the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    replace_atomically(path, |partial| write_synced(partial, bytes))
}

/// `image` encoded as a PNG.
fn png_bytes(image: &image::RgbImage, path: &Path) -> Result<Vec<u8>, DataError> {
    encoded(image, image::ImageFormat::Png, path)
}

fn encoded(image: &image::RgbImage, format: image::ImageFormat, path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(bytes.into_inner())
}

/// Saves `image` as a PNG at `path` (creating its parent directories) through [`replace_atomically`]: for a run's
/// own files. For a path a user named, use [`save_user_image`].
///
/// # Errors
/// [`DataError::Io`] naming the file; [`DataError::OutputRefused`] when `path` is a directory or not a file.
pub fn save_png(image: &image::RgbImage, path: &Path) -> Result<(), DataError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let bytes = png_bytes(image, path)?;
    replace_atomically(path, |partial| write_synced(partial, &bytes))
}

/// The files that mark a directory as a run's (a pipeline run, a step of one, or a locked training directory).
const RUN_MARKERS: [&str; 3] = ["run.json", "stage.json", ".lock"];

/// The run directory that `path` lies in, if any: the nearest ancestor holding one of [`RUN_MARKERS`].
fn enclosing_run(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let parent = absolute.parent()?;
    let resolved = parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf());
    resolved
        .ancestors()
        .find(|dir| RUN_MARKERS.iter().any(|marker| dir.join(marker).exists()))
        .map(Path::to_path_buf)
}

/// Checks that `target`, an output path a user named, can be written without losing anything that is there.
///
/// # Errors
/// [`DataError::OutputRefused`] naming `target` and why: it is a directory (or names one, like `.` or `..`), a
/// symbolic link, a device, pipe or socket, an existing file inside a run directory, or a path under a file.
pub fn check_user_output(target: &Path) -> Result<(), DataError> {
    if target.as_os_str().is_empty() || target.file_name().is_none() {
        return Err(refused(
            target,
            "names a directory, not a file; give a file path such as out.png",
        ));
    }
    match entry(target)? {
        Entry::Directory => {
            return Err(refused(
                target,
                format!(
                    "is a directory; give a file path, such as {}",
                    target.join("out.png").display()
                ),
            ));
        }
        Entry::Other => {
            return Err(refused(
                target,
                "is a symbolic link, device, pipe or socket; give the path of a regular file",
            ));
        }
        Entry::File => {
            if let Some(run) = enclosing_run(target) {
                return Err(refused(
                    target,
                    format!(
                        "is a file of the run directory {} (only the run writes its files); give a new name or a \
                         path outside it",
                        run.display()
                    ),
                ));
            }
        }
        Entry::Missing => {}
    }
    let nearest_existing = target
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .find(|a| std::fs::symlink_metadata(a).is_ok());
    if let Some(ancestor) = nearest_existing
        && !ancestor.is_dir()
    {
        return Err(refused(
            target,
            format!("{} is a file, not a directory", ancestor.display()),
        ));
    }
    Ok(())
}

/// Writes `bytes` to `target`, an output path a user named, after [`check_user_output`]: through a temporary file
/// of its own beside the target (never a name that may already exist), synced, then renamed onto it. Parent
/// directories are created. When anything fails, whatever was at `target` is untouched.
///
/// # Errors
/// [`DataError::OutputRefused`] from [`check_user_output`]; [`DataError::Io`] naming the path that could not be
/// written, synced or renamed (a full disk included).
pub fn write_user_file(target: &Path, bytes: &[u8]) -> Result<(), DataError> {
    check_user_output(target)?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(parent)
        .map_err(io(parent))?;
    temporary
        .write_all(bytes)
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(io(target))?;
    temporary.persist(target).map_err(|e| DataError::Io {
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// The image formats [`save_user_image`] writes, by extension.
pub const USER_IMAGE_EXTENSIONS: &str = ".png, .jpg / .jpeg or .webp";

/// The format [`save_user_image`] writes `target` in, after [`check_user_output`]: so that a command can refuse a
/// bad `--out` before its work, not after.
///
/// # Errors
/// [`DataError::OutputRefused`] for an extension other than [`USER_IMAGE_EXTENSIONS`] and for the targets
/// [`check_user_output`] refuses.
pub fn check_user_image(target: &Path) -> Result<image::ImageFormat, DataError> {
    // What is at the path first: "is a directory" says more than "has no image extension".
    check_user_output(target)?;
    let format = match image::ImageFormat::from_path(target) {
        Ok(format @ (image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::WebP)) => format,
        _ => {
            return Err(refused(
                target,
                format!("has no image extension this writes; end it in {USER_IMAGE_EXTENSIONS}"),
            ));
        }
    };
    Ok(format)
}

/// Saves `image` at `target`, an output path a user named, in the format its extension names (PNG, JPEG or WebP),
/// through [`write_user_file`].
///
/// # Errors
/// What [`check_user_image`] refuses; [`DataError::Io`] for a failed write.
pub fn save_user_image(image: &image::RgbImage, target: &Path) -> Result<(), DataError> {
    let format = check_user_image(target)?;
    write_user_file(target, &encoded(image, format, target)?)
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
    fn a_directory_is_never_replaced_by_a_file_nor_a_file_by_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("kept");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside.txt"), b"mine").unwrap();
        let err = write_atomically(&folder, b"png").unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let err = save_png(&image::RgbImage::new(1, 1), &folder).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert_eq!(std::fs::read(folder.join("inside.txt")).unwrap(), b"mine");
        assert!(!partial_path(&folder).exists(), "the partial is cleaned up");

        let file = dir.path().join("file.bin");
        std::fs::write(&file, b"kept").unwrap();
        let err = replace_atomically::<DataError>(&file, |partial| std::fs::create_dir(partial).map_err(io(partial)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a file"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
    }

    #[test]
    fn png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/samples.png");
        let image = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        save_png(&image, &path).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), image);
    }

    /// Every file and directory under `dir`, relative to it, with each file's bytes.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(at) = stack.pop() {
            for item in std::fs::read_dir(&at).unwrap() {
                let path = item.unwrap().path();
                let relative = path.strip_prefix(dir).unwrap().to_path_buf();
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path);
                    found.push((relative, Vec::new()));
                } else {
                    found.push((relative, std::fs::read(&path).unwrap_or_default()));
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_user_output_is_refused_where_writing_would_lose_something_and_nothing_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("folder")).unwrap();
        std::fs::write(root.join("folder/photo.png"), b"a photo").unwrap();
        std::fs::create_dir_all(root.join("runs/demo/lm")).unwrap();
        std::fs::write(root.join("runs/demo/run.json"), b"{}").unwrap();
        std::fs::write(root.join("runs/demo/lm/model.mpk"), b"weights").unwrap();
        std::fs::write(root.join("regular"), b"a file").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("regular"), root.join("link.png")).unwrap();
        let before = snapshot(root);
        let mut cases = vec![
            (root.join("folder"), "is a directory"),
            (root.join("runs/demo"), "is a directory"),
            (root.join("folder/."), "is a directory"),
            (root.join("folder/.."), "names a directory"),
            (PathBuf::from(".."), "names a directory"),
            (PathBuf::new(), "names a directory"),
            (root.join("runs/demo/lm/model.mpk"), "is a file of the run directory"),
            (root.join("runs/demo/run.json"), "is a file of the run directory"),
            (root.join("regular/x.png"), "is a file, not a directory"),
            (root.join("regular/deeper/x.png"), "is a file, not a directory"),
        ];
        #[cfg(unix)]
        cases.push((root.join("link.png"), "symbolic link"));
        for (target, why) in cases {
            let err = write_user_file(&target, b"png bytes").unwrap_err().to_string();
            assert!(err.contains(why), "{}: {err}", target.display());
            assert!(err.contains("not written"), "{err}");
        }
        if Path::new("/dev/null").exists() {
            let err = write_user_file(Path::new("/dev/null"), b"x").unwrap_err().to_string();
            assert!(err.contains("device"), "{err}");
        }
        assert_eq!(snapshot(root), before, "nothing under the directory changed");
    }

    #[test]
    fn a_user_output_replaces_a_plain_file_and_may_be_new_inside_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("keep.png"), b"old").unwrap();
        write_user_file(&root.join("keep.png"), b"new").unwrap();
        assert_eq!(std::fs::read(root.join("keep.png")).unwrap(), b"new");
        std::fs::create_dir_all(root.join("runs/demo")).unwrap();
        std::fs::write(root.join("runs/demo/run.json"), b"{}").unwrap();
        write_user_file(&root.join("runs/demo/mine/out.png"), b"fresh").unwrap();
        assert_eq!(std::fs::read(root.join("runs/demo/mine/out.png")).unwrap(), b"fresh");
        let leftovers: Vec<_> = snapshot(root)
            .into_iter()
            .filter(|(p, _)| p.to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_write_that_fails_is_reported() {
        // /dev/full answers every write with "no space left on device", like a full disk.
        if !Path::new("/dev/full").exists() {
            return;
        }
        let err = write_synced(Path::new("/dev/full"), &[0; 4096])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/dev/full") && err.contains("space"), "{err}");
    }

    #[test]
    fn user_images_take_their_format_from_the_extension_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let image = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90]));
        for (name, format) in [
            ("a.png", image::ImageFormat::Png),
            ("b.JPG", image::ImageFormat::Jpeg),
            ("c.webp", image::ImageFormat::WebP),
        ] {
            let path = dir.path().join(name);
            save_user_image(&image, &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), format, "{name}");
        }
        for name in ["d.txt", "no-extension", "e.gif"] {
            let err = save_user_image(&image, &dir.path().join(name)).unwrap_err().to_string();
            assert!(err.contains(".png"), "{name}: {err}");
            assert!(!dir.path().join(name).exists());
        }
    }
}
