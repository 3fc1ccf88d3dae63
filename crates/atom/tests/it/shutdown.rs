//! Graceful shutdown: in-flight requests finish, new connections are refused, `/ready`
//! answers 503 while draining, the grace period bounds the wait, the real binary exits 0 on
//! SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atom::AppState;
use axum::Router;
use axum::routing::get;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::common::{
    TcpProxy, TestApp, TestDb, atom_command, free_port, redis_url, socket_addr_of, via, wait_until_healthy,
};

/// Waits until the application is answering `n` requests (its own in-flight gauge).
async fn wait_until_in_flight(app: &TestApp, n: u32) {
    let expected = format!("http_requests_in_flight {n}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut text = String::new();
        app.state.http_metrics.render(&mut text);
        if text.lines().any(|l| l == expected) {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} request(s) in flight:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hanging_route() -> Router<AppState> {
    Router::new().route(
        "/test/hang",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            "late"
        }),
    )
}

async fn connection_refused(url: &str) -> bool {
    match reqwest::Client::new().get(url).send().await {
        Err(e) => e.is_connect(),
        Ok(_) => false,
    }
}

/// A route whose requests wait until the test adds a permit to the semaphore.
fn held_route() -> (Router<AppState>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&gate);
    let route = Router::new().route(
        "/test/held",
        get(move || {
            let gate = Arc::clone(&held);
            async move {
                let _permit = gate.acquire().await.expect("open");
                "done"
            }
        }),
    );
    (route, gate)
}

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let (route, gate) = held_route();
    let mut app = TestApp::spawn_with(&[("SHUTDOWN_GRACE_SECS", "30")], route).await;
    let client = app.client.clone();
    let held_url = app.url("/test/held");
    let held = tokio::spawn(async move { client.get(held_url).send().await });
    wait_until_in_flight(&app, 1).await;

    let server = app.begin_shutdown();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connection_refused(&app.url("/health")).await {
        assert!(Instant::now() < deadline, "listener still open 10 s after shutdown began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!held.is_finished(), "the request is in flight after the listener closed");

    gate.add_permits(1);
    let response = held.await.expect("task").expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "done");
    // No waiting past the last request: far sooner than the 30 s grace period would end.
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("shutdown ends with the last request")
        .expect("task")
        .expect("clean shutdown");
    assert!(app.state.db.is_closed(), "pool closed");
}

#[tokio::test]
async fn while_draining_ready_is_503_then_the_listener_closes() {
    // A drain long enough to be observed on a loaded machine.
    let mut app = TestApp::spawn_with(&[("SHUTDOWN_DRAIN_SECS", "5")], Router::new()).await;
    let started = Instant::now();
    let server = app.begin_shutdown();

    let fresh = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let ready = fresh.get(app.url("/ready")).send().await.expect("still accepting while draining");
        if ready.status() == 503 {
            break ready;
        }
        assert!(Instant::now() < deadline, "/ready never turned 503 after shutdown began");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let body: Value = crate::common::assert_problem(ready, 503).await;
    assert_eq!(body["checks"]["shutdown"]["status"], "draining", "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(fresh.get(app.url("/health")).send().await.expect("health").status(), 200);

    let deadline = Instant::now() + Duration::from_secs(30);
    while !connection_refused(&app.url("/health")).await {
        assert!(Instant::now() < deadline, "listener still open 30 s after shutdown began");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A lower bound only: the drain may end late on a loaded machine, never early.
    assert!(started.elapsed() >= Duration::from_millis(4900), "closed after the drain: {:?}", started.elapsed());
    server.await.expect("task").expect("clean shutdown");
}

#[tokio::test]
async fn the_grace_period_bounds_the_wait_for_requests() {
    let mut app = TestApp::spawn_with(&[("SHUTDOWN_GRACE_SECS", "1")], hanging_route()).await;
    let client = app.client.clone();
    let url = app.url("/test/hang");
    let _hanging = tokio::spawn(async move { client.get(url).send().await });
    wait_until_in_flight(&app, 1).await;

    let started = Instant::now();
    app.begin_shutdown().await.expect("task").expect("shutdown returns Ok");
    let took = started.elapsed();
    // The request would hang for 25 s: ending well before that is the grace period's cut.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(20), "took {took:?}");
}

/// Starts the real binary with Redis behind a proxy, so a test can make `/ready` slow.
async fn serve_with_slow_redis(grace_secs: &str) -> (tokio::process::Child, String, TcpProxy, TestDb) {
    let db = TestDb::new().await;
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let port = free_port().await;
    let mut env: Vec<(String, String)> = db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    env.extend(crate::common::pairs(&[
        ("LISTEN", &format!("127.0.0.1:{port}")),
        ("REDIS_URL", &via(&redis, proxy.addr)),
        ("HTTP_READY_CHECK_TIMEOUT_MS", "20000"),
        ("SHUTDOWN_GRACE_SECS", grace_secs),
        ("LOG", "info"),
    ]));
    let child = atom_command(&env).arg("serve").spawn().expect("atom starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&format!("{base}/ready"), Duration::from_secs(30)).await;
    (child, base, proxy, db)
}

/// `http_requests_in_flight` of the server at `base`, the scrape itself included.
async fn in_flight(base: &str) -> f64 {
    let text = reqwest::Client::new().get(format!("{base}/metrics")).send().await.expect("scrape");
    let text = text.text().await.expect("metrics");
    text.lines().find_map(|l| l.strip_prefix("http_requests_in_flight ")).map_or(0.0, |v| v.parse().expect("number"))
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
}

#[tokio::test]
async fn sigterm_cuts_requests_still_running_after_the_grace_period() {
    let (child, base, proxy, _db) = serve_with_slow_redis("1").await;
    proxy.set_delay(Duration::from_secs(15));
    let url = format!("{base}/ready");
    let slow = tokio::spawn(async move { reqwest::Client::new().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(&base).await < 2.0 {
        assert!(Instant::now() < deadline, "the slow request never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    sigterm(&child);
    // The request needs 15 s more: an exit well before that is the grace period cutting it.
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits soon after the grace period")
        .expect("output");
    assert_eq!(output.status.code(), Some(0));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "not before the grace period: took {took:?}");
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("grace period over"), "{log}");
    assert!(slow.await.expect("task").is_err(), "the request past the grace period was cut");
}

/// The real binary: a request held open by a slow dependency (Redis answering through a
/// proxy that delays every reply) completes during shutdown, and the process exits 0.
#[tokio::test]
async fn sigterm_lets_the_slow_request_finish_and_exits_zero() {
    let (child, base, proxy, _db) = serve_with_slow_redis("10").await;
    proxy.set_delay(Duration::from_millis(2000));
    let slow = tokio::spawn({
        let url = format!("{base}/ready");
        async move { reqwest::Client::new().get(url).send().await }
    });
    // Until the server is serving it: a scrape sees itself and the slow request in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight(&base).await < 2.0 {
        assert!(Instant::now() < deadline, "the slow request never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!slow.is_finished(), "the request is still in flight when the signal arrives");

    let started = Instant::now();
    sigterm(&child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connection_refused(&format!("{base}/health")).await {
        assert!(Instant::now() < deadline, "new connections still accepted 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!slow.is_finished(), "the slow request outlived the listener");

    let response = slow.await.expect("task").expect("the slow request completed");
    assert_eq!(response.status(), 200, "it began before shutdown and finishes normally");
    let ready: Value = response.json().await.expect("json");
    assert_eq!(ready["checks"]["redis"]["status"], "ok", "it waited on the real Redis: {ready}");
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("exits within the grace period")
        .expect("output");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(started.elapsed() < Duration::from_secs(10));
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("SIGTERM received") && log.contains("shutdown complete"), "{log}");
}

/// Reads HTTP/2 frames until the server closes the connection, acknowledging its SETTINGS and
/// PINGs as a client must (hyper's graceful GOAWAY waits for a PING's answer). Returns the
/// frames' types.
async fn h2_frames_until_closed(h2: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut types = Vec::new();
    let mut head = [0u8; 9];
    while h2.read_exact(&mut head).await.is_ok() {
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, ack) = (head[3], head[4] & 1 == 1);
        types.push(kind);
        let mut payload = vec![0u8; length];
        if h2.read_exact(&mut payload).await.is_err() {
            break;
        }
        let answer = match (kind, ack) {
            (0x4, false) => [&[0, 0, 0, 0x4, 1, 0, 0, 0, 0][..], &[]].concat(),
            (0x6, false) => [&[0, 0, 8, 0x6, 1, 0, 0, 0, 0][..], &payload].concat(),
            _ => continue,
        };
        if h2.write_all(&answer).await.is_err() {
            break;
        }
    }
    types
}

/// An idle HTTP/2 connection (h2c, spoken by hand: the preface and an empty SETTINGS, each
/// side's SETTINGS acknowledged, then silence) is told GOAWAY and closed when shutdown begins,
/// so the drain ends at once instead of at the grace period or the header-read timeout.
#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_and_is_closed() {
    use tokio::io::AsyncWriteExt;
    let mut app =
        TestApp::spawn_with(&[("SHUTDOWN_GRACE_SECS", "10"), ("HTTP_HEADER_READ_TIMEOUT_SECS", "60")], Router::new())
            .await;
    let mut h2 = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    // The handshake, then nothing more from either side: no frame is waiting when the
    // connection goes idle (a partly read one would be lost here).
    let handshake = tokio::time::timeout(Duration::from_millis(500), h2_frames_until_closed(&mut h2)).await;
    assert!(handshake.is_err(), "the server keeps the connection open");

    let started = Instant::now();
    let server = app.begin_shutdown();
    let frames = tokio::time::timeout(Duration::from_secs(5), h2_frames_until_closed(&mut h2))
        .await
        .expect("the server closed the connection");
    assert_eq!(frames.first(), Some(&0x7), "GOAWAY first: {frames:?}");
    assert_eq!(frames.last(), Some(&0x7), "GOAWAY, then the close: {frames:?}");
    server.await.expect("task").expect("clean shutdown");
    // Before the 10 s grace period would have ended it.
    assert!(started.elapsed() < Duration::from_secs(9), "shutdown took {:?}", started.elapsed());
}
