//! The operator commands behind the CLI (`atom migrate`, `atom admin create`, `atom keys …`,
//! `atom audit verify`, `atom backup …`, `atom providers …`): each opens the database itself
//! when it needs one, does one job and reports in plain text. `main.rs` parses arguments and calls in here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::app::{StartError, load_keyring};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext, Verification};
use crate::backup::{self, Manifest};
use crate::cache::{Cache, Redis};
use crate::config::Config;
use crate::connectors;
use crate::crypto::{KEY_FILE_NAME, MasterKeyring};
use crate::error::ErrorChain;
use crate::identity::{accounts, signing};
use crate::storage::{self, Db, MigrationState, SchemaVersion, encrypted};

/// A command's failure: what to print, and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Start(e) => e.exit_code(),
            Self::Failed(_) => 1,
        }
    }
}

fn failed(context: &str, err: &(dyn std::error::Error + 'static)) -> CommandError {
    CommandError::Failed(format!("{context}: {}", ErrorChain(err)))
}

async fn open(config: &Config) -> Result<Db, CommandError> {
    storage::monitor::set_slow_query_threshold(Duration::from_millis(config.database.slow_query_ms));
    let db = Db::connect(&config.database_target().map_err(StartError::from)?, &config.database)
        .await
        .map_err(StartError::from)?;
    Ok(db)
}

/// `atom migrate [status]`.
pub async fn migrate(config: &Config, apply: bool) -> Result<(), CommandError> {
    let db = open(config).await?;
    if apply {
        db.migrate().await.map_err(StartError::from)?;
    }
    let status = db.migration_status().await.map_err(StartError::from)?;
    for m in &status {
        let state = match &m.state {
            MigrationState::Applied { installed_on } => format!("applied {installed_on}"),
            MigrationState::Pending => "pending".to_owned(),
            MigrationState::Unknown => "applied, unknown to this binary (newer schema)".to_owned(),
        };
        println!("{:>6}  {:<32}  {state}", m.version, m.description);
    }
    let version = SchemaVersion::of(&status);
    let applied = version.applied.map_or_else(|| "none".to_owned(), |v| v.to_string());
    eprintln!(
        "{} migration(s), {} pending, on {}; schema version {applied}, latest {}",
        status.len(),
        version.pending,
        db.kind(),
        version.latest
    );
    db.close().await;
    Ok(())
}

/// `atom providers list`: one line per provider (id, name, auth mode, whether this instance's
/// app is configured), after the callback URL admins register at each provider.
pub fn providers_list(config: &Config) -> Result<(), CommandError> {
    let catalog = crate::app::load_catalog(config)?;
    match connectors::callback_url(config.public_url.as_deref()) {
        Some(url) => println!("callback URL: {url}"),
        None => println!("callback URL: (set public_url, ATOM_PUBLIC_URL)"),
    }
    println!("{:<20}  {:<24}  {:<26}  app", "id", "name", "auth mode");
    for t in catalog.iter() {
        let app = match (t.auth_mode.needs_app(), connectors::app_configured(&config.connectors, &t.id)) {
            (false, _) => "not needed",
            (true, true) => "configured",
            (true, false) => "not configured",
        };
        println!("{:<20}  {:<24}  {:<26}  {app}", t.id, t.name, t.auth_mode.as_str());
    }
    eprintln!("{} provider(s)", catalog.len());
    Ok(())
}

/// `atom providers check [--dir D]`: validates the built-in templates and the override
/// directory (`--dir`, else `connectors.providers_dir`), printing every problem as
/// `file: field: message`; fails when there is one.
pub fn providers_check(config: &Config, dir: Option<&Path>) -> Result<(), CommandError> {
    let dir = dir.or(config.connectors.providers_dir.as_deref());
    match connectors::Catalog::load(dir) {
        Ok(catalog) => {
            let from = dir.map(|d| format!(" (with {})", d.display())).unwrap_or_default();
            eprintln!("{} provider template(s) valid{from}", catalog.len());
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            Err(CommandError::Failed(format!("{} problem(s) in the provider templates", errors.len())))
        }
    }
}

/// `atom admin create --email E`, the password from `ATOM_ADMIN_PASSWORD` or standard input.
pub async fn admin_create(config: &Config, email: &str, password: SecretString) -> Result<(), CommandError> {
    let db = open(config).await?;
    db.migrate().await.map_err(StartError::from)?;
    let user =
        accounts::create_admin(&db, email, password).await.map_err(|e| failed("could not create the admin", &e))?;
    println!("created admin {} ({})", user.email, user.id);
    db.close().await;
    Ok(())
}

/// `atom keys rotate-signing`: a new JWT signing key becomes current; tokens signed by the
/// previous one stay valid until they expire. Running servers pick it up within a minute;
/// with Redis their cached JWKS is invalidated at once.
pub async fn rotate_signing(config: &Config) -> Result<(), CommandError> {
    let db = open(config).await?;
    let keyring = load_keyring(config)?;
    let cache = command_cache(config)?;
    signing::load_or_create(&db, &keyring, &cache).await.map_err(|e| failed("signing keys", &e))?;
    let kid = signing::rotate(&db, &keyring, &cache, config.auth.access_ttl_secs, &RequestContext::default())
        .await
        .map_err(|e| failed("rotation", &e))?;
    if let Cache::Redis(redis) = &cache
        && redis.pending_invalidations() > 0
    {
        eprintln!("warning: Redis is unreachable: servers publish the new key within a minute instead of now");
    }
    println!("new signing key {kid} is current");
    db.close().await;
    Ok(())
}

/// The cache the servers share, so that a command's writes invalidate their entries: Redis
/// when configured; otherwise one of the command's own, which reaches no server (they
/// notice within their TTLs).
fn command_cache(config: &Config) -> Result<Cache, CommandError> {
    let redis = Redis::from_config(config).map_err(StartError::Redis)?;
    Ok(Cache::from_config(&config.cache, redis))
}

/// The key file rotation reads and rewrites.
fn key_file(config: &Config) -> Result<PathBuf, CommandError> {
    if config.master_key.is_some() {
        return Err(CommandError::Failed(
            "master key rotation needs a key file: move ATOM_MASTER_KEY into one (`v1:<key>` with `primary = 1`) \
             and set ATOM_MASTER_KEY_FILE"
                .to_owned(),
        ));
    }
    Ok(config.master_key_file.clone().unwrap_or_else(|| config.data_dir.join(KEY_FILE_NAME)))
}

/// `atom keys rotate [--resume]`: adds a master key and makes it primary (unless resuming),
/// re-wraps every data key under it in batches while servers keep running, then drops old
/// keys that nothing uses any more. Interrupted, it is resumed with `--resume`.
pub async fn rotate_master(config: &Config, resume: bool, max_values: Option<u64>) -> Result<(), CommandError> {
    let path = key_file(config)?;
    let db = open(config).await?;
    let mut keyring = MasterKeyring::load(&path).map_err(|e| failed("master key file", &e))?;
    if !resume {
        let version = keyring.add_key_and_make_primary().map_err(|e| failed("new master key", &e))?;
        // Saved before anything is re-wrapped under it, so no value ever needs a key that
        // is not on disk.
        keyring.save(&path).map_err(|e| failed("master key file", &e))?;
        audit::record_alone(
            &db,
            AuditEvent::new(Actor::System, "keys.master_rotated", Outcome::Success, &RequestContext::default())
                .details(serde_json::json!({ "primary_version": version })),
        )
        .await
        .map_err(|e| failed("audit", &e))?;
        println!("master key v{version} is primary");
    }
    let report = encrypted::rewrap_all(&db, &keyring, max_values).await.map_err(|e| failed("re-wrap", &e))?;
    println!(
        "re-wrapped {} value(s); {} already current; {} changed meanwhile",
        report.rewrapped, report.current, report.raced
    );
    if report.incomplete || report.raced > 0 {
        println!("not finished: run `atom keys rotate --resume`");
        db.close().await;
        return Ok(());
    }
    let in_use = encrypted::versions_in_use(&db).await.map_err(|e| failed("key versions", &e))?;
    let primary = keyring.primary_version();
    let unused: Vec<u32> = keyring.versions().filter(|v| *v != primary && !in_use.contains(v)).collect();
    for version in &unused {
        keyring.remove_key(*version).map_err(|e| failed("retire key", &e))?;
    }
    if !unused.is_empty() {
        keyring.save(&path).map_err(|e| failed("master key file", &e))?;
        println!("retired master key(s) {unused:?}");
    }
    db.close().await;
    Ok(())
}

/// `atom audit verify`: walks the hash chain; exit code 1 names the first broken row.
pub async fn audit_verify(config: &Config) -> Result<(), CommandError> {
    let db = open(config).await?;
    let result = audit::verify(&db).await.map_err(|e| failed("audit log", &e))?;
    db.close().await;
    match result {
        Verification::Intact { rows } => {
            println!("audit log intact: {rows} row(s)");
            Ok(())
        }
        Verification::Broken { seq, rows_checked, reason } => Err(CommandError::Failed(format!(
            "audit log tampered at row {seq}: {reason} ({rows_checked} row(s) before it are intact)"
        ))),
    }
}

/// `atom backup create [--out DIR]`: prints the archive's path on standard output.
pub async fn backup_create(config: &Config, out: Option<PathBuf>) -> Result<(), CommandError> {
    let target = config.database_target().map_err(StartError::from)?;
    let db = Db::connect_tool(&target, &config.database).await.map_err(StartError::from)?;
    let dir = out.unwrap_or_else(|| config.backup_dir());
    let created = backup::create(&db, &target, &dir).await;
    db.close().await;
    let created = created.map_err(|e| failed("backup failed", &e))?;
    println!("{}", created.path.display());
    eprintln!("{} in {:.1?}", summary(&created.manifest), created.elapsed);
    Ok(())
}

/// `atom backup verify DIR`.
pub async fn backup_verify(config: &Config, dir: &Path) -> Result<(), CommandError> {
    let verified =
        backup::verify(config, dir).await.map_err(|e| failed(&format!("{} is not usable", dir.display()), &e))?;
    for table in &verified.manifest.tables {
        println!("{:>10}  {}  {}", table.rows, &table.sha256[..table.sha256.len().min(16)], table.name);
    }
    match verified.decrypted {
        Some(n) => println!("{n} encrypted value(s) decrypt with the configured master key"),
        None => println!("encrypted values not checked: no master key is configured"),
    }
    eprintln!("archive intact: {} (checked in {:.1?})", summary(&verified.manifest), verified.elapsed);
    Ok(())
}

/// `atom backup restore DIR [--force]`.
pub async fn backup_restore(config: &Config, dir: &Path, force: bool) -> Result<(), CommandError> {
    let restored = backup::restore(config, dir, force)
        .await
        .map_err(|e| failed(&format!("restore of {} refused", dir.display()), &e))?;
    println!(
        "restored {}; {} migration(s) applied since; {} encrypted value(s) decrypt with the configured master key",
        summary(&restored.manifest),
        restored.migrations_applied,
        restored.decrypted
    );
    eprintln!("restore finished in {:.1?}", restored.elapsed);
    Ok(())
}

fn summary(m: &Manifest) -> String {
    format!(
        "{} backup of {}, schema version {}: {} table(s), {} row(s)",
        m.backend.as_str(),
        m.created_at,
        m.schema_version,
        m.tables.len(),
        m.total_rows()
    )
}
