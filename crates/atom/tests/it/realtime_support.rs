//! What the tests of several nodes, expiry, event limits and the admin routes share: the
//! peer's generic operations (tests/peers/socketio-client.mjs), a load balancer whose backend
//! can be switched, and two nodes sharing one database.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

use crate::common::TestApp;
use crate::realtime::Peer;

impl Peer {
    /// Opens `id` at `url` (a node or a load balancer) with the client's reconnection on or
    /// off; returns the outcome (`connected` or `connect_error`).
    pub(crate) async fn open_at(
        &mut self,
        id: &str,
        url: &str,
        transport: &str,
        token: &str,
        reconnection: bool,
    ) -> Value {
        let command = json!({
            "op": "connect", "id": id, "url": url, "transport": transport,
            "auth": { "token": token }, "reconnection": reconnection,
        });
        self.send(command).await;
        self.next(id).await
    }

    /// Emits `event` with `data` on `id` asking for an ack; returns the ack's first argument.
    pub(crate) async fn ask(&mut self, id: &str, event: &str, data: Value) -> Value {
        self.send(json!({ "op": "emit", "id": id, "event": event, "data": data, "ack": true })).await;
        let answer = self.next(id).await;
        assert_eq!(answer["event"], "ack", "{id}: {event} acknowledged: {answer}");
        answer["ack"].clone()
    }

    /// Emits `event` on `id` without asking for an ack.
    pub(crate) async fn tell(&mut self, id: &str, event: &str, data: Value) {
        self.send(json!({ "op": "emit", "id": id, "event": event, "data": data })).await;
        let sent = self.next(id).await;
        assert_eq!(sent["event"], "emitted", "{id}: {sent}");
    }

    /// Waits for the server to send `session:closing` to `id` and then close it; returns the
    /// event's payload. The close is one the client does not retry by itself.
    pub(crate) async fn closed_with(&mut self, id: &str) -> Value {
        let closing = self.next(id).await;
        assert_eq!(closing["event"], "server_event", "{id}: {closing}");
        assert_eq!(closing["name"], "session:closing", "{id}: {closing}");
        let disconnect = self.next(id).await;
        assert_eq!(disconnect["event"], "disconnect", "{id}: {disconnect}");
        assert_eq!(disconnect["reason"], "io server disconnect", "{id}: {disconnect}");
        closing["data"].clone()
    }
}

/// A TCP load balancer on loopback: new connections go to the current backend, open ones
/// stay where they are, as behind a real one while a node drains.
#[derive(Debug)]
pub(crate) struct Balancer {
    pub addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub(crate) async fn start(backend: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind balancer");
        let addr = listener.local_addr().expect("balancer addr");
        let backend = Arc::new(Mutex::new(backend));
        let current = Arc::clone(&backend);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = *current.lock().expect("lock");
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(to).await {
                        let _ = copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { addr, backend, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn switch_to(&self, backend: SocketAddr) {
        *self.backend.lock().expect("lock") = backend;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A second node on `first`'s database and Redis key space, with `extra` configuration.
pub(crate) async fn second_node(first: &TestApp, extra: &[(&str, &str)]) -> TestApp {
    let shared = first.db.pairs();
    let mut pairs: Vec<(&str, &str)> = shared
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.extend_from_slice(&[("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"), ("RATE_LIMIT_ANONYMOUS_BURST", "10000")]);
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(&pairs, axum::Router::new()).await
}

/// `GET /status`'s real-time section, as `admin`.
pub(crate) async fn realtime_status(app: &TestApp, admin_token: &str) -> Value {
    let response = app.get_as(admin_token, "/status").await;
    assert_eq!(response.status(), 200, "/status");
    let body: Value = response.json().await.expect("json");
    body["realtime"].clone()
}

/// `GET /v1/admin/users/{id}/connections`, as `admin`.
pub(crate) async fn connections_of(app: &TestApp, admin_token: &str, user_id: &str) -> Value {
    let response = app.get_as(admin_token, &format!("/v1/admin/users/{user_id}/connections")).await;
    assert_eq!(response.status(), 200, "connections of {user_id}");
    response.json().await.expect("json")
}
