//! Embedded migrations on the suite's backend: applied by `serve` and `atom migrate`, listed
//! by `atom migrate status`; a failing migration leaves the schema as it was and is named;
//! a schema newer than the binary is refused; every earlier schema upgrades with its data.
//! Both dialects' files: forward-only, transactional, alike, and never edited once merged.

use std::path::Path;

use atom::Db;
use atom::storage::{MigrationState, StorageError};
use sqlx::migrate::MigrationType;

use crate::common::{TestDb, run_atom, test_config};

async fn open(db: &TestDb) -> Db {
    let config = test_config(db, &[]);
    Db::connect(&config.database_target().expect("target"), &config.database).await.expect("connects")
}

async fn table_exists(db: &Db, table: &str) -> bool {
    match db {
        Db::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(table)
                .fetch_one(pool)
                .await
                .expect("query")
                > 0
        }
        Db::Postgres(pool, ..) => sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(pool)
            .await
            .expect("query")
            .is_some(),
    }
}

async fn execute(db: &Db, sql: &str) {
    match db {
        Db::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.map(drop),
        Db::Postgres(pool, ..) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.map(drop),
    }
    .expect("statement runs");
}

#[tokio::test]
async fn migrations_apply_once_and_are_listed_as_applied() {
    let test_db = TestDb::new().await;
    let db = open(&test_db).await;
    let before = db.migration_status().await.expect("status");
    assert!(!before.is_empty() && before.iter().all(|m| m.state == MigrationState::Pending), "{before:?}");
    db.migrate().await.expect("migrates");
    db.migrate().await.expect("a second run is a no-op");
    let after = db.migration_status().await.expect("status");
    assert!(after.iter().all(|m| matches!(m.state, MigrationState::Applied { .. })), "{after:?}");
    assert_eq!(db.instance_id().await.expect("instance row").len(), 32);
    db.close().await;
}

#[tokio::test]
async fn a_failing_migration_leaves_the_schema_as_it_was_and_is_named() {
    let test_db = TestDb::new().await;
    let db = open(&test_db).await;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(db.kind());
    let dir = tempfile::tempdir().expect("dir");
    for entry in std::fs::read_dir(&source).expect("migrations dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    std::fs::write(
        dir.path().join("9000_half_broken.sql"),
        "CREATE TABLE half_done (id INTEGER PRIMARY KEY);\nINSERT INTO instance_typo (id) VALUES (1);\n",
    )
    .expect("write");
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.expect("migrator");

    let err = db.migrate_with(&migrator).await.expect_err("the broken migration fails");
    match &err {
        StorageError::Migration { version, description, .. } => {
            assert_eq!(*version, 9000);
            assert_eq!(description, "half broken");
        }
        other => panic!("expected a named migration failure, got {other:?}"),
    }
    assert!(err.to_string().contains("migration 9000 (half broken) failed"), "{err}");
    assert!(!table_exists(&db, "half_done").await, "the half-run migration was rolled back");
    assert!(table_exists(&db, "instance").await, "earlier migrations stay applied");
    let status = db.migration_status().await.expect("status");
    assert!(status.iter().all(|m| m.version != 9000), "9000 is not recorded as applied: {status:?}");
    db.close().await;
}

#[tokio::test]
async fn serve_refuses_to_start_when_a_migration_fails() {
    let test_db = TestDb::new().await;
    let db = open(&test_db).await;
    // A table in the way of the first migration, with data that must survive.
    execute(&db, "CREATE TABLE instance (note TEXT); INSERT INTO instance (note) VALUES ('keep me');").await;
    db.close().await;

    let mut env = test_db.pairs();
    env.push(("LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    let (code, _stdout, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("migration 1 (instance) failed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let db = open(&test_db).await;
    let note: String = match &db {
        Db::Sqlite(pool) => sqlx::query_scalar("SELECT note FROM instance").fetch_one(pool).await,
        Db::Postgres(pool, ..) => sqlx::query_scalar("SELECT note FROM instance").fetch_one(pool).await,
    }
    .expect("the existing table is untouched");
    assert_eq!(note, "keep me");
    db.close().await;
}

#[tokio::test]
async fn cli_migrate_applies_and_status_lists() {
    let test_db = TestDb::new().await;
    let env = test_db.pairs();
    let (code, stdout, stderr) = run_atom(&env, &["migrate", "status"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("instance") && stdout.contains("pending"), "{stdout}");

    let (code, _, stderr) = run_atom(&env, &["migrate"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 pending"), "{stderr}");

    let (code, stdout, _) = run_atom(&env, &["migrate", "status"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("applied") && !stdout.contains("pending"), "{stdout}");
}

#[tokio::test]
async fn serve_with_migrations_off_refuses_a_schema_that_is_behind() {
    let test_db = TestDb::new().await;
    let mut env = test_db.pairs();
    env.push(("DATABASE_MIGRATE_ON_START".to_owned(), "false".to_owned()));
    env.push(("LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("pending") && stderr.contains("atom migrate"), "{stderr}");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let test_db = TestDb::new().await;
    let db = open(&test_db).await;
    db.migrate().await.expect("migrates");
    execute(
        &db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999, 'from the future', TRUE, X'00', 0)"
            .replace("X'00'", if db.kind() == "postgres" { "'\\x00'::bytea" } else { "X'00'" })
            .as_str(),
    )
    .await;
    db.close().await;

    let mut env = test_db.pairs();
    env.push(("LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("99999"), "names the unknown migration: {stderr}");
    let (_, stdout, _) = run_atom(&env, &["migrate", "status"]).await;
    assert!(stdout.contains("newer schema"), "{stdout}");
}

/// The first bytes (hex) of each migration's SHA-384, per dialect: a merged migration is never
/// edited, only followed by a new one. A new migration adds its two lines here.
const PINNED_CHECKSUMS: &[(&str, i64, &str)] = &[
    ("postgres", 1, "5e779e8fecddf9af"),
    ("postgres", 2, "e558dfa420191772"),
    ("postgres", 3, "0d5547df60a22a1a"),
    ("postgres", 4, "89e507093a1bdf8b"),
    ("postgres", 5, "d261a728ecc59087"),
    ("postgres", 7, "a925f7be21ec9945"),
    ("postgres", 8, "220ff8c1b550b4b6"),
    ("postgres", 9, "45d2ca560a10415c"),
    ("postgres", 10, "c79a9f10663bab8f"),
    ("sqlite", 1, "754de4a8703e9f20"),
    ("sqlite", 2, "7d08d8e449b2a35b"),
    ("sqlite", 3, "0d5547df60a22a1a"),
    ("sqlite", 4, "89e507093a1bdf8b"),
    ("sqlite", 5, "d261a728ecc59087"),
    ("sqlite", 7, "a925f7be21ec9945"),
    ("sqlite", 8, "220ff8c1b550b4b6"),
    ("sqlite", 9, "b63d80fc87922d0a"),
    ("sqlite", 10, "c79a9f10663bab8f"),
];

async fn migrator_of(dialect: &str) -> sqlx::migrate::Migrator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(dialect);
    sqlx::migrate::Migrator::new(dir).await.expect("migrations load")
}

#[tokio::test]
async fn migrations_are_forward_only_transactional_pinned_and_alike_in_both_dialects() {
    let mut listed = Vec::new();
    for dialect in ["postgres", "sqlite"] {
        let migrator = migrator_of(dialect).await;
        for m in migrator.iter() {
            assert_eq!(m.migration_type, MigrationType::Simple, "{dialect} {}: forward-only, no down file", m.version);
            assert!(!m.no_tx, "{dialect} {}: runs in a transaction (no `-- no-transaction`)", m.version);
            let checksum: String = m.checksum.iter().take(8).map(|b| format!("{b:02x}")).collect();
            listed.push((dialect, m.version, m.description.to_string(), checksum));
        }
    }
    let versions = |dialect: &str| -> Vec<(i64, String)> {
        listed.iter().filter(|m| m.0 == dialect).map(|m| (m.1, m.2.clone())).collect()
    };
    assert_eq!(versions("postgres"), versions("sqlite"), "the same migrations in both dialects");
    let actual: Vec<(&str, i64, &str)> = listed.iter().map(|m| (m.0, m.1, m.3.as_str())).collect();
    assert_eq!(actual, PINNED_CHECKSUMS, "a merged migration was edited, or a new one is not pinned yet");
}

/// Every earlier schema, starting with the foundation release (migration 1), upgrades to the
/// latest with its data intact; `atom migrate status` lists what is applied and pending.
#[tokio::test]
async fn every_earlier_schema_upgrades_to_the_latest_keeping_its_data() {
    // Versions need not be contiguous (branches take numbers as they start): every release is
    // an applied migration's version.
    let versions: Vec<i64> = migrator_of("sqlite").await.iter().map(|m| m.version).collect();
    let latest = *versions.iter().max().expect("migrations");
    for release in versions.iter().copied().filter(|v| *v < latest) {
        let test_db = TestDb::new().await;
        let db = open(&test_db).await;
        match &db {
            Db::Sqlite(pool) => db.migrator().run_to(release, pool).await,
            Db::Postgres(pool, ..) => db.migrator().run_to(release, pool).await,
        }
        .unwrap_or_else(|e| panic!("migrates to {release}: {e}"));
        let instance_id = db.instance_id().await.expect("the foundation release wrote the instance row");
        let version = db.schema_status().await.expect("version");
        let later = versions.iter().filter(|v| **v > release).count();
        assert_eq!((version.applied, version.pending), (Some(release), later));
        let had_users = table_exists(&db, "users").await;
        if had_users {
            execute(
                &db,
                "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, password_changed_at) \
                 VALUES ('old-user', 'old@example.com', 'x', 'user', 1, 1, 1)",
            )
            .await;
            // The identity release's other tables, one row each.
            for insert in [
                "INSERT INTO invites (code_hash, created_by, email, created_at, expires_at) \
                 VALUES ('old-invite', 'old-user', 'new@example.com', 1, 2)",
                "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, created_at, expires_at) \
                 VALUES ('old-rt', 'old-rt-hash', 'old-family', 'old-user', 1, 2)",
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at) \
                 VALUES ('old-key', 'old-user', 'old', 'oldprefix', 'old-key-hash', 'api', 1)",
                "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, created_at, retired_at) \
                 VALUES ('old-kid', 'EdDSA', 'sealed', '{}', 1, 2)",
                "INSERT INTO login_throttle (throttle_key, failures, window_started_at) VALUES ('old', 1, 1)",
                "INSERT INTO audit_log (id, at, actor_type, action, outcome, details, prev_hash, hash) \
                 VALUES ('old-audit', 1, 'system', 'test.seed', 'success', '{}', 'p', 'h')",
            ] {
                execute(&db, insert).await;
            }
        }
        // The conversations release's tables (0004), one row each.
        if had_users && table_exists(&db, "conversations").await {
            for insert in [
                "INSERT INTO conversations (id, title, owner_id, last_seq, created_at, updated_at) \
                 VALUES ('old-conv', 'old', 'old-user', 1, 1, 1)",
                "INSERT INTO conversation_members (conversation_id, user_id, ack_seq, joined_at) \
                 VALUES ('old-conv', 'old-user', 1, 1)",
                "INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body, created_at) \
                 VALUES ('old-msg', 'old-conv', 1, 'old-user', 'old-cmid', 'hello', 1)",
            ] {
                execute(&db, insert).await;
            }
        }
        if table_exists(&db, "connections").await {
            // The connector release's tables.
            for insert in [
                "INSERT INTO provider_apps (provider, client_id, client_secret, settings, created_at, updated_at) \
                 VALUES ('old-provider', 'old-client', 'sealed', '{}', 1, 1)",
                "INSERT INTO connections (id, user_id, provider, auth_kind, account_id, label, status, scopes, params, \
                 credentials, created_at, updated_at) VALUES ('old-connection', 'old-user', 'old-provider', 'oauth2', \
                 'old-account', 'old', 'active', '', '{}', 'sealed', 1, 1)",
                "INSERT INTO connection_authorizations (state_hash, user_id, provider, secrets, scopes, params, \
                 return_to, created_at, expires_at) VALUES ('old-state', 'old-user', 'old-provider', 'sealed', '', \
                 '{}', '', 1, 2)",
            ] {
                execute(&db, insert).await;
            }
        }
        if had_users && table_exists(&db, "webhook_events").await {
            // The webhook release's tables (0009).
            for insert in [
                "INSERT INTO provider_webhook_secrets (provider, secret, created_at, updated_at) \
                 VALUES ('old-provider', 'sealed', 1, 1)",
                "INSERT INTO webhook_events (id, provider, event_id, event_type, payload, owners, received_at) \
                 VALUES ('old-event', 'old-provider', 'old-event-id', 'old.type', '{}', 1, 1)",
                "INSERT INTO webhook_deliveries (event_seq, connection_id, user_id, published_at, created_at) \
                 VALUES ((SELECT seq FROM webhook_events WHERE id = 'old-event'), 'old-connection', 'old-user', 1, 1)",
            ] {
                execute(&db, insert).await;
            }
        }
        // Every data table of this release holds rows, so that the upgrade is seen keeping
        // each one's data: a release that adds a table makes this fail until its seed is added
        // above. (The foundation release holds only the instance row, checked by its id.)
        let bookkeeping = atom::storage::snapshot::BOOKKEEPING_TABLES;
        let rows_before = db.tables_with_rows().await.expect("row counts");
        for table in db.table_names().await.expect("tables") {
            assert!(
                bookkeeping.contains(&table.as_str()) || rows_before.iter().any(|(t, _)| *t == table),
                "table {table} of release {release} is empty: seed it in this test"
            );
        }
        db.close().await;

        let (code, stdout, stderr) = run_atom(&test_db.pairs(), &["migrate", "status"]).await;
        assert_eq!(code, 0, "{stderr}");
        let state_of = |version: i64| {
            stdout.lines().find(|l| l.split_whitespace().next() == Some(version.to_string().as_str())).unwrap_or("")
        };
        assert!(state_of(release).contains("applied"), "{release} applied:\n{stdout}");
        assert!(state_of(latest).contains("pending"), "{latest} pending:\n{stdout}");

        let db = open(&test_db).await;
        db.migrate().await.unwrap_or_else(|e| panic!("upgrades from {release}: {e}"));
        assert_eq!(db.instance_id().await.expect("instance row"), instance_id, "from {release}");
        let version = db.schema_status().await.expect("version");
        assert_eq!((version.applied, version.pending), (Some(latest), 0), "from {release}");
        for table in ["users", "refresh_tokens", "api_keys", "audit_log", "login_throttle"] {
            assert!(table_exists(&db, table).await, "{table} exists after upgrading from {release}");
        }
        let rows_after = db.tables_with_rows().await.expect("row counts");
        for (table, rows) in &rows_before {
            let kept = rows_after.iter().find(|(t, _)| t == table).map_or(0, |(_, n)| *n);
            assert!(kept >= *rows, "{table} kept {kept} of its {rows} row(s) upgrading from {release}");
        }
        if had_users {
            let found = atom::storage::users::by_id(&db, "old-user").await.expect("query");
            assert_eq!(found.map(|u| u.email).as_deref(), Some("old@example.com"), "from {release}");
        }
        db.close().await;
    }
}
