//! Dependencies failing while the server runs, and at start-up: `/ready` turns 503 and comes
//! back, requests that need the database get a 503 problem quickly, never a hang. PostgreSQL
//! and Redis are real; a TCP proxy in front of them cuts the connection.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    PgDatabase, TcpProxy, TestApp, TestDb, assert_problem, atom_command, free_port, pg_admin_url, redis_url, run_atom,
    socket_addr_of, via, wait_until_healthy,
};
use crate::errors::test_routes;

async fn wait_for_status(app: &TestApp, path: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if app.get(path).await.status().as_u16() == status {
            return;
        }
        assert!(Instant::now() < deadline, "{path} did not answer {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn postgres_going_down_turns_ready_503_and_requests_get_503_then_both_recover() {
    let (db, proxy, url) = TestDb::postgres_behind_proxy().await;
    let extra = [("DATABASE_URL", url.as_str()), ("HTTP_READY_CHECK_TIMEOUT_MS", "1000")];
    let app = TestApp::spawn_on(db, &extra, test_routes()).await;
    assert_eq!(app.get("/ready").await.status(), 200);
    assert_eq!(app.get("/test/db").await.status(), 200);

    proxy.set_down(true);
    let started = Instant::now();
    let body = assert_problem(app.get("/ready").await, 503).await;
    assert_ne!(body["checks"]["database"]["status"], "ok", "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "ready answered within its check timeout");

    let started = Instant::now();
    let body = assert_problem(app.get("/test/db").await, 503).await;
    assert_eq!(body["type"], "urn:atom:problem:unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "503 after the acquire timeout, not a hang");
    assert_eq!(app.get("/health").await.status(), 200, "liveness does not depend on the database");

    proxy.set_down(false);
    wait_for_status(&app, "/ready", 200, Duration::from_secs(15)).await;
    assert_eq!(app.get("/test/db").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn redis_going_down_reports_ready_degraded_and_back() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let redis_via_proxy = via(&redis, proxy.addr);
    let extra = [("REDIS_URL", redis_via_proxy.as_str()), ("HTTP_READY_CHECK_TIMEOUT_MS", "1000")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let body: Value = app.get("/ready").await.json().await.expect("json");
    assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");

    proxy.set_down(true);
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200, "Redis down degrades the node but does not fail readiness");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(app.get("/health").await.status(), 200);

    proxy.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body: Value = app.get("/ready").await.json().await.expect("json");
        if body["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "Redis check did not recover: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn unreachable_postgres_at_start_is_retried_then_exits_with_a_clear_error() {
    let port = free_port().await;
    let url = format!("postgres://atom:hunter2@127.0.0.1:{port}/atom");
    let dir = tempfile::tempdir().expect("dir");
    let env = crate::common::pairs(&[
        ("DATA_DIR", &dir.path().display().to_string()),
        ("DATABASE_URL", &url),
        ("DATABASE_STARTUP_TIMEOUT_SECS", "2"),
        ("LOG", "warn"),
    ]);
    let started = Instant::now();
    let (code, stdout, stderr) = run_atom(&env, &["serve"]).await;
    let took = started.elapsed();
    assert_eq!(code, 1, "{stderr}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(10), "retried for ~2s: {took:?}");
    assert!(
        stderr.contains(&format!("could not connect to the postgres database at postgres://127.0.0.1:{port}/atom")),
        "{stderr}"
    );
    assert!(stdout.contains("PostgreSQL is not reachable yet"), "retries are logged: {stdout}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "password never shown");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn postgres_that_comes_up_during_the_start_up_retries_is_used() {
    let pg = PgDatabase::create().await;
    let proxy = TcpProxy::start(socket_addr_of(&pg_admin_url())).await;
    proxy.set_down(true);
    let port = free_port().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = crate::common::pairs(&[
        ("DATA_DIR", &dir.path().display().to_string()),
        ("DATABASE_URL", &via(&pg.url, proxy.addr)),
        ("DATABASE_STARTUP_TIMEOUT_SECS", "20"),
        ("LISTEN", &format!("127.0.0.1:{port}")),
    ]);
    let mut child = atom_command(&env).arg("serve").spawn().expect("atom starts");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(child.try_wait().expect("status").is_none(), "still retrying");
    proxy.set_down(false);
    wait_until_healthy(&format!("http://127.0.0.1:{port}/ready"), Duration::from_secs(15)).await;
    child.kill().await.expect("kill");
}
