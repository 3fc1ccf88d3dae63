//! Socket.io at `/socket.io/` with a real socket.io-client (tests/peers/socketio-client.mjs,
//! run by Node.js) over websocket and polling: connections authenticated by access token or
//! API key, `unauthorized` for everything else, the per-user and per-address caps (clients
//! bound to other loopback addresses), their release on every kind of disconnect, and
//! sockets closed at shutdown before the HTTP drain.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::TestApp;
use crate::identity_support::{
    create_api_key, delete_as, post, sign, signing_key, unix_now, valid_claims, valid_header,
};

pub(crate) const TRANSPORTS: [&str; 2] = ["websocket", "polling"];
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket.io-client peer: one Node.js process holding any number of connections.
pub(crate) struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Events read while waiting for another connection's.
    pending: VecDeque<Value>,
}

impl Peer {
    pub(crate) async fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers");
        assert!(
            dir.join("node_modules/socket.io-client").is_dir(),
            "socket.io-client is not installed: run `npm ci` in {} (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("socketio-client.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("Node.js runs (it is required by the Socket.io tests)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, stdin, stdout, pending: VecDeque::new() }
    }

    pub(crate) async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("command sent to the peer");
        self.stdin.flush().await.expect("flushed");
    }

    /// The next event of connection `id`, within [`EVENT_TIMEOUT`].
    pub(crate) async fn next(&mut self, id: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|e| e["id"] == id) {
            return self.pending.remove(i).expect("present");
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("no event for {id} within {EVENT_TIMEOUT:?}; pending: {:?}", self.pending))
                .expect("peer output readable")
                .unwrap_or_else(|| panic!("the peer exited while {id} waited for an event"));
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("peer printed non-JSON: {line}"));
            assert_ne!(event["event"], "error", "the peer failed: {event}");
            if event["id"] == id {
                return event;
            }
            self.pending.push_back(event);
        }
    }

    /// Opens connection `id` and returns its outcome: `connected` or `connect_error`.
    pub(crate) async fn connect(&mut self, id: &str, app: &TestApp, transport: &str, auth: Option<Value>) -> Value {
        self.connect_from(id, app, transport, auth, None).await
    }

    async fn connect_from(
        &mut self,
        id: &str,
        app: &TestApp,
        transport: &str,
        auth: Option<Value>,
        local_address: Option<&str>,
    ) -> Value {
        let mut command = json!({ "op": "connect", "id": id, "url": app.url(""), "transport": transport });
        if let Some(auth) = auth {
            command["auth"] = auth;
        }
        if let Some(local) = local_address {
            command["local_address"] = json!(local);
        }
        self.send(command).await;
        self.next(id).await
    }

    /// Opens `id` and asserts it is admitted over `transport`.
    pub(crate) async fn admitted(&mut self, id: &str, app: &TestApp, transport: &str, token: &str) {
        let outcome = self.connect(id, app, transport, Some(json!({ "token": token }))).await;
        assert_connected(&outcome, id, transport);
    }

    pub(crate) async fn whoami(&mut self, id: &str) -> Value {
        self.send(json!({ "op": "whoami", "id": id })).await;
        let event = self.next(id).await;
        assert_eq!(event["event"], "whoami", "{id}: {event}");
        event["ack"].clone()
    }

    /// Closes `id` from the client side and waits for its `disconnect`.
    pub(crate) async fn close(&mut self, id: &str) {
        self.send(json!({ "op": "close", "id": id })).await;
        let event = self.next(id).await;
        assert_eq!(event["event"], "disconnect", "{id}: {event}");
        assert_eq!(event["reason"], "io client disconnect", "{id}: {event}");
    }
}

pub(crate) fn auth(token: &str) -> Option<Value> {
    Some(json!({ "token": token }))
}

fn assert_connected(outcome: &Value, id: &str, transport: &str) {
    assert_eq!(outcome["event"], "connected", "{id} over {transport}: {outcome}");
    assert_eq!(outcome["transport"], transport, "{id}: {outcome}");
}

pub(crate) fn assert_refused(outcome: &Value, message: &str, case: &str) {
    assert_eq!(outcome["event"], "connect_error", "{case}: {outcome}");
    assert_eq!(outcome["message"], message, "{case}: {outcome}");
}

/// The application with the given Socket.io caps. The anonymous rate limit is raised: every
/// polling request counts against it, and these tests are about the caps.
pub(crate) async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"), ("RATE_LIMIT_ANONYMOUS_BURST", "10000")];
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(&pairs, axum::Router::new()).await
}

/// Connects `id` until it is admitted (a closed connection is released once the server has
/// seen the close, a moment after the client has), or fails after [`EVENT_TIMEOUT`].
async fn admitted_eventually(peer: &mut Peer, id: &str, app: &TestApp, transport: &str, token: &str, from: &str) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    for attempt in 0.. {
        let attempt_id = format!("{id}-{attempt}");
        let outcome = peer.connect_from(&attempt_id, app, transport, auth(token), Some(from)).await;
        if outcome["event"] == "connected" {
            peer.close(&attempt_id).await;
            return;
        }
        assert_refused(&outcome, "too_many_connections", &attempt_id);
        assert!(Instant::now() < deadline, "{id} still refused {EVENT_TIMEOUT:?} after a place was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_access_token_connects_over_both_transports_and_whoami_names_its_user() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let (u, a) = (format!("user-{transport}"), format!("admin-{transport}"));
        peer.admitted(&u, &app, transport, &user.access_token).await;
        peer.admitted(&a, &app, transport, &admin.access_token).await;
        assert_eq!(peer.whoami(&u).await, json!({ "user_id": user.id, "role": "user" }));
        assert_eq!(peer.whoami(&a).await, json!({ "user_id": admin.id, "role": "admin" }));
        peer.close(&u).await;
        peer.close(&a).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_socket_outlives_the_header_read_timeout_over_both_transports() {
    // The timeout is for HTTP requests; a websocket (an upgraded connection) and a polling
    // client (a long poll in flight) are not quiet HTTP connections.
    let app = spawn(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(transport, &app, transport, &user.access_token).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for transport in TRANSPORTS {
        assert_eq!(peer.whoami(transport).await, json!({ "user_id": user.id, "role": "user" }), "{transport}");
        peer.close(transport).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_connects_as_its_owner_until_it_is_revoked() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let created = create_api_key(&app, &user.access_token, json!({ "name": "realtime" })).await;
    let key = created["key"].as_str().expect("key").to_owned();
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let id = format!("key-{transport}");
        peer.admitted(&id, &app, transport, &key).await;
        assert_eq!(peer.whoami(&id).await, json!({ "user_id": user.id, "role": "user" }));
        peer.close(&id).await;
    }
    let path = format!("/v1/api-keys/{}", created["id"].as_str().expect("id"));
    assert_eq!(delete_as(&app, &user.access_token, &path).await.status(), 204);
    for transport in TRANSPORTS {
        let outcome = peer.connect(&format!("revoked-{transport}"), &app, transport, auth(&key)).await;
        assert_refused(&outcome, "unauthorized", "a revoked key");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_missing_malformed_forged_or_expired_credential_is_unauthorized_and_nothing_more() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let parts: Vec<&str> = user.access_token.split('.').collect();
    let first = if parts[2].starts_with('A') { "B" } else { "A" };
    let tampered_signature = format!("{}.{}.{first}{}", parts[0], parts[1], &parts[2][1..]);
    let mut expired = valid_claims(&app, &user.id);
    expired["exp"] = json!(unix_now() - 120);
    let expired = sign(&signing_key(&app).await, &valid_header(&app).await, &expired);
    let foreign = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let forged = sign(&foreign, &valid_header(&app).await, &valid_claims(&app, &user.id));
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("no auth at all", None),
        ("auth without a token", Some(json!({}))),
        ("an empty token", Some(json!({ "token": "" }))),
        ("a token that is not a string", Some(json!({ "token": 42 }))),
        ("garbage", Some(json!({ "token": "not-a-token" }))),
        ("a tampered signature", auth(&tampered_signature)),
        ("signed by another key", auth(&forged)),
        ("expired", auth(&expired)),
        ("a refresh token", auth(&user.refresh_token)),
        (
            "a made-up API key",
            Some(json!({ "token": "atom_sk_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" })),
        ),
    ];
    let refused_total = async || {
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("realtime_connections_refused_total{reason=\"unauthorized\"} "))
            .map_or(0.0, |v| v.parse::<f64>().expect("a number"))
    };
    let refused_before = refused_total().await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        for (i, (case, credential)) in cases.iter().enumerate() {
            let outcome = peer.connect(&format!("{transport}-{i}"), &app, transport, credential.clone()).await;
            assert_refused(&outcome, "unauthorized", &format!("{case} over {transport}"));
            assert!(outcome["data"].is_null(), "{case}: nothing beyond the message: {outcome}");
        }
    }
    // The process-wide counter: other tests' refusals may add to it, never take away, so
    // the difference is at least this test's own refusals, each counted.
    let refused = refused_total().await - refused_before;
    let ours = (TRANSPORTS.len() * cases.len()) as f64;
    assert!(refused >= ours, "{refused} unauthorized refusal(s) counted, {ours} made");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_users_token_and_api_key_are_refused() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let key = create_api_key(&app, &user.access_token, json!({ "name": "realtime" })).await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let mut peer = Peer::start().await;
    // Connected first, so that the account's status is cached on this node.
    peer.admitted("before", &app, "websocket", &user.access_token).await;
    peer.close("before").await;
    let path = format!("/v1/admin/users/{}/disable", user.id);
    assert_eq!(post(&app, Some(&admin.access_token), &path, &json!({})).await.status(), 200);
    for transport in TRANSPORTS {
        for (name, credential) in [("access token", &user.access_token), ("API key", &key)] {
            let outcome = peer.connect(&format!("{name}-{transport}"), &app, transport, auth(credential)).await;
            assert_refused(&outcome, "unauthorized", &format!("a disabled user's {name} over {transport}"));
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_per_user_cap_refuses_the_next_connection_until_one_closes() {
    let app = spawn(&[("REALTIME_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let user = app.user("user").await;
    let other = app.user("user").await;
    let key = create_api_key(&app, &user.access_token, json!({ "name": "realtime" })).await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let mut peer = Peer::start().await;
    // One connection per transport: the cap counts connections, whatever carries them.
    peer.admitted("ws", &app, "websocket", &user.access_token).await;
    peer.admitted("poll", &app, "polling", &user.access_token).await;
    for transport in TRANSPORTS {
        let outcome = peer.connect(&format!("third-{transport}"), &app, transport, auth(&user.access_token)).await;
        assert_refused(&outcome, "too_many_connections", &format!("a third connection over {transport}"));
        let outcome = peer.connect(&format!("key-{transport}"), &app, transport, auth(&key)).await;
        assert_refused(&outcome, "too_many_connections", "an API key counts for its owner");
    }
    peer.admitted("other", &app, "websocket", &other.access_token).await;
    assert_eq!(peer.whoami("ws").await["user_id"], json!(user.id), "the open connections still work");

    // A client that closes frees its place, exactly once: one new connection fits, not two.
    peer.close("poll").await;
    admitted_eventually(&mut peer, "again", &app, "polling", &user.access_token, "127.0.0.1").await;
    peer.admitted("replacement", &app, "polling", &user.access_token).await;
    let outcome = peer.connect("one-too-many", &app, "websocket", auth(&key)).await;
    assert_refused(&outcome, "too_many_connections", "the place was freed once, not twice");
    app.stop().await;
}

#[tokio::test]
async fn the_per_address_cap_counts_every_user_from_one_address() {
    let app = spawn(&[("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "2")]).await;
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let mut peer = Peer::start().await;
    let outcome = peer.connect_from("a", &app, "websocket", auth(&a.access_token), Some("127.0.0.1")).await;
    assert_connected(&outcome, "a", "websocket");
    let outcome = peer.connect_from("b", &app, "polling", auth(&b.access_token), Some("127.0.0.1")).await;
    assert_connected(&outcome, "b", "polling");
    for transport in TRANSPORTS {
        let id = format!("c-{transport}");
        let outcome = peer.connect_from(&id, &app, transport, auth(&c.access_token), Some("127.0.0.1")).await;
        assert_refused(
            &outcome,
            "too_many_connections",
            &format!("a third user from the same address over {transport}"),
        );
        // The same user from another address is not affected by this address's count.
        let id = format!("c-elsewhere-{transport}");
        let outcome = peer.connect_from(&id, &app, transport, auth(&c.access_token), Some("127.0.0.2")).await;
        assert_connected(&outcome, &id, transport);
        assert_eq!(peer.whoami(&id).await["user_id"], json!(c.id));
    }
    peer.close("a").await;
    admitted_eventually(&mut peer, "c-after", &app, "websocket", &c.access_token, "127.0.0.1").await;
    app.stop().await;
}

#[tokio::test]
async fn a_connection_lost_without_a_goodbye_frees_its_place() {
    let app = spawn(&[("REALTIME_MAX_CONNECTIONS_PER_USER", "1")]).await;
    let user = app.user("user").await;
    let mut doomed = Peer::start().await;
    doomed.admitted("lost", &app, "websocket", &user.access_token).await;
    let mut peer = Peer::start().await;
    let outcome = peer.connect("meanwhile", &app, "websocket", auth(&user.access_token)).await;
    assert_refused(&outcome, "too_many_connections", "the first connection holds the only place");
    // The client process dies: its TCP connection closes with no Socket.io goodbye.
    doomed.child.kill().await.expect("peer killed");
    admitted_eventually(&mut peer, "after", &app, "websocket", &user.access_token, "127.0.0.1").await;
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_first_so_the_drain_does_not_wait_for_long_polls() {
    let mut app = spawn(&[("SHUTDOWN_GRACE_SECS", "10")]).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(transport, &app, transport, &user.access_token).await;
    }
    let started = Instant::now();
    let server = app.begin_shutdown();
    for transport in TRANSPORTS {
        let event = peer.next(transport).await;
        assert_eq!(event["event"], "disconnect", "{transport}: {event}");
        // Not "io server disconnect", after which socket.io-client would not reconnect: a
        // closed transport (a long poll may see it as an error) sends it to another node.
        let reason = event["reason"].as_str().unwrap_or_default();
        assert!(["transport close", "transport error"].contains(&reason), "{transport}: {event}");
    }
    server.await.expect("task").expect("clean shutdown");
    // A long poll lasts up to the ping interval (25 s); the grace period is 10 s: sooner than
    // either is the sockets closed first.
    assert!(started.elapsed() < Duration::from_secs(9), "shutdown took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_key_without_the_api_or_agent_scope_is_refused_forbidden() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let created =
        create_api_key(&app, &user.access_token, json!({ "name": "proxy only", "scopes": ["connections:use"] })).await;
    let key = created["key"].as_str().expect("key").to_owned();
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let outcome = peer.connect(&format!("scoped-{transport}"), &app, transport, auth(&key)).await;
        assert_refused(&outcome, "forbidden", "a connections:use key");
    }
    app.stop().await;
}
