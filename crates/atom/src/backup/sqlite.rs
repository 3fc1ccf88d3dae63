//! SQLite archives.
//!
//! - Snapshot: `VACUUM INTO` from a pool connection writes a compact, consistent copy while
//!   the server keeps writing (WAL); the digests are then computed by opening that copy
//!   immutable, so they describe exactly the archived bytes.
//! - Verify: the archived file is opened immutable in place; nothing is written.
//! - Restore: the snapshot is copied beside the database, checked there (digests, every
//!   encrypted value), and renamed over the database file: atomic, so the database is the
//!   old one or the new one, never a mix. The server must be stopped; the lock file of
//!   [`DatabaseFileLock`] proves it.

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqlitePool;

use super::manifest::{FileEntry, Manifest, SQLITE_FILE};
use super::{BackupError, Snapshot, archive, check_restored, describe_rows, finish_restore};
use crate::config::{Config, DatabaseTarget};
use crate::crypto::MasterKeyring;
use crate::storage::Db;
use crate::storage::file_lock::DatabaseFileLock;
use crate::storage::snapshot::{checkpoint_truncate, vacuum_into};

pub(super) async fn snapshot(pool: &SqlitePool, archive_dir: &Path) -> Result<Snapshot, BackupError> {
    let file = archive_dir.join(SQLITE_FILE);
    let dest = file.to_str().ok_or_else(|| BackupError::NonUtf8Path(file.clone()))?;
    vacuum_into(pool, dest).await?;
    let copy = Db::open_sqlite_immutable(&file).await?;
    let read = async { Ok::<_, sqlx::Error>((copy.schema_version().await?, copy.table_digests().await?)) }.await;
    copy.close().await;
    let (schema_version, digests) = read?;
    let file = FileEntry::of(&file).await?;
    Ok(Snapshot { schema_version, digests, file })
}

pub(super) async fn verify(
    manifest: &Manifest,
    dir: &Path,
    keyring: Option<&MasterKeyring>,
) -> Result<Option<u64>, BackupError> {
    let db = Db::open_sqlite_immutable(&manifest.data_path(dir)).await?;
    let result = check_restored(&db, manifest, keyring).await;
    db.close().await;
    result
}

/// Returns (migrations applied, encrypted values decrypted).
pub(super) async fn restore(
    config: &Config,
    path: &Path,
    manifest: &Manifest,
    dir: &Path,
    force: bool,
    keyring: &MasterKeyring,
) -> Result<(usize, u64), BackupError> {
    let lock_path = DatabaseFileLock::path_for(path);
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { action, path, source }
    };
    let _lock = DatabaseFileLock::try_exclusive(path)
        .map_err(io("lock", &lock_path))?
        .ok_or_else(|| BackupError::SqliteInUse { path: path.to_path_buf(), lock: lock_path.clone() })?;
    let target = DatabaseTarget::Sqlite { path: path.to_path_buf() };
    if path.exists() {
        prepare_target(config, &target, path, force).await?;
    }

    // Stage beside the database, so the final rename stays within one filesystem.
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "atom.db".into());
    let staged = StagedFile(path.with_file_name(format!(".{file_name}.restore-{}", uuid::Uuid::new_v4().simple())));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        archive::ensure_dir(parent)?;
    }
    tokio::fs::copy(manifest.data_path(dir), &staged.0).await.map_err(io("copy the archive to", &staged.0))?;
    std::fs::File::open(&staged.0).and_then(|f| f.sync_all()).map_err(io("sync", &staged.0))?;
    let copy = Db::open_sqlite_immutable(&staged.0).await?;
    let checked = check_restored(&copy, manifest, Some(keyring)).await;
    copy.close().await;
    checked?;

    // The old database was checkpointed into its file; a WAL left beside it would be
    // replayed into the new file on the next open, so it goes before the switch.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_os_string();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(BackupError::Io { action: "remove", path: PathBuf::from(side), source }),
        }
    }
    std::fs::rename(&staged.0, path).map_err(io("rename the restored database to", path))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        archive::sync_dir(parent)?;
    }

    let db = Db::connect_tool(&target, &config.database).await?;
    let finished = finish_restore(&db, keyring).await;
    db.close().await;
    finished
}

/// Refuses a non-empty target (unless `force`) and folds its WAL into the file, so that
/// no other process still has the old database open when it is replaced.
async fn prepare_target(config: &Config, target: &DatabaseTarget, path: &Path, force: bool) -> Result<(), BackupError> {
    let db = Db::connect_tool(target, &config.database).await?;
    let prepared = async {
        if !force {
            let rows = db.tables_with_rows().await?;
            if !rows.is_empty() {
                return Err(BackupError::NotEmpty { tables: describe_rows(&rows) });
            }
        }
        if let Db::Sqlite(pool) = &db
            && checkpoint_truncate(pool).await?
        {
            return Err(BackupError::SqliteBusy { path: path.to_path_buf() });
        }
        Ok(())
    }
    .await;
    db.close().await;
    prepared
}

/// The staged copy, removed unless it was renamed into place.
struct StagedFile(PathBuf);

impl Drop for StagedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
