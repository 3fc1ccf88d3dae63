//! [`BackupError`]: every way a backup, a verification or a restore can fail, each with a
//! message an operator can act on. Causes are kept as sources, never stringified, except the
//! standard error of the PostgreSQL tools, which is all they give.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::crypto::CryptoError;
use crate::storage::StorageError;
use crate::storage::encrypted::PassError;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir} is not a backup archive: it has no manifest.json")]
    NotAnArchive { dir: PathBuf },
    #[error("the manifest {path} is unreadable")]
    ManifestUnreadable {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest is invalid: {0}")]
    ManifestInvalid(String),
    #[error("the manifest could not be encoded")]
    ManifestEncode(#[source] serde_json::Error),
    #[error("archive format {found} is not supported; this atom reads format {supported}")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("{name} is missing from the archive")]
    FileMissing { name: String },
    #[error("{name} is truncated: {actual} of {expected} bytes")]
    Truncated { name: String, actual: u64, expected: u64 },
    #[error("{name} has {actual} bytes where the manifest says {expected}")]
    SizeMismatch { name: String, actual: u64, expected: u64 },
    #[error("{name} is corrupt: its SHA-256 is {actual}, the manifest says {expected}")]
    ChecksumMismatch { name: String, expected: String, actual: String },
    #[error("the archive's data does not match its manifest: table {table}: {detail}")]
    Content { table: String, detail: String },
    #[error(
        "the archive has schema version {archive}, newer than this atom knows ({known}): restore it with the atom \
         version that made it or a later one"
    )]
    NewerSchema { archive: i64, known: i64 },
    #[error(
        "the archive is a {archive} backup and the configured database is {target}: an archive restores only into \
         the kind of database it was taken from"
    )]
    WrongBackend { archive: &'static str, target: &'static str },
    #[error(
        "verifying a PostgreSQL archive needs database.url (ATOM_DATABASE_URL) to name a PostgreSQL server, where \
         a scratch database is restored into and dropped"
    )]
    NeedsPostgres,
    #[error(
        "the target database is not empty ({tables}): restore into an empty database, or pass --force to replace \
         its contents"
    )]
    NotEmpty { tables: String },
    #[error("the database {path} is in use by a running `atom serve` (lock {lock}): stop it before restoring")]
    SqliteInUse { path: PathBuf, lock: PathBuf },
    #[error("the database {path} is in use by another process (its WAL could not be checkpointed): stop it first")]
    SqliteBusy { path: PathBuf },
    #[error(
        "{count} connection(s) of running atom servers are open on the target database: stop them before restoring"
    )]
    ServersConnected { count: i64 },
    #[error(
        "no master key is configured (ATOM_MASTER_KEY, ATOM_MASTER_KEY_FILE, or master.key in the data directory): a \
         restore needs the key the archive's secrets are encrypted with, which is never part of a backup"
    )]
    NoMasterKey,
    #[error("the master key could not be loaded")]
    MasterKey(#[source] CryptoError),
    #[error("the archive's encrypted values do not decrypt with the configured master key")]
    Decrypt(#[source] PassError),
    #[error(
        "{tool} was not found on PATH: install the PostgreSQL client tools (pg_dump, pg_restore, psql) of the \
         server's major version or newer"
    )]
    ToolMissing { tool: &'static str },
    #[error("could not run {tool}")]
    ToolSpawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed { tool: &'static str, status: String, stderr: String },
    #[error("the scratch database for verification could not be created (the database user needs CREATEDB)")]
    ScratchDatabase(#[source] sqlx::Error),
    #[error("the database URL cannot be handed to the PostgreSQL tools: {0}")]
    BadUrl(&'static str),
    #[error("the path {0} is not UTF-8, which SQLite's VACUUM INTO needs")]
    NonUtf8Path(PathBuf),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}
