//! Backups on the suite's backend: the round trip (seed every table, back up while writes
//! continue, restore into a fresh database, compare counts and hashes, log in, decrypt every
//! encrypted value, verify the audit chain), restores into a live or non-empty database,
//! secrets kept out of archives, and scheduled backups with retention. Corrupted archives
//! and secrets are in `backup_integrity`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atom::backup::Manifest;
use atom::crypto::{KEY_FILE_NAME, MasterKeyring};
use atom::storage::Db;
use atom::storage::encrypted;
use atom::storage::snapshot::TableDigest;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, TestDb, TestUser, run_atom, test_config};

/// What [`seed`] created, to use after a restore.
#[derive(Debug)]
pub struct Seeded {
    pub user: TestUser,
    pub admin: TestUser,
    pub api_key: String,
}

/// Puts rows into every table that exists, through the API and the CLI: accounts and
/// logins (refresh tokens, audit rows), an API key, an invite, a failed login (throttle),
/// a second signing key (encrypted records). A later issue that adds a table seeds it here;
/// the round trip names any table left empty.
pub async fn seed(app: &TestApp) -> Seeded {
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let created = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "name": "worker" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let api_key = created["key"].as_str().expect("key").to_owned();
    let invite = app
        .client
        .post(app.url("/v1/admin/invites"))
        .bearer_auth(&admin.access_token)
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_eq!(invite.status(), 201);
    let failed = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": "nobody@example.com", "password": "not the password" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(failed.status(), 401);
    let conversation = app
        .client
        .post(app.url("/v1/conversations"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "member_ids": [admin.id] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(conversation.status(), 201);
    let conversation: Value = conversation.json().await.expect("json");
    let id = conversation["id"].as_str().expect("id");
    let message = app
        .client
        .post(app.url(&format!("/v1/conversations/{id}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({ "client_msg_id": "seed", "body": "kept by the backup" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(message.status(), 201);
    let (code, _, stderr) = run_atom(&app.db.pairs(), &["keys", "rotate-signing"]).await;
    assert_eq!(code, 0, "{stderr}");
    app.state.identity.reload_keys().await;
    crate::connectors_keys::seed_vault(app, &admin, &user).await;
    crate::connectors_webhooks::seed_webhooks(app, &admin, &user).await;
    Seeded { user, admin, api_key }
}

pub async fn open_db(db: &TestDb) -> Db {
    let config = test_config(db, &[]);
    Db::connect(&config.database_target().expect("target"), &config.database).await.expect("database opens")
}

pub async fn digests_of(db: &TestDb) -> Vec<TableDigest> {
    let handle = open_db(db).await;
    let digests = handle.table_digests().await.expect("digests");
    handle.close().await;
    digests
}

/// `atom backup create --out OUT` for the database of `pairs`; the archive's path.
pub async fn back_up(pairs: &[(String, String)], out: &Path) -> PathBuf {
    let (code, stdout, stderr) = run_atom(pairs, &["backup", "create", "--out", &out.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    PathBuf::from(stdout.trim())
}

pub fn manifest_of(archive: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(archive.join("manifest.json")).expect("manifest")).expect("manifest parses")
}

/// Gives `to` the master key of `from`, as an operator restores the key kept apart.
pub fn share_master_key(from: &TestDb, to: &TestDb) {
    std::fs::copy(from.dir.path().join(KEY_FILE_NAME), to.dir.path().join(KEY_FILE_NAME)).expect("key copied");
}

pub fn as_manifest_rows(digests: &[TableDigest]) -> Vec<(String, u64, String)> {
    digests.iter().map(|d| (d.name.clone(), d.rows, d.sha256.clone())).collect()
}

pub fn manifest_rows(manifest: &Manifest) -> Vec<(String, u64, String)> {
    manifest.tables.iter().map(|t| (t.name.clone(), t.rows, t.sha256.clone())).collect()
}

async fn execute(db: &Db, sql: &str) {
    match db {
        Db::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.map(drop),
        Db::Postgres(pool, ..) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.map(drop),
    }
    .expect("statement runs");
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Db::Postgres(pool, ..) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .expect("count")
}

#[tokio::test]
async fn a_backup_taken_under_writes_restores_every_table_and_the_service_works_on_it() {
    let app = TestApp::spawn().await;
    let seeded = seed(&app).await;

    // Logins keep writing refresh tokens and audit rows for the whole backup.
    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, url, email) = (app.client.clone(), app.url("/v1/auth/login"), seeded.user.email.clone());
        let (stop, logins) = (Arc::clone(&stop), Arc::clone(&logins));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let response = client
                    .post(&url)
                    .json(&json!({ "email": email, "password": PASSWORD }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 200);
                logins.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while logins.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A backup that logins really overlapped: on a loaded machine one can fall between two
    // logins, so another is taken (each into its own directory).
    let mut overlapped = None;
    let mut outs = Vec::new();
    for _ in 0..10 {
        let out = tempfile::tempdir().expect("dir");
        let sessions_before = count(&app.state.db, "SELECT count(*) FROM refresh_tokens").await;
        let before = logins.load(Ordering::SeqCst);
        let archive = back_up(&app.db.pairs(), out.path()).await;
        let during = logins.load(Ordering::SeqCst) - before;
        outs.push(out);
        if during > 0 {
            overlapped = Some((archive, sessions_before));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let (archive, sessions_before) = overlapped.expect("a login completed while a backup was being taken");

    let manifest = manifest_of(&archive);
    let archived_sessions = manifest.tables.iter().find(|t| t.name == "refresh_tokens").expect("refresh tokens").rows;
    assert!(
        archived_sessions >= u64::try_from(sessions_before).expect("count"),
        "every session written before the backup began is in it: {archived_sessions} < {sessions_before}"
    );
    let live_tables = app.state.db.table_names().await.expect("tables");
    let archived: Vec<String> = manifest.tables.iter().map(|t| t.name.clone()).collect();
    assert_eq!(archived, live_tables, "every table is in the archive");
    for table in &manifest.tables {
        assert!(table.rows > 0, "table {} is empty: seed it in tests/it/backup.rs seed()", table.name);
    }
    let mut files: Vec<String> = std::fs::read_dir(&archive)
        .expect("archive")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let data_file = if manifest.backend.as_str() == "postgres" { "database.pgdump" } else { "database.sqlite" };
    assert_eq!(files, [data_file, "manifest.json"]);

    let (code, stdout, stderr) = run_atom(&app.db.pairs(), &["backup", "verify", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("encrypted value(s) decrypt"), "{stdout}");

    // Restore into a fresh, empty database that has the master key.
    let target = TestDb::new().await;
    share_master_key(&app.db, &target);
    let (code, stdout, stderr) =
        run_atom(&target.pairs(), &["backup", "restore", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0 migration(s) applied"), "{stdout}");
    app.stop().await;

    assert_eq!(as_manifest_rows(&digests_of(&target).await), manifest_rows(&manifest), "restored data = archive");
    let restored = TestApp::spawn_on(target, &[], axum::Router::new()).await;
    let db = &restored.state.db;
    // One consistent moment: each login wrote its refresh token and its audit row together.
    assert_eq!(
        count(db, "SELECT count(*) FROM refresh_tokens").await,
        count(db, "SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND outcome = 'success'").await,
    );

    restored.login(&seeded.user.email, PASSWORD).await;
    let session = restored.login(&seeded.admin.email, PASSWORD).await;
    assert_eq!(session["user"]["role"], "admin");
    assert_eq!(restored.get_as(&seeded.user.access_token, "/v1/me").await.status(), 200, "tokens signed before");
    assert_eq!(restored.get_as(&seeded.api_key, "/v1/me").await.status(), 200, "API key");

    let (code, stdout, stderr) = run_atom(&restored.db.pairs(), &["audit", "verify"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("audit log intact"), "{stdout}");

    let keyring = MasterKeyring::load(&restored.db.dir.path().join(KEY_FILE_NAME)).expect("key");
    let decrypted = encrypted::check_all_decrypt(db, &keyring).await.expect("every encrypted value decrypts");
    // One value per row of each encrypted column's table: signing keys, provider apps,
    // connections, pending authorizations.
    let sealed: u64 = encrypted::ENCRYPTED_COLUMNS
        .iter()
        .map(|c| manifest.tables.iter().find(|t| t.name == c.table).map_or(0, |t| t.rows))
        .sum();
    assert_eq!(decrypted, sealed);
    assert!(decrypted >= 5, "the vault's secrets are among them: {decrypted}");
    restored.stop().await;
}

#[tokio::test]
async fn a_restore_needs_a_stopped_server_and_force_to_replace_a_database_with_data() {
    let mut source = TestApp::spawn().await;
    let seeded = seed(&source).await;
    let out = tempfile::tempdir().expect("dir");
    let archive = back_up(&source.db.pairs(), out.path()).await;
    let manifest = manifest_of(&archive);
    source.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db: source, .. } = source;
    let archive = archive.display().to_string();

    let mut other = TestApp::spawn().await;
    let stranger = other.user("user").await;
    let (code, _, stderr) = run_atom(&other.db.pairs(), &["backup", "restore", "--force", &archive]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("running atom") || stderr.contains("running `atom serve`"), "{stderr}");

    other.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db: target, .. } = other;
    share_master_key(&source, &target);
    // A table the archive does not have (as from a newer schema) goes too, so that the
    // restored database is exactly the archive's.
    let handle = open_db(&target).await;
    execute(&handle, "CREATE TABLE leftover (id TEXT PRIMARY KEY, user_id TEXT REFERENCES users (id))").await;
    execute(&handle, &format!("INSERT INTO leftover VALUES ('x', '{}')", stranger.id)).await;
    handle.close().await;
    let before = digests_of(&target).await;
    let (code, _, stderr) = run_atom(&target.pairs(), &["backup", "restore", &archive]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("the target database is not empty") && stderr.contains("users:"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(digests_of(&target).await, before, "nothing changed");

    let (code, _, stderr) = run_atom(&target.pairs(), &["backup", "restore", "--force", &archive]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(as_manifest_rows(&digests_of(&target).await), manifest_rows(&manifest));
    let restored = TestApp::spawn_on(target, &[], axum::Router::new()).await;
    restored.login(&seeded.user.email, PASSWORD).await;
    let gone = restored
        .client
        .post(restored.url("/v1/auth/login"))
        .json(&json!({ "email": stranger.email, "password": PASSWORD }))
        .send()
        .await
        .expect("sent");
    assert_eq!(gone.status(), 401, "the replaced database's accounts are gone");
    restored.stop().await;
}

#[tokio::test]
async fn an_archive_of_an_older_schema_is_migrated_after_its_restore() {
    // A database at the first migration only, as an older atom left it.
    let source = TestDb::new().await;
    let kind = if crate::common::backend_is_postgres() { "postgres" } else { "sqlite" };
    let first = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(kind).join("0001_instance.sql");
    let migrations = tempfile::tempdir().expect("dir");
    std::fs::copy(&first, migrations.path().join("0001_instance.sql")).expect("copy");
    let migrator = sqlx::migrate::Migrator::new(migrations.path()).await.expect("migrator");
    let handle = open_db(&source).await;
    handle.migrate_with(&migrator).await.expect("first migration");
    handle.close().await;
    let out = tempfile::tempdir().expect("dir");
    let archive = back_up(&source.pairs(), out.path()).await;
    assert_eq!(manifest_of(&archive).schema_version, 1);

    let target = TestDb::new().await;
    MasterKeyring::load_or_generate(target.dir.path()).expect("a master key");
    let (code, stdout, stderr) =
        run_atom(&target.pairs(), &["backup", "restore", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    // Every migration after the first (versions need not be contiguous).
    let pending = std::fs::read_dir(first.parent().expect("dir")).expect("migrations").count() - 1;
    assert!(stdout.contains(&format!("{pending} migration(s) applied since")), "{stdout}");
    let handle = open_db(&target).await;
    assert_eq!(handle.schema_version().await.expect("version"), atom::storage::latest_known_version(kind));
    handle.close().await;
}

#[tokio::test]
async fn scheduled_backups_run_every_interval_and_keep_the_newest() {
    let dir = tempfile::tempdir().expect("dir");
    let backup_dir = dir.path().display().to_string();
    let extra = [("BACKUP_DIR", backup_dir.as_str()), ("BACKUP_INTERVAL_SECS", "1"), ("BACKUP_KEEP", "2")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    app.user("user").await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "only {} scheduled backup(s) within 20 s: {seen:?}", seen.len());
        seen.extend(atom::backup::list_archives(dir.path()).expect("list"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;

    let kept = atom::backup::list_archives(dir.path()).expect("list");
    assert_eq!(kept.len(), 2, "{kept:?}");
    let newest: Vec<&PathBuf> = seen.iter().rev().take(2).collect();
    assert!(kept.iter().all(|k| newest.contains(&k) || !seen.contains(k)), "kept {kept:?} of {seen:?}");
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(atom::backup::ARCHIVE_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "no partial archives left: {leftovers:?}");
    let newest = kept.last().expect("newest").display().to_string();
    let verifier = TestDb::new().await;
    let (code, _, stderr) = run_atom(&verifier.pairs(), &["backup", "verify", &newest]).await;
    assert_eq!(code, 0, "{stderr}");
}

/// An archive holds password hashes and encrypted secrets: private to its owner, and only
/// restored where its secrets decrypt. Every other restore test copies the key first.
#[tokio::test]
async fn archives_are_private_and_a_restore_refuses_a_master_key_that_does_not_decrypt_them() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn().await;
    seed(&app).await;
    let out = tempfile::tempdir().expect("dir");
    let archive = back_up(&app.db.pairs(), out.path()).await;
    let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&archive), 0o700, "the archive directory");
    for entry in std::fs::read_dir(&archive).expect("archive") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    app.stop().await;
    let archive = archive.display().to_string();

    // Another installation's key (valid, 32 bytes), and no key at all: both refused.
    let target = TestDb::new().await;
    let mut wrong_key = target.pairs();
    wrong_key.push(("MASTER_KEY".into(), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()));
    let (code, _, stderr) = run_atom(&wrong_key, &["backup", "restore", &archive]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("do not decrypt with the configured master key"), "{stderr}");
    assert!(!stderr.contains("AAECAwQF"), "the key is never echoed: {stderr}");
    let (code, _, stderr) = run_atom(&target.pairs(), &["backup", "restore", &archive]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.to_ascii_lowercase().contains("master key"), "{stderr}");

    // The target is left as it was: nothing restored into it.
    let config = test_config(&target, &[]);
    let db = Db::connect(&config.database_target().expect("target"), &config.database).await.expect("connects");
    assert_eq!(db.tables_with_rows().await.expect("tables"), Vec::<(String, u64)>::new(), "target left empty");
    db.close().await;
}
