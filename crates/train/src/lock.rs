//! One process per run directory: an advisory lock on `<dir>/.lock`, held while a command writes into the
//! directory. A second `train`, `ablate` or `train-tokenizer` on the same directory is refused at once, naming the
//! process that holds it. The lock is the operating system's (`flock`): it goes away with its process, so a run
//! killed with `kill -9` leaves no stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::TrainError;

/// The lock on a run directory; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `dir` (created if missing), writing this process's id into it.
    ///
    /// # Errors
    /// [`TrainError::Locked`] when another process holds it; [`TrainError::Io`] when the lock file cannot be
    /// opened.
    pub fn acquire(dir: &Path) -> Result<Self, TrainError> {
        Self::take(dir, false)
    }

    /// Takes the lock on `dir` shared with other shared holders (processes that each write files of their own,
    /// such as `encode --shard K/N`): they run together, while an exclusive holder ([`acquire`](Self::acquire))
    /// excludes them all.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub fn acquire_shared(dir: &Path) -> Result<Self, TrainError> {
        Self::take(dir, true)
    }

    fn take(dir: &Path, shared: bool) -> Result<Self, TrainError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TrainError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        let taken = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                return Err(TrainError::Locked {
                    dir: dir.to_path_buf(),
                    owner: owner.trim().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(TrainError::Io { path, source }),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .map_err(io(&path))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An exclusive lock on one file of a run, for what processes that share the run (`encode --shard K/N`) could
/// otherwise write at the same moment: the codes step's record, and a shard's caches when two slices overlap.
/// Written files keep their fixed `.partial` names (so a killed writer's leftover is found and removed); this lock
/// keeps two writers off the same one.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    fn open(path: &Path) -> Result<File, TrainError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Waits until no other holder has `path` locked, then holds it (the file is created if missing).
    pub(crate) fn wait(path: &Path) -> Result<Self, TrainError> {
        let file = Self::open(path)?;
        file.lock().map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { _file: file })
    }

    /// Holds `path` when no other holder does; `None` when one does.
    pub(crate) fn try_take(path: &Path) -> Result<Option<Self>, TrainError> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(TrainError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_released_lock_can_be_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())) && err.contains("already"),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(dir.path()).unwrap();
        assert!(again.path().ends_with(".lock"));
        assert!(
            RunLock::acquire_shared(dir.path()).is_err(),
            "exclusive excludes shared"
        );
        drop(again);
        // Shared holders (one process here, two open files as two encoders would hold) run together; an exclusive
        // taker is refused while they do.
        let (a, b) = (
            RunLock::acquire_shared(dir.path()).unwrap(),
            RunLock::acquire_shared(dir.path()).unwrap(),
        );
        assert!(RunLock::acquire(dir.path()).is_err());
        drop((a, b));
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_file_lock_is_held_by_one_taker_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = FileLock::try_take(&path).unwrap().expect("free");
        assert!(FileLock::try_take(&path).unwrap().is_none(), "held elsewhere");
        let waiter = std::thread::spawn({
            let path = path.clone();
            move || FileLock::wait(&path).map(drop)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits while held");
        drop(held);
        waiter.join().unwrap().unwrap();
        assert!(FileLock::try_take(&path).unwrap().is_some());
    }
}
