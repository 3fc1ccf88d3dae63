//! Archive integrity on the suite's backend: every kind of damage (truncated, flipped byte,
//! edited manifest, missing file, newer schema, unreadable manifest, data from another
//! snapshot, other backend) is refused by `verify` and `restore` with a message naming it,
//! and the target database stays as it was; and no archive holds the master key, the
//! database password or another configured secret.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::backup::{back_up, digests_of, manifest_of, share_master_key};
use crate::common::{PgDatabase, TestApp, TestDb, backend_is_postgres, connect_pg, pg_admin_url, run_atom};

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncated,
    FlippedByte,
    EditedRowCount,
    MissingDataFile,
    NewerSchema,
    UnreadableManifest,
    DataFromAnotherSnapshot,
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

fn copy_archive(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("archive") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

impl Damage {
    /// Damages the archive copy in `dir`; `other` is an archive of a later snapshot.
    fn apply(self, dir: &Path, data_file: &str, other: &Path) -> String {
        let data = dir.join(data_file);
        let len = std::fs::metadata(&data).expect("data file").len();
        match self {
            Self::Truncated => {
                std::fs::OpenOptions::new().write(true).open(&data).expect("open").set_len(len / 2).expect("truncate");
                format!("{data_file} is truncated: {} of {len} bytes", len / 2)
            }
            Self::FlippedByte => {
                let mut bytes = std::fs::read(&data).expect("read");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                std::fs::write(&data, bytes).expect("write");
                format!("{data_file} is corrupt: its SHA-256 is")
            }
            Self::EditedRowCount => {
                let mut rows = 0;
                edit_manifest(dir, |m| {
                    let users = m["tables"].as_array_mut().expect("tables").iter_mut().find(|t| t["name"] == "users");
                    let users = users.expect("users");
                    rows = users["rows"].as_u64().expect("rows");
                    users["rows"] = Value::from(rows + 1);
                });
                format!("table users: the manifest says {} row(s), the data holds {rows}", rows + 1)
            }
            Self::MissingDataFile => {
                std::fs::remove_file(&data).expect("remove");
                format!("{data_file} is missing from the archive")
            }
            Self::NewerSchema => {
                edit_manifest(dir, |m| m["schema_version"] = Value::from(9999));
                "schema version 9999, newer than this atom knows".to_owned()
            }
            Self::UnreadableManifest => {
                std::fs::write(dir.join("manifest.json"), "{\"format\": 1, \"backend\": ").expect("write");
                "manifest.json is unreadable".to_owned()
            }
            Self::DataFromAnotherSnapshot => {
                // Consistent file checksums, so only the recomputed table hashes can tell.
                std::fs::copy(other.join(data_file), &data).expect("copy");
                let files = manifest_of(other).files;
                edit_manifest(dir, |m| m["files"] = serde_json::to_value(files).expect("files"));
                "table users: content hash differs from the manifest".to_owned()
            }
        }
    }
}

#[tokio::test]
async fn a_damaged_archive_is_refused_by_verify_and_restore_and_changes_nothing() {
    let mut source = TestApp::spawn().await;
    source.user("user").await;
    source.user("admin").await;
    let out = tempfile::tempdir().expect("dir");
    let good = back_up(&source.db.pairs(), out.path()).await;
    let change = "UPDATE users SET email = 'changed-' || email WHERE role = 'user'";
    match &source.state.db {
        atom::Db::Sqlite(pool) => sqlx::query(change).execute(pool).await.map(drop),
        atom::Db::Postgres(pool, ..) => sqlx::query(change).execute(pool).await.map(drop),
    }
    .expect("content changed, counts not");
    let other = back_up(&source.db.pairs(), out.path()).await;
    source.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db: source_db, .. } = source;

    // The target has data of its own and the archive's master key: only the archive's
    // damage can stop the restore (it runs with --force).
    let mut target = TestApp::spawn().await;
    target.user("user").await;
    target.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db: target, .. } = target;
    share_master_key(&source_db, &target);
    let before = digests_of(&target).await;

    let data_file = manifest_of(&good).files[0].name.clone();
    let damages = [
        Damage::Truncated,
        Damage::FlippedByte,
        Damage::EditedRowCount,
        Damage::MissingDataFile,
        Damage::NewerSchema,
        Damage::UnreadableManifest,
        Damage::DataFromAnotherSnapshot,
    ];
    for damage in damages {
        let dir = out.path().join(format!("{damage:?}"));
        copy_archive(&good, &dir);
        let expected = damage.apply(&dir, &data_file, &other);
        let dir = dir.display().to_string();
        let verify = ["backup", "verify", dir.as_str()];
        let restore = ["backup", "restore", "--force", dir.as_str()];
        for (pairs, command) in [(source_db.pairs(), &verify[..]), (target.pairs(), &restore[..])] {
            let (code, stdout, stderr) = run_atom(&pairs, command).await;
            assert_eq!(code, 1, "{damage:?} {command:?}: {stderr}");
            assert!(stderr.contains(&expected), "{damage:?} {command:?}: expected {expected:?} in {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one clear message: {stderr}");
            assert!(!stdout.contains("intact") && !stdout.contains("restored"), "{stdout}");
        }
        assert_eq!(digests_of(&target).await, before, "{damage:?}: the target is unchanged");
    }

    // An archive only restores into the kind of database it came from.
    let dir = out.path().join("other-backend");
    copy_archive(&good, &dir);
    let (other_kind, other_file) =
        if backend_is_postgres() { ("sqlite", "database.sqlite") } else { ("postgres", "database.pgdump") };
    std::fs::rename(dir.join(&data_file), dir.join(other_file)).expect("rename");
    edit_manifest(&dir, |m| {
        m["backend"] = Value::from(other_kind);
        m["files"][0]["name"] = Value::from(other_file);
    });
    let (code, _, stderr) =
        run_atom(&target.pairs(), &["backup", "restore", "--force", &dir.display().to_string()]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("restores only into the kind of database it was taken from"), "{stderr}");
    assert_eq!(digests_of(&target).await, before);
    let leftovers: Vec<String> = std::fs::read_dir(target.dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "no staged copies left: {leftovers:?}");
}

/// A PostgreSQL login role with a password, dropped at the end of the test.
#[derive(Debug)]
struct PgRole {
    name: String,
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let mut conn = connect_pg(&pg_admin_url()).await;
                let _ =
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}"))).execute(&mut conn).await;
            });
        })
        .join();
    }
}

/// A test database owned by a new role whose password is `password`, reached through it.
async fn database_with_password(password: &str) -> (PgRole, TestDb) {
    let role = PgRole { name: format!("atom_r_{}", uuid::Uuid::new_v4().simple()) };
    let mut admin = connect_pg(&pg_admin_url()).await;
    let escaped = password.replace('\'', "''");
    let create = format!("CREATE ROLE {} LOGIN CREATEDB PASSWORD '{escaped}'", role.name);
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await.expect("role");
    let mut db = TestDb {
        dir: tempfile::tempdir().expect("dir"),
        pg: Some(PgDatabase::create().await),
        key_space: uuid::Uuid::new_v4().simple().to_string(),
    };
    let pg = db.pg.as_mut().expect("pg");
    let owner = format!("ALTER DATABASE {} OWNER TO {}", pg.name, role.name);
    sqlx::query(sqlx::AssertSqlSafe(owner)).execute(&mut admin).await.expect("owner");
    let encoded: String = percent_encode(password);
    let (scheme, rest) = pg.url.split_once("://").expect("scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    pg.url = format!("{scheme}://{}:{encoded}@{host}", role.name);
    (role, db)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Backs up `db` served with a master key and a bootstrap admin password from the
/// environment, and asserts that the archive (a PostgreSQL dump's SQL included) holds none of
/// them, nor `db_password` when the database URL carries one; the archive still verifies.
async fn assert_archive_holds_no_secret(db: TestDb, db_password: Option<&str>) {
    let key: Vec<u8> = [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat();
    let key_base64 = base64::engine::general_purpose::STANDARD.encode(&key);
    let admin_password = format!("bootstrap-{}", uuid::Uuid::new_v4().simple());
    let secrets = [
        ("MASTER_KEY", key_base64.as_str()),
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", admin_password.as_str()),
    ];
    let app = TestApp::spawn_on(db, &secrets, axum::Router::new()).await;
    app.login("root@example.com", &admin_password).await;
    let mut pairs = app.db.pairs();
    if let Some(password) = db_password {
        let url = &pairs.iter().find(|(k, _)| k == "DATABASE_URL").expect("database URL").1;
        assert!(url.contains(&percent_encode(password)), "the archive is taken through a URL with the password");
    }
    pairs.extend(secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let out = tempfile::tempdir().expect("dir");
    let archive = back_up(&pairs, out.path()).await;

    let mut haystack = Vec::new();
    for entry in std::fs::read_dir(&archive).expect("archive") {
        let path = entry.expect("entry").path();
        haystack.extend(std::fs::read(&path).expect("read"));
        if path.extension().is_some_and(|e| e == "pgdump") {
            // The dump is compressed: search its SQL too.
            let sql = tokio::process::Command::new("pg_restore").arg("--file=-").arg(&path).output().await;
            let sql = sql.expect("pg_restore runs");
            assert!(sql.status.success());
            haystack.extend(sql.stdout);
        }
    }
    let contains = |needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"root@example.com"), "the search sees the archive's contents");
    assert!(!contains(key_base64.as_bytes()), "master key (base64)");
    assert!(!contains(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key).as_bytes()));
    assert!(!contains(&key), "master key (raw)");
    assert!(!contains(admin_password.as_bytes()), "bootstrap admin password");
    if let Some(password) = db_password {
        assert!(!contains(password.as_bytes()), "database password");
        assert!(!contains(percent_encode(password).as_bytes()), "database password, URL-encoded");
    }

    // And the archive is usable with that key, which the operator keeps apart.
    let (code, stdout, stderr) = run_atom(&pairs, &["backup", "verify", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("decrypt with the configured master key"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn an_archive_never_holds_the_master_key_or_other_configured_secrets() {
    assert_archive_holds_no_secret(TestDb::new().await, None).await;
}

/// Only a PostgreSQL URL carries a password, so this one runs on the local PostgreSQL on
/// every run, the SQLite one included.
#[tokio::test]
async fn a_postgresql_archive_never_holds_the_database_password() {
    let password = format!("pw:{}@x", uuid::Uuid::new_v4().simple());
    let (_role, db) = database_with_password(&password).await;
    assert_archive_holds_no_secret(db, Some(&password)).await;
}
