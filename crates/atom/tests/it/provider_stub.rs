//! A strict local stand-in for a provider quirk no real server here shows: an axum server on
//! a free loopback port whose handlers check each request as the provider does, record every
//! request (method, path, query, headers, body) and every violation. A test asserts
//! [`Stub::violations`] is empty: a request the provider would refuse fails the test loudly,
//! beside the refusal the stub answers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type").map(|c| c.split(';').next().unwrap_or(c).trim())
    }

    /// The form body's pairs.
    pub fn form(&self) -> BTreeMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// `Authorization: Basic` decoded into (user, password).
    pub fn basic(&self) -> Option<(String, String)> {
        use base64::Engine;
        let encoded = self.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }
}

/// What every handler shares: the log and the violations.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub violations: Arc<Mutex<Vec<String>>>,
}

impl Record {
    /// Records the request; the returned copy is the handler's to check.
    pub fn seen(&self, method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Seen {
        let query =
            uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let seen = Seen { method, path: uri.path().to_owned(), query, headers, body };
        self.seen.lock().expect("lock").push(seen.clone());
        seen
    }

    /// Records a violation: what the provider would refuse.
    pub fn violation(&self, what: impl Into<String>) {
        self.violations.lock().expect("lock").push(what.into());
    }
}

#[derive(Debug)]
pub struct Stub {
    pub addr: SocketAddr,
    pub record: Record,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Serves `router` (whose handlers hold `record`) on a free loopback port.
    pub async fn start(router: Router, record: Record) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, record, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.record.seen.lock().expect("lock").clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.record.violations.lock().expect("lock").clone()
    }

    /// Fails the test with every violation the stub saw.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(violations.is_empty(), "requests the provider would refuse: {violations:#?}");
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
