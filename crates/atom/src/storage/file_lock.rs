//! An advisory lock beside a SQLite database file (`<database>.lock`), so that a restore,
//! which replaces the file, never runs under a live server.
//!
//! `atom serve` holds the lock shared for as long as it runs (several servers may share a
//! file); `atom backup restore` takes it exclusively. SQLite's own locks cannot tell this:
//! an idle server holds none, yet would keep writing through its open handle to the file a
//! restore renamed away. The lock is the operating system's (`flock`), so it is released
//! when its holder exits, crashed or not, and a stale lock file means nothing.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct DatabaseFileLock {
    _file: File,
    pub path: PathBuf,
}

impl DatabaseFileLock {
    /// The lock file of the database at `db_path`.
    pub fn path_for(db_path: &Path) -> PathBuf {
        let mut name = db_path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
        name.push(".lock");
        db_path.with_file_name(name)
    }

    /// The shared lock of a server; `None` while a restore holds it exclusively.
    pub fn try_shared(db_path: &Path) -> std::io::Result<Option<Self>> {
        Self::try_lock(db_path, false)
    }

    /// The exclusive lock of a restore; `None` while a server (or another restore) holds it.
    pub fn try_exclusive(db_path: &Path) -> std::io::Result<Option<Self>> {
        Self::try_lock(db_path, true)
    }

    fn try_lock(db_path: &Path, exclusive: bool) -> std::io::Result<Option<Self>> {
        let path = Self::path_for(db_path);
        // The first thing a server creates in a fresh data directory: private to the owner,
        // like the database beside it.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path)?;
        let locked = if exclusive { file.try_lock() } else { file.try_lock_shared() };
        match locked {
            Ok(()) => Ok(Some(Self { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
