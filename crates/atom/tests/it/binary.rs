//! The real `atom` binary: running it with a clean environment, and waiting for it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpListener;

/// The real `atom` binary.
pub fn atom_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atom"))
}

/// `atom` with a clean environment: only PATH, HOME and the given `ATOM_*` pairs.
pub fn atom_command(pairs: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(atom_bin());
    cmd.env_clear();
    for key in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in pairs {
        cmd.env(format!("ATOM_{k}"), v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

/// Runs `atom ARGS` to completion within 60 s: (exit code, stdout, stderr).
pub async fn run_atom(pairs: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), atom_command(pairs).args(args).output())
        .await
        .expect("atom finished within 60s")
        .expect("atom ran");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A free loopback port (bound, read, released).
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Polls `GET url` until it answers 200 or `timeout` passes.
pub async fn wait_until_healthy(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} did not become healthy within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
