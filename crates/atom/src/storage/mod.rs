//! The storage spine: one [`Db`] handle over SQLite (the embedded default) or PostgreSQL,
//! chosen at run time from configuration, with its pool, its embedded migrations and the
//! health and pool statistics that `/ready`, `/status` and `/metrics` show.
//!
//! Invariants: every SQL statement of the crate lives in this module tree, one place per
//! query, in both dialects, and runs under a name through [`with_pool!`], [`with_tx!`] or
//! [`monitor::timed`], which time and count it ([`monitor`]); every hot query is listed in
//! [`hot::HOT_QUERIES`] with the index that serves it; a migration runs in a transaction,
//! so a failing one leaves the schema as it was; connection URLs are shown only through
//! [`crate::config::redact_url`]; while PostgreSQL is known to be down, checkouts fail at
//! once instead of waiting out the acquire timeout ([`Availability`]).

/// Runs the query named `$name` against whichever pool a [`Db`] holds, on a connection
/// checked out for it: `with_pool!(db, "users.by_email", |conn| sqlx::query(..).fetch_one(conn).await)`.
/// The same sqlx code serves both backends, so the SQL must be text both engines accept:
/// `$1` placeholders (SQLite reads them positionally), integer times, TEXT ids. Queries
/// that differ by dialect match on the variants and use [`monitor::timed`] themselves.
///
/// The name, `"<table>.<what>"`, is a `&'static str`, in practice a literal at the call
/// site, so that metric labels stay a fixed set; it is what `/metrics` and the slow-query
/// log show (see [`monitor`]).
macro_rules! with_pool {
    (@on $acquire:expr, $name:expr, |$conn:ident| $body:expr) => {
        // Acquired here rather than inside sqlx, so that the wait is measured on its own.
        match $acquire.await {
            Ok(mut pooled) => {
                $crate::storage::monitor::timed($name, async {
                    let $conn = &mut *pooled;
                    $body
                })
                .await
            }
            Err(e) => Err(e),
        }
    };
    ($db:expr, $name:expr, |$conn:ident| $body:expr) => {
        match $db {
            $crate::storage::Db::Sqlite(pool) => {
                with_pool!(@on $crate::storage::monitor::acquire(pool, "sqlite"), $name, |$conn| $body)
            }
            $crate::storage::Db::Postgres(pool, availability) => with_pool!(
                @on availability.acquire($crate::storage::monitor::acquire(pool, "postgres")),
                $name,
                |$conn| $body
            ),
        }
    };
}

/// Like [`with_pool!`] for a [`Tx`]: `$conn` is the transaction's connection.
macro_rules! with_tx {
    ($tx:expr, $name:expr, |$conn:ident| $body:expr) => {
        $crate::storage::monitor::timed($name, async {
            match $tx {
                $crate::storage::Tx::Sqlite(tx) => {
                    let $conn = &mut **tx;
                    $body
                }
                $crate::storage::Tx::Postgres(tx) => {
                    let $conn = &mut **tx;
                    $body
                }
            }
        })
        .await
    };
}

pub mod api_keys;
pub mod audit;
mod availability;
pub mod connection_admin;
pub mod connections;
pub mod conversations;
pub mod encrypted;
pub mod file_lock;
pub mod hot;
mod migrate;
pub mod monitor;
pub mod sessions;
pub mod signing_keys;
pub mod snapshot;
pub mod throttle;
pub mod users;
pub mod webhooks;

use std::str::FromStr;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

pub use availability::Availability;
pub use migrate::{MigrationState, MigrationStatus, SchemaVersion, latest_known_version};

use crate::config::{DatabaseConfig, DatabaseTarget, redact_url};

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("could not create the SQLite directory or file {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not connect to the {kind} database at {target} (gave up after {waited:?})")]
    Connect {
        kind: &'static str,
        target: String,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({description}) failed; the schema was left as it was")]
    Migration {
        version: i64,
        description: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("migrations could not run")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

/// A pooled connection to the configured database. Cheap to clone.
///
/// PostgreSQL comes with its [`Availability`], which every checkout through [`with_pool!`]
/// and [`Db::begin`] passes, so that requests fail fast while the server is down. Code that
/// only needs the pool matches `Db::Postgres(pool, ..)`.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool, Availability),
}

/// A transaction on either backend. Dropped without [`Tx::commit`], it rolls back, so a
/// failure half-way through leaves stored data as it was.
#[derive(Debug)]
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(tx) => tx.commit().await,
            Self::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Pool occupancy, for `/status` and the pool gauges.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PoolStats {
    pub max_size: u32,
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
}

/// Creates a missing SQLite database file, and its missing directories, private to the owner
/// (0600, 0700): it holds password hashes and the audit log. SQLite creates its `-wal` and
/// `-shm` files with the database file's mode, so they are private too. Existing files and
/// directories keep the mode their operator gave them.
fn create_private_sqlite_file(path: &std::path::Path) -> Result<(), StorageError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let create_error = |source| StorageError::CreateDir { path: path.display().to_string(), source };
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StorageError::CreateDir { path: dir.display().to_string(), source })?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(create_error(e)),
    }
}

impl Db {
    /// Opens the pool. PostgreSQL that does not answer is retried with exponential backoff
    /// until `startup_timeout_secs` has passed.
    pub async fn connect(target: &DatabaseTarget, config: &DatabaseConfig) -> Result<Self, StorageError> {
        Self::connect_as(target, config, false).await
    }

    /// Like [`Db::connect`], for operator tools (backup, restore): PostgreSQL connections
    /// are named `atom-backup`, so a restore can tell running servers (`atom`) from itself,
    /// and statements are not logged as slow, since theirs (a `VACUUM INTO`, a
    /// `DROP DATABASE`) are expected to be.
    pub async fn connect_tool(target: &DatabaseTarget, config: &DatabaseConfig) -> Result<Self, StorageError> {
        Self::connect_as(target, config, true).await
    }

    async fn connect_as(target: &DatabaseTarget, config: &DatabaseConfig, tool: bool) -> Result<Self, StorageError> {
        let acquire_timeout = Duration::from_secs(config.acquire_timeout_secs);
        let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
        match target {
            DatabaseTarget::Sqlite { path } => {
                create_private_sqlite_file(path)?;
                let synchronous = match config.sqlite_synchronous {
                    crate::config::SqliteSynchronous::Full => SqliteSynchronous::Full,
                    crate::config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
                };
                let mut options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_millis(config.sqlite_busy_timeout_ms));
                if tool {
                    options = options.disable_statement_logging();
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(config.pool_size)
                    .acquire_timeout(acquire_timeout)
                    .idle_timeout(idle_timeout)
                    .connect_with(options)
                    .await
                    .map_err(|source| StorageError::Connect {
                        kind: "sqlite",
                        target: path.display().to_string(),
                        waited: Duration::ZERO,
                        source,
                    })?;
                Ok(Self::Sqlite(pool))
            }
            DatabaseTarget::Postgres { url } => {
                let shown = redact_url(url.expose_secret());
                let mut options = PgConnectOptions::from_str(url.expose_secret())
                    .map_err(|source| StorageError::Connect {
                        kind: "postgres",
                        target: shown.clone(),
                        waited: Duration::ZERO,
                        source,
                    })?
                    .application_name(if tool { "atom-backup" } else { "atom" });
                if tool {
                    options = options.disable_statement_logging();
                }
                let pool_options = PgPoolOptions::new()
                    .max_connections(config.pool_size)
                    .acquire_timeout(acquire_timeout)
                    .idle_timeout(idle_timeout);
                // Probe with single connections first: the pool's own connect retries until
                // its acquire timeout and then reports only "timed out", hiding the cause.
                let started = Instant::now();
                let deadline = Duration::from_secs(config.startup_timeout_secs);
                let mut backoff = Duration::from_millis(100);
                loop {
                    let remaining = deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
                    let attempt = tokio::time::timeout(remaining, PgConnection::connect_with(&options)).await;
                    let error = match attempt {
                        Ok(Ok(conn)) => {
                            let _ = conn.close().await;
                            break;
                        }
                        Ok(Err(e)) => e,
                        Err(_) => sqlx::Error::PoolTimedOut,
                    };
                    if started.elapsed() + backoff >= deadline {
                        return Err(StorageError::Connect {
                            kind: "postgres",
                            target: shown,
                            waited: started.elapsed(),
                            source: error,
                        });
                    }
                    tracing::warn!(target_db = %shown, error = %error, retry_in = ?backoff, "PostgreSQL is not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                let availability = Availability::new(options.clone(), acquire_timeout);
                let pool = pool_options.connect_with(options).await.map_err(|source| StorageError::Connect {
                    kind: "postgres",
                    target: shown,
                    waited: started.elapsed(),
                    source,
                })?;
                Ok(Self::Postgres(pool, availability))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(..) => "postgres",
        }
    }

    /// One round trip, for `/ready`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        with_pool!(self, "db.ping", |conn| sqlx::query("SELECT 1").execute(conn).await.map(drop))
    }

    /// The installation's id, written by the first migration.
    pub async fn instance_id(&self) -> Result<String, sqlx::Error> {
        with_pool!(self, "instance.id", |conn| {
            sqlx::query_scalar("SELECT instance_id FROM instance WHERE id = 1").fetch_one(conn).await
        })
    }

    pub fn pool_stats(&self) -> PoolStats {
        let (max_size, size, idle) = match self {
            Self::Sqlite(pool) => (pool.options().get_max_connections(), pool.size(), pool.num_idle()),
            Self::Postgres(pool, _) => (pool.options().get_max_connections(), pool.size(), pool.num_idle()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        PoolStats { max_size, size, idle, in_use: size - idle }
    }

    /// Begins a transaction. SQLite takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// deferred transaction that reads and then writes can fail to upgrade its lock.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => monitor::begin("sqlite", pool.begin_with("BEGIN IMMEDIATE")).await.map(Tx::Sqlite),
            Self::Postgres(pool, availability) => {
                availability.acquire(monitor::begin("postgres", pool.begin())).await.map(Tx::Postgres)
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Self::Sqlite(pool) => pool.is_closed(),
            Self::Postgres(pool, _) => pool.is_closed(),
        }
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool, _) => pool.close().await,
        }
    }
}
