//! Embedded, forward-only migrations per backend (`migrations/{sqlite,postgres}/`), and
//! the listing behind `atom migrate status`.
//!
//! sqlx runs each migration in its own transaction (both engines have transactional DDL),
//! and takes an advisory lock on PostgreSQL so several nodes starting at once migrate once.

use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};

use super::{Db, StorageError};

static SQLITE: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    #[serde(flatten)]
    pub state: MigrationState,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum MigrationState {
    Applied {
        installed_on: String,
    },
    Pending,
    /// Recorded in the database but unknown to this binary: the schema is newer.
    Unknown,
}

/// The highest migration this binary knows for `kind` (`"sqlite"` or `"postgres"`).
pub fn latest_known_version(kind: &str) -> i64 {
    let migrator = if kind == "postgres" { &POSTGRES } else { &SQLITE };
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Where the schema stands, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The highest applied migration; `None` on an empty database.
    pub applied: Option<i64>,
    /// The highest migration this binary knows.
    pub latest: i64,
    /// Migrations this binary knows that the database has not applied.
    pub pending: usize,
}

impl SchemaVersion {
    pub fn of(status: &[MigrationStatus]) -> Self {
        let applied = status.iter().filter(|m| m.state != MigrationState::Pending).map(|m| m.version).max();
        let latest = status.iter().filter(|m| m.state != MigrationState::Unknown).map(|m| m.version).max();
        let pending = status.iter().filter(|m| m.state == MigrationState::Pending).count();
        Self { applied, latest: latest.unwrap_or(0), pending }
    }
}

impl Db {
    /// The migrations compiled into this binary for this backend.
    pub fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &SQLITE,
            Self::Postgres(..) => &POSTGRES,
        }
    }

    /// Applies every pending embedded migration.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        self.migrate_with(self.migrator()).await
    }

    /// Applies `migrator`'s pending migrations; a failure names the migration.
    pub async fn migrate_with(&self, migrator: &Migrator) -> Result<(), StorageError> {
        let result = match self {
            Self::Sqlite(pool) => migrator.run(pool).await,
            Self::Postgres(pool, ..) => migrator.run(pool).await,
        };
        result.map_err(|err| match err {
            MigrateError::ExecuteMigration(_, version) => {
                let description = migrator
                    .iter()
                    .find(|m| m.version == version)
                    .map_or_else(String::new, |m| m.description.to_string());
                StorageError::Migration { version, description, source: err }
            }
            err => StorageError::Migrate(err),
        })
    }

    /// Every migration this binary knows and every one the database has recorded.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StorageError> {
        let applied = self.applied_migrations().await?;
        let mut status: Vec<MigrationStatus> = self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                state: applied
                    .iter()
                    .find(|(v, _, _)| *v == m.version)
                    .map_or(MigrationState::Pending, |(_, _, at)| MigrationState::Applied { installed_on: at.clone() }),
            })
            .collect();
        for (version, description, _) in &applied {
            if !status.iter().any(|s| s.version == *version) {
                status.push(MigrationStatus {
                    version: *version,
                    description: description.clone(),
                    state: MigrationState::Unknown,
                });
            }
        }
        status.sort_by_key(|s| s.version);
        Ok(status)
    }

    pub async fn schema_status(&self) -> Result<SchemaVersion, StorageError> {
        Ok(SchemaVersion::of(&self.migration_status().await?))
    }

    /// `(version, description, installed_on)` of each successful migration.
    async fn applied_migrations(&self) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        super::monitor::timed("migrations.applied", self.read_applied_migrations()).await
    }

    async fn read_applied_migrations(&self) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                let exists: Option<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_optional(pool)
                .await?;
                if exists.is_none() {
                    return Ok(Vec::new());
                }
                sqlx::query_as(
                    "SELECT version, description, CAST(installed_on AS TEXT) FROM _sqlx_migrations \
                     WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await
            }
            Self::Postgres(pool, ..) => {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(pool).await?;
                if exists.is_none() {
                    return Ok(Vec::new());
                }
                sqlx::query_as(
                    "SELECT version, description, installed_on::text FROM _sqlx_migrations \
                     WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await
            }
        }
    }
}
