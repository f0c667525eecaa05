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
}
