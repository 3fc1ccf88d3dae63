//! Archive directories: their names, their creation and retention.
//!
//! An archive is built in a hidden `.atom-backup-<time>.partial` directory and renamed to
//! `atom-backup-<time>` only once its manifest is written and synced, so a directory with the
//! final name is always complete, and a backup that fails or is cancelled removes what it
//! wrote. Archives hold password hashes and encrypted secrets: directories are created 0700
//! and files made 0600.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::BackupError;
use super::manifest::MANIFEST_FILE;

pub const ARCHIVE_PREFIX: &str = "atom-backup-";

/// `atom-backup-20260102T030405.678Z`: UTC, sortable by name, unique per millisecond.
pub fn archive_name(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{ARCHIVE_PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Creates `dir` (and parents) if missing, private to its owner when this creates it.
pub fn ensure_dir(dir: &Path) -> Result<(), BackupError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| BackupError::Io {
        action: "create directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// An archive being written; removed on drop unless [`PartialArchive::commit`]ted.
#[derive(Debug)]
pub struct PartialArchive {
    path: PathBuf,
    final_path: PathBuf,
    committed: bool,
}

impl PartialArchive {
    pub fn create(out_dir: &Path, name: &str) -> Result<Self, BackupError> {
        ensure_dir(out_dir)?;
        let final_path = out_dir.join(name);
        if final_path.exists() {
            return Err(BackupError::Io {
                action: "create",
                path: final_path,
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let path = out_dir.join(format!(".{name}.partial"));
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|source| BackupError::Io {
            action: "create directory",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, final_path, committed: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every file private and durable, then gives the directory its final name.
    pub fn commit(mut self) -> Result<PathBuf, BackupError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| BackupError::Io { action, path, source }
        };
        let entries = std::fs::read_dir(&self.path).map_err(io("list", &self.path))?;
        for entry in entries {
            let path = entry.map_err(io("list", &self.path))?.path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod", &path))?;
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io("sync", &path))?;
        }
        sync_dir(&self.path)?;
        std::fs::rename(&self.path, &self.final_path).map_err(io("rename", &self.path))?;
        self.committed = true;
        if let Some(parent) = self.final_path.parent() {
            sync_dir(parent)?;
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for PartialArchive {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| BackupError::Io {
        action: "sync",
        path: dir.to_path_buf(),
        source,
    })
}

/// The complete archives in `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(BackupError::Io { action: "list", path: dir.to_path_buf(), source }),
    };
    let mut archives: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(ARCHIVE_PREFIX))
                && p.join(MANIFEST_FILE).is_file()
        })
        .collect();
    archives.sort();
    Ok(archives)
}

/// Deletes the oldest archives in `dir` beyond the newest `keep`; returns what it deleted.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let archives = list(dir)?;
    let excess = archives.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for old in archives.into_iter().take(excess) {
        std::fs::remove_dir_all(&old).map_err(|source| BackupError::Io {
            action: "remove",
            path: old.clone(),
            source,
        })?;
        removed.push(old);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time() {
        let a = OffsetDateTime::from_unix_timestamp_nanos(1_767_225_600_123_000_000).expect("time");
        let b = a + time::Duration::milliseconds(1);
        assert_eq!(archive_name(a), "atom-backup-20260101T000000.123Z");
        assert!(archive_name(a) < archive_name(b));
    }

    #[test]
    fn prune_keeps_the_newest_complete_archives_and_ignores_the_rest() {
        let dir = std::env::temp_dir().join(format!("atom-prune-{}", uuid::Uuid::new_v4().simple()));
        for name in ["atom-backup-1", "atom-backup-2", "atom-backup-3", "atom-backup-4"] {
            std::fs::create_dir_all(dir.join(name)).expect("dir");
            std::fs::write(dir.join(name).join(MANIFEST_FILE), "{}").expect("manifest");
        }
        std::fs::create_dir_all(dir.join("atom-backup-0-incomplete")).expect("dir");
        std::fs::create_dir_all(dir.join("unrelated")).expect("dir");
        let removed = prune(&dir, 2).expect("prune");
        assert_eq!(removed, [dir.join("atom-backup-1"), dir.join("atom-backup-2")]);
        assert_eq!(list(&dir).expect("list"), [dir.join("atom-backup-3"), dir.join("atom-backup-4")]);
        assert!(dir.join("atom-backup-0-incomplete").is_dir() && dir.join("unrelated").is_dir());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
