//! A driver for the socket.io-client peer (tests/peers/socketio-client.mjs) with the generic
//! operations: emitting any event with or without an ack, every server event as it arrives,
//! the client's own reconnection, and dropping a connection as a lost network does.
//! Events are matched by connection and kind; the others wait in order for their turn.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Generous: a loaded machine with several builds running is slow, and a missing event is
/// what the tests catch, not a slow one.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SocketPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pending: VecDeque<Value>,
}

/// How a connection is opened.
#[derive(Clone, Debug)]
pub struct Open<'a> {
    pub url: &'a str,
    pub transport: &'a str,
    pub token: &'a str,
    pub reconnection: bool,
}

impl SocketPeer {
    pub async fn start() -> Self {
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

    pub async fn send(&mut self, command: Value) {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("command sent to the peer");
        self.stdin.flush().await.expect("flushed");
    }

    async fn read_one(&mut self, deadline: tokio::time::Instant, waiting_for: &str) -> Value {
        let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("no {waiting_for} within {EVENT_TIMEOUT:?}; pending: {}", json!(Vec::from(self.pending.clone())))
            })
            .expect("peer output readable")
            .unwrap_or_else(|| panic!("the peer exited while waiting for {waiting_for}"));
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("peer printed non-JSON: {line}"));
        assert_ne!(event["event"], "error", "the peer failed: {event}");
        event
    }

    /// The first event of `id` that `matches`, within [`EVENT_TIMEOUT`]; the others stay
    /// pending in arrival order.
    pub async fn next_where(&mut self, id: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(|e| e["id"] == id && matches(e)) {
            return self.pending.remove(i).expect("present");
        }
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let event = self.read_one(deadline, &format!("{what} for {id}")).await;
            if event["id"] == id && matches(&event) {
                return event;
            }
            self.pending.push_back(event);
        }
    }

    /// The next event of `id`, whatever it is.
    pub async fn next(&mut self, id: &str) -> Value {
        self.next_where(id, "any event", |_| true).await
    }

    /// The next server event `name` to `id`: its first argument.
    pub async fn server_event(&mut self, id: &str, name: &str) -> Value {
        let event = self
            .next_where(id, &format!("server event {name}"), |e| e["event"] == "server_event" && e["name"] == name)
            .await;
        event["data"].clone()
    }

    /// Waits `quiet` and returns (and forgets) every server event `name` to `id` seen so far.
    pub async fn drain_server_events(&mut self, id: &str, name: &str, quiet: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(line) = tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
            let line = line.expect("peer output readable").expect("the peer is running");
            let event: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("peer printed non-JSON: {line}"));
            self.pending.push_back(event);
        }
        let mut found = Vec::new();
        self.pending.retain(|e| {
            let hit = e["id"] == id && e["event"] == "server_event" && e["name"] == name;
            if hit {
                found.push(e["data"].clone());
            }
            !hit
        });
        found
    }

    /// Opens `id` and returns its outcome: `connected` or `connect_error`.
    pub async fn open(&mut self, id: &str, how: Open<'_>) -> Value {
        let mut command = json!({
            "op": "connect", "id": id, "url": how.url, "transport": how.transport,
            "auth": { "token": how.token },
        });
        if how.reconnection {
            command["reconnection"] = json!(true);
        }
        self.send(command).await;
        self.next_where(id, "connect outcome", |e| e["event"] == "connected" || e["event"] == "connect_error").await
    }

    /// Opens `id` and asserts it is connected.
    pub async fn connected(&mut self, id: &str, how: Open<'_>) {
        let transport = how.transport.to_owned();
        let outcome = self.open(id, how).await;
        assert_eq!(outcome["event"], "connected", "{id}: {outcome}");
        assert_eq!(outcome["transport"], json!(transport), "{id}: {outcome}");
    }

    /// Emits `event` with `data` and returns the server's ack (its first argument).
    pub async fn call(&mut self, id: &str, event: &str, data: Value) -> Value {
        let tag = uuid::Uuid::new_v4().to_string();
        self.send(json!({ "op": "emit", "id": id, "event": event, "data": data, "ack": true,
                          "timeout_ms": EVENT_TIMEOUT.as_millis() as u64, "tag": tag }))
            .await;
        let outcome = self
            .next_where(id, &format!("ack of {event}"), |e| {
                (e["event"] == "ack" || e["event"] == "ack_timeout") && e["tag"] == json!(tag)
            })
            .await;
        assert_eq!(outcome["event"], "ack", "{id}: {event} was not acknowledged: {outcome}");
        outcome["ack"].clone()
    }

    /// Emits `event` with the given arguments and an ack, and returns the raw outcome line
    /// (`ack` or `ack_timeout`), for malformed calls.
    pub async fn call_raw(&mut self, id: &str, event: &str, args: Vec<Value>, timeout: Duration) -> Value {
        let tag = uuid::Uuid::new_v4().to_string();
        self.send(json!({ "op": "emit", "id": id, "event": event, "args": args, "ack": true,
                          "timeout_ms": timeout.as_millis() as u64, "tag": tag }))
            .await;
        self.next_where(id, &format!("ack of {event}"), |e| {
            (e["event"] == "ack" || e["event"] == "ack_timeout") && e["tag"] == json!(tag)
        })
        .await
    }

    /// Emits `event` without an ack.
    pub async fn emit(&mut self, id: &str, event: &str, data: Value) {
        let tag = uuid::Uuid::new_v4().to_string();
        self.send(json!({ "op": "emit", "id": id, "event": event, "data": data, "tag": tag })).await;
        self.next_where(id, "emitted", |e| e["event"] == "emitted" && e["tag"] == json!(tag)).await;
    }

    /// Closes `id` from the client side and waits for its `disconnect`.
    pub async fn close(&mut self, id: &str) {
        self.send(json!({ "op": "close", "id": id })).await;
        let event = self.next_where(id, "disconnect", |e| e["event"] == "disconnect").await;
        assert_eq!(event["reason"], "io client disconnect", "{id}: {event}");
    }

    /// Drops `id`'s transport without a goodbye and waits for the client to notice.
    pub async fn drop_connection(&mut self, id: &str) -> Value {
        self.send(json!({ "op": "drop", "id": id })).await;
        self.next_where(id, "disconnect", |e| e["event"] == "disconnect").await
    }

    /// The next `connected` of `id` (after a reconnection, or an `open`).
    pub async fn reconnected(&mut self, id: &str) -> Value {
        self.next_where(id, "connected", |e| e["event"] == "connected").await
    }

    /// Kills the Node.js process: every connection it held is lost without a goodbye.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("peer killed");
    }
}
