//! PostgreSQL archives, through the client tools run as child processes.
//!
//! - Snapshot: a repeatable-read transaction exports its snapshot; `pg_dump -Fc
//!   --snapshot=<id>` dumps exactly that state while the digests are computed inside the
//!   same transaction, and writers carry on meanwhile.
//! - Verify: the dump is restored into a scratch database created on the configured server,
//!   recounted and rehashed there, and the scratch database dropped.
//! - Restore: after the same scratch verification, `pg_restore --clean --if-exists` turns the
//!   dump into SQL that `psql --single-transaction` applies to the target: all or nothing.
//!   Tables of the target that the archive lacks are dropped in that same transaction.
//!
//! Invariant: connection details reach the tools only through `PG*` environment variables
//! of the child process, never its command line (visible to every local user) or a log.

use std::fmt;
use std::path::Path;
use std::process::Stdio;

use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::manifest::{FileEntry, Manifest, POSTGRES_FILE};
use super::{BackupError, Snapshot, check_restored, describe_rows, finish_restore};
use crate::config::{Config, DatabaseTarget};
use crate::crypto::MasterKeyring;
use crate::storage::Db;
use crate::storage::snapshot::{
    create_database, drop_database, drop_tables_script, export_snapshot, other_server_connections, postgres_digests,
    postgres_schema_version,
};

/// Connection settings for the PostgreSQL client tools, from `database.url`.
struct PgTools {
    env: Vec<(&'static str, String)>,
    database: Option<String>,
    url: url::Url,
}

/// Every variable [`PgTools`] may set, cleared first so the parent's do not leak in.
const MANAGED_VARS: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGOPTIONS",
];

impl fmt::Debug for PgTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| *k).collect();
        f.debug_struct("PgTools").field("env", &names).field("database", &self.database).finish_non_exhaustive()
    }
}

impl PgTools {
    fn from_url(url: &SecretString) -> Result<Self, BackupError> {
        let url = url::Url::parse(url.expose_secret()).map_err(|_| BackupError::BadUrl("it is not a valid URL"))?;
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| BackupError::BadUrl("a percent-encoded part is not UTF-8"))
        };
        let mut env = Vec::new();
        if let Some(host) = url.host_str().filter(|h| !h.is_empty()) {
            env.push(("PGHOST", host.trim_start_matches('[').trim_end_matches(']').to_owned()));
        }
        if let Some(port) = url.port() {
            env.push(("PGPORT", port.to_string()));
        }
        if !url.username().is_empty() {
            env.push(("PGUSER", decode(url.username())?));
        }
        if let Some(password) = url.password() {
            env.push(("PGPASSWORD", decode(password)?));
        }
        let path = decode(url.path().trim_start_matches('/'))?;
        let mut database = (!path.is_empty()).then_some(path);
        for (key, value) in url.query_pairs() {
            let var = match key.as_ref() {
                "host" => "PGHOST",
                "port" => "PGPORT",
                "user" => "PGUSER",
                "password" => "PGPASSWORD",
                "sslmode" => "PGSSLMODE",
                "sslrootcert" => "PGSSLROOTCERT",
                "sslcert" => "PGSSLCERT",
                "sslkey" => "PGSSLKEY",
                "options" => "PGOPTIONS",
                "dbname" => {
                    database = Some(value.into_owned());
                    continue;
                }
                _ => continue,
            };
            env.retain(|(k, _)| *k != var);
            env.push((var, value.into_owned()));
        }
        Ok(Self { env, database, url })
    }

    /// `tool`, connecting to `database` (or the URL's) with the URL's settings.
    fn command(&self, tool: &'static str, database: Option<&str>) -> Command {
        let mut cmd = Command::new(tool);
        for var in MANAGED_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(db) = database.or(self.database.as_deref()) {
            cmd.env("PGDATABASE", db);
        }
        cmd.env("PGAPPNAME", "atom-backup").env("PGCONNECT_TIMEOUT", "10");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }

    /// The configured URL pointing at another database of the same server.
    fn url_for(&self, database: &str) -> SecretString {
        let mut url = self.url.clone();
        url.set_path(&format!("/{database}"));
        SecretString::from(url.to_string())
    }
}

fn spawn(tool: &'static str, cmd: &mut Command) -> Result<tokio::process::Child, BackupError> {
    cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => BackupError::ToolMissing { tool },
        _ => BackupError::ToolSpawn { tool, source },
    })
}

fn tool_failed(tool: &'static str, status: std::process::ExitStatus, stderr: &[u8]) -> BackupError {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    // The end of the output names the failure; earlier lines are context.
    let start = text.char_indices().rev().nth(1500).map_or(0, |(i, _)| i);
    BackupError::ToolFailed { tool, status: status.to_string(), stderr: text[start..].to_owned() }
}

pub(super) async fn snapshot(pool: &PgPool, url: &SecretString, archive_dir: &Path) -> Result<Snapshot, BackupError> {
    let tools = PgTools::from_url(url)?;
    let file = archive_dir.join(POSTGRES_FILE);
    let mut snapshot = export_snapshot(pool).await?;
    let mut cmd = tools.command("pg_dump", None);
    cmd.args(["--format=custom", "--no-owner", "--no-privileges"])
        .arg(format!("--snapshot={}", snapshot.id))
        .arg("--file")
        .arg(&file);
    let dump = spawn("pg_dump", &mut cmd)?;
    // Counted and hashed while pg_dump runs: both read the exported snapshot, which lives
    // as long as this transaction, so it ends only after pg_dump has finished.
    let digests = postgres_digests(&mut snapshot.tx).await;
    let schema_version = postgres_schema_version(&mut snapshot.tx).await;
    let output = dump.wait_with_output().await.map_err(|source| BackupError::ToolSpawn { tool: "pg_dump", source });
    let _ = snapshot.tx.rollback().await;
    let output = output?;
    if !output.status.success() {
        return Err(tool_failed("pg_dump", output.status, &output.stderr));
    }
    let (digests, schema_version) = (digests?, schema_version?);
    let file = FileEntry::of(&file).await?;
    Ok(Snapshot { schema_version, digests, file })
}

pub(super) async fn verify(
    config: &Config,
    url: &SecretString,
    manifest: &Manifest,
    dir: &Path,
    keyring: Option<&MasterKeyring>,
) -> Result<Option<u64>, BackupError> {
    let tools = PgTools::from_url(url)?;
    let target = DatabaseTarget::Postgres { url: url.clone() };
    let db = Db::connect_tool(&target, &config.database).await?;
    let result = match &db {
        Db::Postgres(pool, ..) => verify_in_scratch(config, &tools, pool, manifest, dir, keyring).await,
        Db::Sqlite(_) => Err(BackupError::NeedsPostgres),
    };
    db.close().await;
    result
}

/// Restores the dump into a new scratch database on the server of `pool`, compares it with
/// the manifest, decrypts (when `keyring` is given), and drops the scratch database.
async fn verify_in_scratch(
    config: &Config,
    tools: &PgTools,
    pool: &PgPool,
    manifest: &Manifest,
    dir: &Path,
    keyring: Option<&MasterKeyring>,
) -> Result<Option<u64>, BackupError> {
    let name = format!("atom_verify_{}", uuid::Uuid::new_v4().simple());
    create_database(pool, &name).await.map_err(BackupError::ScratchDatabase)?;
    let checked = async {
        apply_dump(tools, Some(&name), &manifest.data_path(dir), "").await?;
        let mut db_config = config.database.clone();
        db_config.pool_size = 2;
        db_config.startup_timeout_secs = 5;
        let scratch = Db::connect_tool(&DatabaseTarget::Postgres { url: tools.url_for(&name) }, &db_config).await?;
        let checked = check_restored(&scratch, manifest, keyring).await;
        scratch.close().await;
        checked
    }
    .await;
    if let Err(e) = drop_database(pool, &name).await {
        tracing::warn!(database = %name, error = %e, "could not drop the scratch database of a backup verification");
    }
    checked
}

/// Returns (migrations applied, encrypted values decrypted).
pub(super) async fn restore(
    config: &Config,
    url: &SecretString,
    manifest: &Manifest,
    dir: &Path,
    force: bool,
    keyring: &MasterKeyring,
) -> Result<(usize, u64), BackupError> {
    let tools = PgTools::from_url(url)?;
    let target = DatabaseTarget::Postgres { url: url.clone() };
    let db = Db::connect_tool(&target, &config.database).await?;
    let Db::Postgres(pool, ..) = &db else {
        db.close().await;
        return Err(BackupError::NeedsPostgres);
    };
    let restored = async {
        let servers = other_server_connections(pool).await?;
        if servers > 0 {
            return Err(BackupError::ServersConnected { count: servers });
        }
        if !force {
            let rows = db.tables_with_rows().await?;
            if !rows.is_empty() {
                return Err(BackupError::NotEmpty { tables: describe_rows(&rows) });
            }
        }
        verify_in_scratch(config, &tools, pool, manifest, dir, Some(keyring)).await?;

        // `--clean` drops what the archive has; tables it lacks (a newer target schema)
        // would block pending migrations later, so they go in the same transaction.
        let mut extra = db.table_names().await?;
        extra.retain(|t| !manifest.tables.iter().any(|m| &m.name == t));
        let preamble = drop_tables_script(&extra);
        apply_dump(&tools, None, &manifest.data_path(dir), &preamble).await?;

        // Rechecked on the target itself: the scratch check proved the dump, this proves
        // the transaction applied it.
        check_restored(&db, manifest, None).await?;
        finish_restore(&db, keyring).await
    }
    .await;
    db.close().await;
    restored
}

/// `pg_restore --clean --if-exists -f - DUMP | psql --single-transaction`, with `preamble`
/// run first in the same transaction. psql's input is closed (which commits) only after
/// pg_restore has succeeded; on any failure psql is killed first, so its transaction rolls
/// back and the database is left as it was.
async fn apply_dump(tools: &PgTools, database: Option<&str>, dump: &Path, preamble: &str) -> Result<(), BackupError> {
    let mut script = tools.command("pg_restore", None);
    script.args(["--clean", "--if-exists", "--no-owner", "--no-privileges", "--exit-on-error", "--file=-"]);
    script.arg(dump).stdout(Stdio::piped());
    let mut psql = tools.command("psql", database);
    psql.args(["--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--single-transaction", "--file=-"]);
    psql.stdin(Stdio::piped());

    let mut apply = spawn("psql", &mut psql)?;
    let mut script = match spawn("pg_restore", &mut script) {
        Ok(child) => child,
        Err(e) => {
            let _ = apply.kill().await;
            return Err(e);
        }
    };
    let (Some(mut input), Some(sql)) = (apply.stdin.take(), script.stdout.take()) else {
        let _ = apply.kill().await;
        return Err(BackupError::ToolSpawn { tool: "psql", source: std::io::Error::other("no pipe") });
    };
    let apply_stderr = apply.stderr.take();
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(mut stderr) = apply_stderr {
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut text).await;
        }
        text
    });
    let feed = async {
        // Owned here so that it closes when feeding stops: a pg_restore still writing to a
        // full pipe that nobody reads would otherwise never exit.
        let mut sql = sql;
        input.write_all(preamble.as_bytes()).await?;
        tokio::io::copy(&mut sql, &mut input).await?;
        input.flush().await
    };
    let (fed, scripted) = tokio::join!(feed, script.wait_with_output());
    let scripted = scripted.map_err(|source| BackupError::ToolSpawn { tool: "pg_restore", source });
    let script_ok = matches!(&scripted, Ok(out) if out.status.success());
    if !script_ok || fed.is_err() {
        // Killed before its input closes: psql never reaches the end, never commits. (When
        // psql stopped on an error by itself, the kill finds it gone and its status stays.)
        let _ = apply.start_kill();
        let status = apply.wait().await;
        drop(input);
        let psql_errors = errors.await.unwrap_or_default();
        // psql quitting first (it could not connect, a statement failed) is what stopped the
        // feed, and pg_restore's own failure then is only its consequence.
        if fed.is_ok() || psql_errors.is_empty() {
            let out = scripted?;
            if !out.status.success() {
                return Err(tool_failed("pg_restore", out.status, &out.stderr));
            }
        }
        let status = status.map_err(|source| BackupError::ToolSpawn { tool: "psql", source })?;
        return Err(tool_failed("psql", status, &psql_errors));
    }
    drop(input);
    let status = apply.wait().await.map_err(|source| BackupError::ToolSpawn { tool: "psql", source })?;
    let psql_errors = errors.await.unwrap_or_default();
    if !status.success() {
        return Err(tool_failed("psql", status, &psql_errors));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(url: &str) -> (Vec<(&'static str, String)>, Option<String>) {
        let tools = PgTools::from_url(&SecretString::from(url)).expect("parses");
        (tools.env, tools.database)
    }

    #[test]
    fn url_parts_become_libpq_variables_decoded() {
        let (env, db) = env_of("postgres://atom%40corp:p%40ss%3Aword@db.internal:6543/atom%5Fprod?sslmode=require");
        assert_eq!(db.as_deref(), Some("atom_prod"));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGUSER"), Some("atom@corp"));
        assert_eq!(get("PGPASSWORD"), Some("p@ss:word"));
        assert_eq!(get("PGSSLMODE"), Some("require"));
    }

    #[test]
    fn a_socket_directory_in_the_query_overrides_the_host_and_debug_hides_values() {
        let tools = PgTools::from_url(&SecretString::from("postgres://u:hunter2@localhost/atom?host=/run/postgresql"))
            .expect("parses");
        assert!(tools.env.contains(&("PGHOST", "/run/postgresql".to_owned())));
        assert!(!format!("{tools:?}").contains("hunter2"));
        assert!(tools.url_for("scratch").expose_secret().ends_with("/scratch?host=/run/postgresql"));
    }
}
