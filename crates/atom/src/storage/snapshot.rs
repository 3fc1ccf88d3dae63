//! The SQL behind backups: the catalog of tables, each table's digest (row count and
//! content hash), the SQLite snapshot (`VACUUM INTO`), PostgreSQL's exported snapshot, and
//! the checks a restore makes on its target.
//!
//! Tables are read from the catalog (`sqlite_master`, `information_schema`), never from a
//! list, so a table a later migration adds is covered without touching this file.
//! `_sqlx_migrations` is included; SQLite's own `sqlite_*` tables are not.
//!
//! # Content hash
//!
//! The SHA-256, as lowercase hex, of:
//!
//! - each column name in catalog order, as its length (u64 big-endian) and its UTF-8 bytes;
//! - then each row in primary-key order (a table without one: ordered by every rendered
//!   column), each column as `0x00` for NULL, or `0x01`, the length (u64 big-endian) and the
//!   UTF-8 bytes of the value rendered as text.
//!
//! A value is rendered by the engine: SQLite `CAST(v AS TEXT)`, except a BLOB as uppercase
//! hex; PostgreSQL `v::text` with the session pinned to UTC, ISO dates and hex `bytea`, and
//! text keys sorted `COLLATE "C"` so the database's locale does not change the order. A hash
//! is therefore comparable only with one from the same kind of database, which is all a
//! restore needs: an archive is restored into the backend it was taken from.
//!
//! Invariant: digests are computed inside one read transaction (or on an immutable file),
//! so counts and hashes of different tables describe the same moment.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};

use super::{Db, StorageError};

/// Tables that a migration alone fills: a database holding rows only there counts as empty.
pub const BOOKKEEPING_TABLES: &[&str] = &["_sqlx_migrations", "instance"];

/// The row count and content hash of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

/// A PostgreSQL transaction whose snapshot has been exported for `pg_dump --snapshot`.
#[derive(Debug)]
pub struct ExportedSnapshot {
    pub tx: sqlx::Transaction<'static, sqlx::Postgres>,
    pub id: String,
}

/// Session settings that make `::text` renderings independent of server defaults.
const PG_CANONICAL_SESSION: &[&str] = &[
    "SET LOCAL TimeZone TO 'UTC'",
    "SET LOCAL DateStyle TO 'ISO, YMD'",
    "SET LOCAL IntervalStyle TO 'postgres'",
    "SET LOCAL extra_float_digits TO 1",
    "SET LOCAL bytea_output TO 'hex'",
];

const PG_SNAPSHOT_BEGIN: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

impl Db {
    /// Opens a SQLite file read-only and immutable: nothing is written to it, not even a
    /// journal, so its checksum stays what it was (archives, staged restores).
    pub async fn open_sqlite_immutable(path: &Path) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true).immutable(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
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

    /// Every table's digest, from one consistent read, sorted by table name.
    pub async fn table_digests(&self) -> Result<Vec<TableDigest>, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => {
                // A deferred transaction: its first read fixes the snapshot for the rest.
                let mut tx = pool.begin().await?;
                let digests = sqlite_digests(&mut tx).await?;
                tx.rollback().await?;
                Ok(digests)
            }
            Self::Postgres(pool, ..) => {
                let mut tx = pool.begin_with(PG_SNAPSHOT_BEGIN).await?;
                let digests = postgres_digests(&mut tx).await?;
                tx.rollback().await?;
                Ok(digests)
            }
        }
    }

    /// The highest successfully applied migration; 0 for a database never migrated.
    pub async fn schema_version(&self) -> Result<i64, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => sqlite_schema_version(&mut *pool.acquire().await?).await,
            Self::Postgres(pool, ..) => postgres_schema_version(&mut *pool.acquire().await?).await,
        }
    }

    /// The tables of the database (its current schema on PostgreSQL), sorted.
    pub async fn table_names(&self) -> Result<Vec<String>, sqlx::Error> {
        match self {
            Self::Sqlite(pool) => sqlite_tables(&mut *pool.acquire().await?).await,
            Self::Postgres(pool, ..) => postgres_tables(&mut *pool.acquire().await?).await,
        }
    }

    /// Tables outside [`BOOKKEEPING_TABLES`] that hold rows, with their counts.
    pub async fn tables_with_rows(&self) -> Result<Vec<(String, u64)>, sqlx::Error> {
        let mut found = Vec::new();
        for table in self.table_names().await? {
            if BOOKKEEPING_TABLES.contains(&table.as_str()) {
                continue;
            }
            let sql = format!("SELECT count(*) FROM {}", quote_ident(&table));
            let count: i64 = with_pool!(self, "snapshot.count_rows", |conn| {
                sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(conn).await
            })?;
            if count > 0 {
                found.push((table, u64::try_from(count).unwrap_or(0)));
            }
        }
        Ok(found)
    }
}

/// Writes a consistent copy of the whole database to `dest`, which must not exist. It reads
/// in one transaction, so writers carry on (WAL) and the copy is one moment's state.
pub async fn vacuum_into(pool: &SqlitePool, dest: &str) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM INTO $1").bind(dest).execute(pool).await.map(drop)
}

/// Checkpoints the WAL into the database file and truncates it, so that the file alone is
/// the whole database (before it is replaced by a restore). True when another connection
/// kept it from completing.
pub async fn checkpoint_truncate(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(pool).await?;
    Ok(busy != 0)
}

/// Opens a repeatable-read transaction and exports its snapshot; digests computed in `tx`
/// and a `pg_dump --snapshot=<id>` see exactly the same data.
pub async fn export_snapshot(pool: &PgPool) -> Result<ExportedSnapshot, sqlx::Error> {
    let mut tx = pool.begin_with(PG_SNAPSHOT_BEGIN).await?;
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut *tx).await?;
    Ok(ExportedSnapshot { tx, id })
}

/// Connections to the current database from running servers (application name `atom`),
/// other than this one.
pub async fn other_server_connections(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'atom' AND pid <> pg_backend_pid()",
    )
    .fetch_one(pool)
    .await
}

/// Creates an empty database on the same server (for a scratch restore). `name` must be a
/// plain identifier chosen by the caller, never user input.
pub async fn create_database(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(name)))).execute(pool).await.map(drop)
}

/// Drops a database, disconnecting whoever is still connected to it.
pub async fn drop_database(pool: &PgPool, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name))))
        .execute(pool)
        .await
        .map(drop)
}

/// SQL that drops `tables` and whatever depends on them, for a script run by `psql`.
pub fn drop_tables_script(tables: &[String]) -> String {
    tables.iter().map(|t| format!("DROP TABLE IF EXISTS {} CASCADE;\n", quote_ident(t))).collect()
}

/// `"name"`, with embedded quotes doubled: an identifier both engines read literally.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn sqlite_tables(conn: &mut SqliteConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )
    .fetch_all(&mut *conn)
    .await?;
    names.sort();
    Ok(names)
}

async fn postgres_tables(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Sorted here rather than by the server, whose collation depends on its locale.
    names.sort();
    Ok(names)
}

/// Digests of every table, read through `conn` (which the caller keeps in one transaction).
pub async fn sqlite_digests(conn: &mut SqliteConnection) -> Result<Vec<TableDigest>, sqlx::Error> {
    let mut digests = Vec::new();
    for table in sqlite_tables(conn).await? {
        let columns: Vec<(String, i64)> = sqlx::query_as("SELECT name, pk FROM pragma_table_info($1) ORDER BY cid")
            .bind(&table)
            .fetch_all(&mut *conn)
            .await?;
        let rendered: Vec<String> = columns
            .iter()
            .map(|(c, _)| {
                let c = quote_ident(c);
                format!("CASE typeof({c}) WHEN 'blob' THEN hex({c}) ELSE CAST({c} AS TEXT) END")
            })
            .collect();
        let mut key: Vec<&(String, i64)> = columns.iter().filter(|(_, pk)| *pk > 0).collect();
        key.sort_by_key(|(_, pk)| *pk);
        let order: Vec<String> = if key.is_empty() {
            (1..=columns.len()).map(|i| i.to_string()).collect()
        } else {
            key.iter().map(|(c, _)| quote_ident(c)).collect()
        };
        let sql = select_sql(&table, &rendered, &order);
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let mut hasher = TableHasher::new(&names);
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            hasher.row((0..names.len()).map(|i| row.try_get::<Option<String>, _>(i)))?;
        }
        drop(rows);
        digests.push(hasher.finish(table));
    }
    Ok(digests)
}

/// Digests of every table in the current schema, read through `conn`, which must be inside
/// a repeatable-read transaction (the session settings are set for that transaction only).
pub async fn postgres_digests(conn: &mut PgConnection) -> Result<Vec<TableDigest>, sqlx::Error> {
    for setting in PG_CANONICAL_SESSION {
        sqlx::query(*setting).execute(&mut *conn).await?;
    }
    let mut digests = Vec::new();
    for table in postgres_tables(conn).await? {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await?;
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT kcu.column_name::text FROM information_schema.table_constraints tc \
             JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name \
             AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name \
             WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema() \
             AND tc.table_name = $1 ORDER BY kcu.ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await?;
        let rendered: Vec<String> = columns.iter().map(|(c, _)| format!("({})::text", quote_ident(c))).collect();
        let collate = |column: &str| {
            let textual = columns
                .iter()
                .any(|(c, t)| c == column && matches!(t.as_str(), "text" | "character varying" | "character"));
            if textual { format!("{} COLLATE \"C\"", quote_ident(column)) } else { quote_ident(column) }
        };
        let order: Vec<String> = if key.is_empty() {
            rendered.iter().map(|r| format!("{r} COLLATE \"C\"")).collect()
        } else {
            key.iter().map(|c| collate(c)).collect()
        };
        let sql = select_sql(&table, &rendered, &order);
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let mut hasher = TableHasher::new(&names);
        let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            hasher.row((0..names.len()).map(|i| row.try_get::<Option<String>, _>(i)))?;
        }
        drop(rows);
        digests.push(hasher.finish(table));
    }
    Ok(digests)
}

pub async fn sqlite_schema_version(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(0);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&mut *conn).await?;
    Ok(version.unwrap_or(0))
}

pub async fn postgres_schema_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text").fetch_one(&mut *conn).await?;
    if exists.is_none() {
        return Ok(0);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&mut *conn).await?;
    Ok(version.unwrap_or(0))
}

fn select_sql(table: &str, rendered: &[String], order: &[String]) -> String {
    let columns = if rendered.is_empty() { "NULL".to_owned() } else { rendered.join(", ") };
    let order = if order.is_empty() { String::new() } else { format!(" ORDER BY {}", order.join(", ")) };
    format!("SELECT {columns} FROM {}{order}", quote_ident(table))
}

/// Feeds the canonical encoding of one table into SHA-256 (see the module docs).
struct TableHasher {
    sha: Sha256,
    rows: u64,
}

impl TableHasher {
    fn new(columns: &[&str]) -> Self {
        let mut sha = Sha256::new();
        for column in columns {
            sha.update((column.len() as u64).to_be_bytes());
            sha.update(column.as_bytes());
        }
        Self { sha, rows: 0 }
    }

    fn row(&mut self, values: impl Iterator<Item = Result<Option<String>, sqlx::Error>>) -> Result<(), sqlx::Error> {
        for value in values {
            match value? {
                None => self.sha.update([0u8]),
                Some(text) => {
                    self.sha.update([1u8]);
                    self.sha.update((text.len() as u64).to_be_bytes());
                    self.sha.update(text.as_bytes());
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(self, name: String) -> TableDigest {
        TableDigest { name, rows: self.rows, sha256: format!("{:x}", self.sha.finalize()) }
    }
}
