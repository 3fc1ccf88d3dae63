//! Backups: consistent snapshots taken while the server runs, their verification, and
//! verified restores (`atom backup create|verify|restore`, and scheduled backups in
//! `atom serve`).
//!
//! # Archive
//!
//! A directory `atom-backup-<UTC time>/` holding `manifest.json` ([`Manifest`]: format,
//! atom version, backend, schema version, time, each table's row count and content hash,
//! each file's size and SHA-256) and one data file: `database.sqlite` (SQLite's
//! `VACUUM INTO`) or `database.pgdump` (`pg_dump -Fc`). Counts and hashes are computed from
//! the very snapshot the data file holds (see [`sqlite`] and [`postgres`]).
//!
//! # Invariants
//!
//! - The master key, its file and `ATOM_*` values are never written into an archive; only
//!   what the database holds is, and secrets there are envelope-encrypted.
//! - A verification recomputes everything (sizes, checksums, counts, hashes) from the data;
//!   the manifest is never taken on trust.
//! - A restore changes nothing until the archive has been verified in a scratch place
//!   (a staged file, a scratch database) and its encrypted values decrypt with the configured
//!   keys; the switch itself is atomic (a rename, one transaction). An archive from a newer
//!   schema, or from the other kind of database, is refused before anything is read.
//!
//! # Layout
//!
//! - `manifest`: the manifest and the checks against it.
//! - `archive`: archive directories, their atomic creation and retention.
//! - `sqlite`, `postgres`: snapshot, scratch verification and restore per backend.
//! - `schedule`: the scheduled backups of `atom serve`.
//! - `error`: [`BackupError`].

mod archive;
mod error;
pub mod manifest;
mod postgres;
mod schedule;
mod sqlite;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use time::OffsetDateTime;

pub use archive::{ARCHIVE_PREFIX, list as list_archives, prune};
pub use error::BackupError;
pub use manifest::{Backend, Manifest};
pub use schedule::BackupSchedule;

use crate::config::{Config, DatabaseTarget};
use crate::crypto::{KEY_FILE_NAME, MasterKeyring};
use crate::storage::encrypted::{ENCRYPTED_COLUMNS, check_all_decrypt};
use crate::storage::{Db, latest_known_version};
use manifest::{FORMAT_VERSION, TableEntry};

/// What a backend's snapshot step leaves in the partial archive.
#[derive(Debug)]
struct Snapshot {
    schema_version: i64,
    digests: Vec<crate::storage::snapshot::TableDigest>,
    file: manifest::FileEntry,
}

/// A finished archive.
#[derive(Debug, Clone)]
pub struct Created {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub elapsed: Duration,
}

/// An archive found intact.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// Encrypted values that decrypt with the configured keys; `None` when no key is configured.
    pub decrypted: Option<u64>,
    pub elapsed: Duration,
}

/// A completed restore.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Migrations applied after the restore, for an archive older than this binary.
    pub migrations_applied: usize,
    pub decrypted: u64,
    pub elapsed: Duration,
}

/// Takes a consistent snapshot of `db` into a new archive under `out_dir`, while the
/// server keeps serving. `target` is the configuration `db` was opened from.
pub async fn create(db: &Db, target: &DatabaseTarget, out_dir: &Path) -> Result<Created, BackupError> {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    let partial = archive::PartialArchive::create(out_dir, &archive::archive_name(now))?;
    let snapshot = match (db, target) {
        (Db::Sqlite(pool), DatabaseTarget::Sqlite { .. }) => sqlite::snapshot(pool, partial.path()).await?,
        (Db::Postgres(pool, ..), DatabaseTarget::Postgres { url }) => {
            postgres::snapshot(pool, url, partial.path()).await?
        }
        _ => return Err(BackupError::WrongBackend { archive: db.kind(), target: target.kind() }),
    };
    let manifest = Manifest {
        format: FORMAT_VERSION,
        atom_version: env!("CARGO_PKG_VERSION").to_owned(),
        backend: Backend::of(db.kind()),
        schema_version: snapshot.schema_version,
        created_at: crate::wire::rfc3339(i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)),
        tables: snapshot.digests.into_iter().map(TableEntry::from).collect(),
        files: vec![snapshot.file],
    };
    manifest.write(partial.path())?;
    let path = partial.commit()?;
    Ok(Created { path, manifest, elapsed: started.elapsed() })
}

/// Checks the archive in `dir` without touching the configured database: its files, then its
/// data restored into a scratch place, recounted and rehashed, and its encrypted values
/// decrypted when a master key is configured. A PostgreSQL archive needs the configured
/// PostgreSQL server for its scratch database.
pub async fn verify(config: &Config, dir: &Path) -> Result<Verified, BackupError> {
    let started = Instant::now();
    let manifest = checked_archive(dir).await?;
    let keyring = configured_keyring(config)?;
    let decrypted = match manifest.backend {
        Backend::Sqlite => sqlite::verify(&manifest, dir, keyring.as_ref()).await?,
        Backend::Postgres => {
            let DatabaseTarget::Postgres { url } = config.database_target()? else {
                return Err(BackupError::NeedsPostgres);
            };
            postgres::verify(config, &url, &manifest, dir, keyring.as_ref()).await?
        }
    };
    Ok(Verified { manifest, decrypted, elapsed: started.elapsed() })
}

/// Restores the archive in `dir` into the configured database: verified first, refused into
/// a non-empty database unless `force`, then switched atomically, rechecked, migrated if the
/// archive is older than this binary, and every encrypted value decrypted. The server must
/// not be running (checked: SQLite's lock file, PostgreSQL's `atom` connections).
pub async fn restore(config: &Config, dir: &Path, force: bool) -> Result<Restored, BackupError> {
    let started = Instant::now();
    let target = config.database_target()?;
    let manifest = manifest::Manifest::read(dir)?;
    if manifest.backend != Backend::of(target.kind()) {
        return Err(BackupError::WrongBackend { archive: manifest.backend.as_str(), target: target.kind() });
    }
    let manifest = checked_archive(dir).await?;
    let keyring = configured_keyring(config)?.ok_or(BackupError::NoMasterKey)?;
    let (migrations_applied, decrypted) = match &target {
        DatabaseTarget::Sqlite { path } => sqlite::restore(config, path, &manifest, dir, force, &keyring).await?,
        DatabaseTarget::Postgres { url } => postgres::restore(config, url, &manifest, dir, force, &keyring).await?,
    };
    Ok(Restored { manifest, migrations_applied, decrypted, elapsed: started.elapsed() })
}

/// Reads the manifest, refuses a newer schema, and checks every file's size and checksum.
async fn checked_archive(dir: &Path) -> Result<Manifest, BackupError> {
    let manifest = Manifest::read(dir)?;
    let known = latest_known_version(manifest.backend.as_str());
    if manifest.schema_version > known {
        return Err(BackupError::NewerSchema { archive: manifest.schema_version, known });
    }
    manifest.check_files(dir).await?;
    Ok(manifest)
}

/// Compares a restored copy with the manifest, then decrypts its encrypted values when a
/// keyring is given and the archive's schema has their tables (an older archive is checked
/// again after its migrations). Returns how many values decrypted.
async fn check_restored(
    db: &Db,
    manifest: &Manifest,
    keyring: Option<&MasterKeyring>,
) -> Result<Option<u64>, BackupError> {
    let schema_version = db.schema_version().await?;
    let digests = db.table_digests().await?;
    manifest.check_tables(schema_version, &digests)?;
    let has_tables = ENCRYPTED_COLUMNS.iter().all(|c| digests.iter().any(|d| d.name == c.table));
    match keyring {
        Some(keyring) if has_tables => Ok(Some(check_all_decrypt(db, keyring).await.map_err(BackupError::Decrypt)?)),
        _ => Ok(None),
    }
}

/// After a restore: applies the migrations the archive predates and decrypts every value.
async fn finish_restore(db: &Db, keyring: &MasterKeyring) -> Result<(usize, u64), BackupError> {
    let pending =
        db.migration_status().await?.iter().filter(|m| m.state == crate::storage::MigrationState::Pending).count();
    if pending > 0 {
        db.migrate().await?;
    }
    let decrypted = check_all_decrypt(db, keyring).await.map_err(BackupError::Decrypt)?;
    Ok((pending, decrypted))
}

/// The configured master keyring, or `None` when none is configured. Unlike
/// [`crate::app::load_keyring`] this never generates a key: a fresh key would decrypt
/// nothing, and would leave a key file behind that later looks like the real one.
fn configured_keyring(config: &Config) -> Result<Option<MasterKeyring>, BackupError> {
    if let Some(key) = &config.master_key {
        return MasterKeyring::from_env_value(key.expose_secret()).map(Some).map_err(BackupError::MasterKey);
    }
    let path = match &config.master_key_file {
        Some(path) => path.clone(),
        None => {
            let path = config.data_dir.join(KEY_FILE_NAME);
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    MasterKeyring::load(&path).map(Some).map_err(BackupError::MasterKey)
}

/// A short list of tables and their row counts, for messages.
fn describe_rows(tables: &[(String, u64)]) -> String {
    let mut shown: Vec<String> = tables.iter().take(5).map(|(t, n)| format!("{t}: {n} row(s)")).collect();
    if tables.len() > 5 {
        shown.push(format!("and {} more table(s)", tables.len() - 5));
    }
    shown.join(", ")
}
