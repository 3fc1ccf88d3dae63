//! The command line: invalid configuration stops start-up with one message naming the key
//! and exit code 2; `config check` shows the configuration with secrets redacted.

use crate::common::{free_port, pairs, run_atom};

#[tokio::test]
async fn each_invalid_value_stops_start_up_with_exit_code_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let data_dir = dir.path().display().to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("LISTEN", "nowhere".into(), "listen"),
        ("DATABASE_URL", "mysql://localhost/atom".into(), "database.url"),
        ("DATABASE_POOL_SIZE", "0".into(), "database.pool_size"),
        ("DATABASE_POOL_SIZE", "lots".into(), "database.pool_size"),
        ("DATA_DIR", file.display().to_string(), "data_dir"),
        ("LOG_FORMAT", "xml".into(), "log.format"),
        ("LOG", "atom=[".into(), "log.filter"),
        ("HTTP_REQUEST_TIMEOUT_SECS", "0".into(), "http.request_timeout_secs"),
        ("REDIS_URL", "localhost:6379".into(), "redis.url"),
        ("SHUTDOWN_GRACE_SECS", "-1".into(), "shutdown.grace_secs"),
        ("DATABASE_SQLITE_SYNCHRONOUS", "sometimes".into(), "database.sqlite_synchronous"),
        ("MASTER_KEY", "not base64 at all!".into(), "master_key"),
        // Valid base64 of 16 bytes, not 32: only decoding shows it.
        ("MASTER_KEY", "c2l4dGVlbiBieXRlcyBvayE=".into(), "master_key"),
    ];
    for (key, value, named) in cases {
        for command in [&["serve"][..], &["config", "check"], &["migrate"]] {
            let env = pairs(&[("DATA_DIR", &data_dir), (key, &value)]);
            let (code, stdout, stderr) = run_atom(&env, command).await;
            assert_eq!(code, 2, "ATOM_{key}={value} {command:?}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one message: {stderr}");
            assert!(stderr.contains(named), "ATOM_{key}={value} names {named}: {stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
            assert!(stdout.is_empty(), "{stdout}");
            assert!(key != "MASTER_KEY" || !stderr.contains(&value), "the key is never shown: {stderr}");
        }
    }
}

#[tokio::test]
async fn config_files_are_read_and_their_mistakes_named() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("atom.toml");
    std::fs::write(&file, "[database]\npool_size = 7\n").expect("write");
    let env = pairs(&[("DATA_DIR", &dir.path().display().to_string())]);
    let config_arg = file.display().to_string();
    let (code, stdout, _) = run_atom(&env, &["--config", &config_arg, "config", "check"]).await;
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["database"]["pool_size"], 7);

    std::fs::write(&file, "[database]\npool_sise = 7\n").expect("write");
    let (code, _, stderr) = run_atom(&env, &["--config", &config_arg, "config", "check"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("pool_sise"), "{stderr}");

    let (code, _, stderr) = run_atom(&env, &["--config", "/no/such/atom.toml", "serve"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("/no/such/atom.toml"), "{stderr}");
}

#[tokio::test]
async fn config_check_redacts_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let env = pairs(&[
        ("DATA_DIR", &dir.path().display().to_string()),
        ("DATABASE_URL", "postgres://atom:hunter2@db.internal:5432/atom"),
        ("REDIS_URL", "redis://:redispass@cache:6379/0"),
    ]);
    let (code, stdout, stderr) = run_atom(&env, &["config", "check"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("hunter2") && !stdout.contains("redispass"), "{stdout}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(shown["database"]["url"], "postgres://db.internal:5432/atom");
    assert_eq!(shown["redis"]["url"], "redis://cache:6379/0");
}

#[tokio::test]
async fn a_listen_address_in_use_is_a_clear_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let env = pairs(&[("DATA_DIR", &dir.path().display().to_string()), ("LISTEN", &addr)]);
    let (code, _, stderr) = run_atom(&env, &["serve"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("could not listen on {addr}")), "{stderr}");
    let _ = free_port().await;
}
