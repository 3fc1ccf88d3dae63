//! The operator's ways in that the README promises and no other test takes: SIGINT,
//! `ATOM_CONFIG`, `ATOM_MASTER_KEY_FILE`, `atom admin create` reading its password from
//! standard input, and `atom backup create` without `--out`.

use std::process::Stdio;
use std::time::Duration;

use atom::crypto::{KEY_FILE_NAME, MasterKeyring};
use atom::storage::encrypted;
use tokio::io::AsyncWriteExt;

use crate::common::{PASSWORD, TestApp, TestDb, atom_command, free_port, run_atom, wait_until_healthy};

#[tokio::test]
async fn sigint_shuts_the_server_down_cleanly() {
    let db = TestDb::new().await;
    let port = free_port().await;
    let mut env = db.pairs();
    env.extend(crate::common::pairs(&[("LISTEN", &format!("127.0.0.1:{port}")), ("LOG", "info")]));
    let child = atom_command(&env).arg("serve").spawn().expect("atom starts");
    wait_until_healthy(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;

    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits after SIGINT")
        .expect("output");
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains("SIGINT received") && log.contains("shutdown complete"), "{log}");
}

#[tokio::test]
async fn atom_config_names_a_file_read_over_the_defaults_and_under_the_environment() {
    let db = TestDb::new().await;
    let file = db.dir.path().join("atom.toml");
    std::fs::write(&file, "[cache]\nttl_secs = 17\nmax_entries = 1234\n").expect("write atom.toml");
    let mut env = db.pairs();
    env.push(("CONFIG".into(), file.display().to_string()));
    env.push(("CACHE_MAX_ENTRIES".into(), "4321".into()));
    let (code, stdout, stderr) = run_atom(&env, &["config", "check"]).await;
    assert_eq!(code, 0, "{stderr}");
    let config: serde_json::Value = serde_json::from_str(&stdout).expect("config as JSON");
    assert_eq!(config["cache"]["ttl_secs"], 17, "from the file: {stdout}");
    assert_eq!(config["cache"]["max_entries"], 4321, "the environment wins over the file: {stdout}");

    // A file that does not exist is an error naming it, not the defaults.
    let env: Vec<(String, String)> = db
        .pairs()
        .into_iter()
        .chain([("CONFIG".to_owned(), db.dir.path().join("missing.toml").display().to_string())])
        .collect();
    let (code, _, stderr) = run_atom(&env, &["config", "check"]).await;
    assert_ne!(code, 0, "a missing ATOM_CONFIG file is refused");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[tokio::test]
async fn atom_master_key_file_is_the_key_used_and_none_is_generated() {
    let keys = tempfile::tempdir().expect("dir");
    let (keyring, generated) = MasterKeyring::load_or_generate(keys.path()).expect("a key file");
    assert!(generated);
    let key_file = keys.path().join(KEY_FILE_NAME).display().to_string();

    let app = TestApp::spawn_with(&[("MASTER_KEY_FILE", &key_file)], axum::Router::new()).await;
    assert!(!app.db.dir.path().join(KEY_FILE_NAME).exists(), "no key generated in the data directory");
    let decrypted = encrypted::check_all_decrypt(&app.state.db, &keyring).await.expect("decrypts with the file's key");
    assert_eq!(decrypted, 1, "the signing key is wrapped by the key in the file");

    // The binary, through the environment variable, uses the same file.
    let mut env = app.db.pairs();
    env.push(("MASTER_KEY_FILE".into(), key_file.clone()));
    let (code, _, stderr) = run_atom(&env, &["keys", "rotate-signing"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(encrypted::check_all_decrypt(&app.state.db, &keyring).await.expect("decrypts"), 2);
    assert!(!app.db.dir.path().join(KEY_FILE_NAME).exists(), "still none in the data directory");
    app.stop().await;
}

#[tokio::test]
async fn admin_create_reads_the_password_from_standard_input() {
    let app = TestApp::spawn().await;
    let mut child = atom_command(&app.db.pairs())
        .args(["admin", "create", "--email", "stdin@example.com"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("atom starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{PASSWORD}\nnot this line\n").as_bytes()).await.expect("write password");
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("finishes")
        .expect("output");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("created admin stdin@example.com"), "{stdout}");
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD), "the password is never echoed");
    let session = app.login("stdin@example.com", PASSWORD).await;
    assert_eq!(session["user"]["role"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn backup_create_without_out_writes_into_the_data_directorys_backups() {
    let app = TestApp::spawn().await;
    app.user("user").await;
    let (code, stdout, stderr) = run_atom(&app.db.pairs(), &["backup", "create"]).await;
    assert_eq!(code, 0, "{stderr}");
    let archive = std::path::PathBuf::from(stdout.trim());
    let backups = app.db.dir.path().join("backups");
    assert_eq!(archive.parent(), Some(backups.as_path()), "{}", archive.display());
    assert!(archive.join("manifest.json").is_file(), "{}", archive.display());
    let (code, stdout, stderr) = run_atom(&app.db.pairs(), &["backup", "verify", &archive.display().to_string()]).await;
    assert_eq!(code, 0, "{stderr}\n{stdout}");
    app.stop().await;
}
