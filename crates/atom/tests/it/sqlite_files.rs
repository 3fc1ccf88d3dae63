//! The embedded database's files: private to their owner when the server creates them (they
//! hold password hashes and the audit log), and written with the durability configured
//! (`database.sqlite_synchronous`, FULL by default).

use std::os::unix::fs::PermissionsExt;

use atom::Db;

use crate::common::{TestApp, TestDb};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn a_fresh_data_directory_and_its_database_files_are_private() {
    let db = TestDb::sqlite();
    let data_dir = db.dir.path().join("fresh").join("atom-data");
    let shown = data_dir.display().to_string();
    let app = TestApp::spawn_on(db, &[("DATA_DIR", &shown)], axum::Router::new()).await;
    // A write, so that the WAL and its index exist.
    app.user("admin").await;
    for dir in [data_dir.parent().expect("parent"), &data_dir] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
    }
    for name in ["atom.db", "atom.db-wal", "atom.db-shm", "atom.db.lock", "master.key"] {
        assert_eq!(mode(&data_dir.join(name)), 0o600, "{name}");
    }
    app.stop().await;
}

async fn synchronous_of_new_connections(extra: &[(&str, &str)]) -> Vec<i64> {
    let app = TestApp::spawn_on(TestDb::sqlite(), extra, axum::Router::new()).await;
    let Db::Sqlite(pool) = &app.state.db else { unreachable!("TestDb::sqlite") };
    // Two at once: the second is a connection opened now, not the one migrations used.
    let mut first = pool.acquire().await.expect("connection");
    let mut second = pool.acquire().await.expect("connection");
    let mut values = Vec::new();
    for conn in [&mut first, &mut second] {
        values.push(sqlx::query_scalar::<_, i64>("PRAGMA synchronous").fetch_one(&mut **conn).await.expect("pragma"));
    }
    drop((first, second));
    app.stop().await;
    values
}

#[tokio::test]
async fn sqlite_commits_are_synchronous_full_by_default_and_normal_on_request() {
    // PRAGMA synchronous: 1 is NORMAL, 2 is FULL.
    assert_eq!(synchronous_of_new_connections(&[]).await, [2, 2]);
    assert_eq!(synchronous_of_new_connections(&[("DATABASE_SQLITE_SYNCHRONOUS", "normal")]).await, [1, 1]);
    assert_eq!(synchronous_of_new_connections(&[("DATABASE_SQLITE_SYNCHRONOUS", "full")]).await, [2, 2]);
}

/// Backups hold the same secrets: an archive is a 0700 directory of 0600 files, and a
/// database restored into a fresh data directory is as private as one the server creates.
#[tokio::test]
async fn backup_archives_and_a_restored_database_are_private() {
    let source = TestDb::sqlite();
    let mut app = TestApp::spawn_on(source, &[], axum::Router::new()).await;
    app.user("admin").await;
    let pairs = app.db.pairs();
    let archive = crate::backup::back_up(&pairs, &app.db.dir.path().join("archives")).await;
    app.begin_shutdown().await.expect("task").expect("clean shutdown");
    // Kept until the end: dropping it removes the data directory and the archive.
    let TestApp { db: _source, .. } = app;
    assert_eq!(mode(&archive), 0o700);
    for entry in std::fs::read_dir(&archive).expect("archive") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    let target = tempfile::tempdir().expect("dir");
    let data_dir = target.path().join("restored");
    let key_file = pairs.iter().find(|(k, _)| k == "DATA_DIR").map(|(_, v)| format!("{v}/master.key"));
    let restore_pairs = crate::common::pairs(&[
        ("DATA_DIR", &data_dir.display().to_string()),
        ("MASTER_KEY_FILE", &key_file.expect("data dir")),
    ]);
    let (code, _, stderr) =
        crate::common::run_atom(&restore_pairs, &["backup", "restore", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("atom.db")), 0o600);
}
