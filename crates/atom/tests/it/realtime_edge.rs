//! Socket.io behind the edge and its dependencies: a client that connects while the
//! database is down is told `unavailable` (and is admitted once it is back; with Redis down
//! the credential check reads the database and admits it), a connect storm on a slow
//! database is admitted in turn rather than refused, and Socket.io requests get what
//! every HTTP request gets: CORS for the allowed origins only, the per-address rate limit,
//! load shedding, and the body limit on messages over both transports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::common::{TcpProxy, TestApp, TestDb, assert_problem, redis_url, socket_addr_of, via};
use crate::identity_support::client_from;
use crate::realtime::{Peer, TRANSPORTS, assert_refused, auth, spawn};

const BOUND: Duration = Duration::from_secs(30);

/// An Engine.IO polling handshake from `client` over `transport`.
async fn handshake(client: &reqwest::Client, app: &TestApp, transport: &str) -> reqwest::Response {
    let url = app.url(&format!("/socket.io/?EIO=4&transport={transport}"));
    client.get(url).send().await.expect("sent")
}

/// Connects `id` until it is admitted (the database coming back is noticed by a probe a
/// moment later), within [`BOUND`].
async fn admitted_within_bound(peer: &mut Peer, id: &str, app: &TestApp, transport: &str, token: &str) {
    let deadline = Instant::now() + BOUND;
    for attempt in 0.. {
        let attempt_id = format!("{id}-{attempt}");
        let outcome = peer.connect(&attempt_id, app, transport, auth(token)).await;
        if outcome["event"] == "connected" {
            assert_eq!(peer.whoami(&attempt_id).await["role"], "user");
            peer.close(&attempt_id).await;
            return;
        }
        assert_refused(&outcome, "unavailable", &attempt_id);
        assert!(Instant::now() < deadline, "{id}: still unavailable {BOUND:?} after the database came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_client_connecting_while_the_database_is_down_is_told_unavailable_then_admitted_once_it_is_back() {
    // PostgreSQL behind a proxy, whatever the suite's backend: a database that can go away.
    let (db, proxy, url) = TestDb::postgres_behind_proxy().await;
    let extra = [
        ("DATABASE_URL", url.as_str()),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"),
        ("RATE_LIMIT_ANONYMOUS_BURST", "10000"),
    ];
    let app = TestApp::spawn_on(db, &extra, Router::new()).await;
    // Never connected: the account's status is not cached, so its check needs the database.
    let user = app.user("user").await;
    let mut peer = Peer::start().await;

    proxy.set_down(true);
    for transport in TRANSPORTS {
        let outcome = peer.connect(&format!("down-{transport}"), &app, transport, auth(&user.access_token)).await;
        assert_refused(&outcome, "unavailable", &format!("database down, over {transport}"));
        assert!(outcome["data"].is_null(), "nothing beyond the message: {outcome}");
    }
    assert_eq!(app.get("/health").await.status(), 200, "the server itself is alive");

    proxy.set_down(false);
    for transport in TRANSPORTS {
        admitted_within_bound(&mut peer, &format!("back-{transport}"), &app, transport, &user.access_token).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_connect_storm_on_a_slow_database_waits_its_turn_and_every_client_is_admitted() {
    // PostgreSQL behind a proxy that slows every answer, a pool of two with a one-second
    // acquire timeout: two dozen admissions at once need more than two seconds of the pool
    // between them. Queued on the pool, those still waiting at its timeout would be refused
    // `unavailable`; queued for their turn to admit, every one gets in (about five seconds in
    // all, within the peer's ten-second wait for each outcome).
    let (db, proxy, url) = TestDb::postgres_behind_proxy().await;
    let extra = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_POOL_SIZE", "2"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "1"),
        ("REALTIME_CONNECT_TIMEOUT_SECS", "60"),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "100"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "100"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"),
        ("RATE_LIMIT_ANONYMOUS_BURST", "10000"),
    ];
    let app = TestApp::spawn_on(db, &extra, Router::new()).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    peer.admitted("warm", &app, "websocket", &user.access_token).await;

    const STORM: usize = 24;
    proxy.set_delay(Duration::from_millis(100));
    for i in 0..STORM {
        peer.send(json!({
            "op": "connect", "id": format!("storm-{i}"), "url": app.url(""), "transport": "websocket",
            "auth": { "token": user.access_token },
        }))
        .await;
    }
    for i in 0..STORM {
        let id = format!("storm-{i}");
        let outcome = peer.next(&id).await;
        assert_eq!(outcome["event"], "connected", "{id} was refused in the storm: {outcome}");
    }
    proxy.set_delay(Duration::ZERO);
    assert_eq!(peer.whoami("storm-0").await["user_id"], json!(user.id));
    app.stop().await;
}

#[tokio::test]
async fn with_redis_down_a_client_is_admitted_through_the_database() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let through_proxy = via(&redis, proxy.addr);
    let app = spawn(&[("REDIS_URL", through_proxy.as_str())]).await;
    let user = app.user("user").await;
    let key = crate::identity_support::create_api_key(&app, &user.access_token, json!({ "name": "rt" })).await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let status: Value = app.get_as(&user.access_token, "/v1/me").await.json().await.expect("json");
    assert_eq!(status["id"], json!(user.id));

    // The cache is Redis (the status just read may be in it); Redis goes away: the checks
    // read the database and the clients are admitted, not refused as unavailable.
    proxy.set_down(true);
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        for (name, credential) in [("token", &user.access_token), ("key", &key)] {
            let id = format!("{name}-{transport}");
            peer.admitted(&id, &app, transport, credential).await;
            assert_eq!(peer.whoami(&id).await["user_id"], json!(user.id));
            peer.close(&id).await;
        }
    }
    let ready: Value = app.get("/ready").await.json().await.expect("json");
    assert_eq!(ready["checks"]["redis"]["status"], "degraded", "Redis was away all along: {ready}");
    app.stop().await;
}

#[tokio::test]
async fn a_socket_io_handshake_gets_cors_headers_for_an_allowed_origin_only() {
    let app = spawn(&[("HTTP_CORS_ALLOWED_ORIGINS", r#"["https://app.example.com"]"#)]).await;
    let url = app.url("/socket.io/?EIO=4&transport=polling");
    let allowed = app.client.get(&url).header("origin", "https://app.example.com").send().await.expect("sent");
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(allowed.text().await.expect("text").starts_with("0{"), "an Engine.IO open packet");

    for origin in ["https://evil.example.com", "https://app.example.com.evil.example.com", "null"] {
        let response = app.client.get(&url).header("origin", origin).send().await.expect("sent");
        assert!(!response.headers().contains_key("access-control-allow-origin"), "{origin}: {response:?}");
    }

    // The preflight of a polling client's POST (its messages).
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("sent");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example.com").await.expect("sent");
    assert!(!refused.headers().contains_key("access-control-allow-origin"), "{refused:?}");
    app.stop().await;
}

#[tokio::test]
async fn socket_io_handshakes_count_against_the_address_rate_limit() {
    // A burst of three and no refill within the test.
    let extra = [("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"), ("RATE_LIMIT_ANONYMOUS_BURST", "3")];
    let app = TestApp::spawn_with(&extra, Router::new()).await;
    let (limited, other) = (client_from(5), client_from(6));
    for i in 0..3 {
        let response = handshake(&limited, &app, "polling").await;
        assert_eq!(response.status(), 200, "handshake {i} within the burst");
        assert!(response.headers().contains_key("ratelimit"), "{response:?}");
    }
    for transport in TRANSPORTS {
        let response = handshake(&limited, &app, transport).await;
        assert!(response.headers().contains_key("retry-after"), "{transport}: {response:?}");
        assert!(response.headers()["ratelimit-policy"].to_str().is_ok_and(|p| p.starts_with("\"anonymous\"")));
        assert_problem(response, 429).await;
    }
    assert_eq!(handshake(&other, &app, "polling").await.status(), 200, "another address has its own budget");
    app.stop().await;
}

#[tokio::test]
async fn socket_io_handshakes_are_shed_with_503_when_the_server_is_overloaded() {
    // Requests held until the test lets them go: in flight for as long as the test needs.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = {
        let gate = Arc::clone(&gate);
        Router::new().route(
            "/test/held",
            get(move || {
                let gate = Arc::clone(&gate);
                async move {
                    let _permit = gate.acquire().await.expect("open");
                    "done"
                }
            }),
        )
    };
    let app = TestApp::spawn_with(&[("HTTP_MAX_IN_FLIGHT", "2"), ("RATE_LIMIT_ENABLED", "false")], held).await;
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (reqwest::Client::new(), app.url("/test/held"));
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    let deadline = Instant::now() + BOUND;
    loop {
        let mut text = String::new();
        app.state.http_metrics.render(&mut text);
        if text.lines().any(|l| l == "http_requests_in_flight 2") {
            break;
        }
        assert!(Instant::now() < deadline, "the held requests never both reached the server:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for transport in TRANSPORTS {
        let response = handshake(&app.client, &app, transport).await;
        assert!(response.headers().contains_key("retry-after"), "{transport}: {response:?}");
        let body = assert_problem(response, 503).await;
        assert_eq!(body["type"], "urn:atom:problem:overloaded");
    }

    gate.add_permits(2);
    for request in requests {
        assert_eq!(request.await.expect("task").expect("sent").status(), 200);
    }
    assert_eq!(handshake(&app.client, &app, "polling").await.status(), 200, "capacity is back");
    app.stop().await;
}

/// Runs a socket.io-client over `transport` that sends `whoami` with `small` bytes of data,
/// then with `big`; prints what happened, one JSON line per event.
async fn send_small_then_big(app: &TestApp, token: &str, transport: &str, small: usize, big: usize) -> Vec<Value> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers");
    let script = r#"
import { io } from "socket.io-client";
const print = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const socket = io(process.env.URL, { auth: { token: process.env.TOKEN }, transports: [process.env.TRANSPORT],
  upgrade: false, reconnection: false, forceNew: true });
socket.on("connect_error", (err) => { print({ event: "connect_error", message: err.message }); process.exit(0); });
socket.on("disconnect", (reason) => { print({ event: "disconnect", reason }); process.exit(0); });
socket.on("connect", () => {
  socket.timeout(10000).emit("whoami", "s".repeat(Number(process.env.SMALL)), (err, ack) => {
    print(err ? { event: "whoami_timeout" } : { event: "whoami", ack });
    socket.timeout(10000).emit("whoami", "b".repeat(Number(process.env.BIG)), (err, ack) => {
      print(err ? { event: "big_whoami_timeout" } : { event: "big_whoami", ack });
    });
  });
});
setTimeout(() => { print({ event: "still_open" }); process.exit(0); }, 25000);
"#;
    let run = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", script])
        .current_dir(&dir)
        .env("URL", app.url(""))
        .env("TOKEN", token)
        .env("TRANSPORT", transport)
        .env("SMALL", small.to_string())
        .env("BIG", big.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the client ends").expect("node runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON")).collect()
}

#[tokio::test]
async fn a_socket_io_message_over_the_body_limit_ends_the_connection_and_the_server_goes_on() {
    let app = spawn(&[("HTTP_BODY_LIMIT_BYTES", "4096")]).await;
    let user = app.user("user").await;
    for transport in TRANSPORTS {
        let events = send_small_then_big(&app, &user.access_token, transport, 1000, 8000).await;
        assert_eq!(events.len(), 2, "{transport}: {events:?}");
        assert_eq!(events[0]["event"], "whoami", "{transport}: a message under the limit is answered: {events:?}");
        assert_eq!(events[0]["ack"]["user_id"], json!(user.id));
        assert_eq!(events[1]["event"], "disconnect", "{transport}: the one over it ends the connection: {events:?}");
        let reason = events[1]["reason"].as_str().unwrap_or_default();
        assert!(["transport close", "transport error"].contains(&reason), "{transport}: {events:?}");
    }

    // Over polling, the message's POST is the stack's 413 problem.
    let client = reqwest::Client::new();
    let open = handshake(&client, &app, "polling").await.text().await.expect("text");
    let open: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("json");
    let url = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={}", open["sid"].as_str().expect("sid")));
    let connect = format!("40{}", json!({ "token": user.access_token }));
    assert_eq!(client.post(&url).body(connect).send().await.expect("sent").status(), 200);
    let big = format!("42[\"whoami\",\"{}\"]", "b".repeat(8000));
    assert_problem(client.post(&url).body(big).send().await.expect("sent"), 413).await;

    // The server goes on: new connections over both transports are served.
    assert_eq!(app.get("/health").await.status(), 200);
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(transport, &app, transport, &user.access_token).await;
        assert_eq!(peer.whoami(transport).await["user_id"], json!(user.id));
        peer.close(transport).await;
    }
    app.stop().await;
}
