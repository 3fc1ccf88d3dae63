//! The test harness: a fresh database per test (SQLite in a temporary directory, or a new
//! PostgreSQL database when `ATOM_TEST_DATABASE_URL` is set), the application spawned on
//! port 0, typed assertions for problem responses and signed-in test users; the real `atom`
//! binary ([`crate::binary`]) and a TCP proxy that can cut or slow a real PostgreSQL or Redis
//! connection ([`crate::proxy`]) are re-exported here.
//!
//! Every resource cleans up on drop, panicking tests included: PostgreSQL databases are
//! dropped with `WITH (FORCE)`, temporary directories removed, child processes killed.

#![allow(dead_code)]

// The binary and the proxy have files of their own; tests reach them through here.
#[allow(unused_imports)]
pub use crate::binary::{atom_bin, atom_command, free_port, pairs, run_atom, wait_until_healthy};
#[allow(unused_imports)]
pub use crate::proxy::{TcpProxy, raw_http, socket_addr_of, via};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use atom::{AppState, Application, Config};
use axum::Router;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// PostgreSQL to create test databases in: `ATOM_TEST_DATABASE_URL`, or the machine's
/// local server for the tests that are about PostgreSQL itself. Unreachable means failure.
pub fn pg_admin_url() -> String {
    std::env::var("ATOM_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Redis for the tests that are about Redis itself.
pub fn redis_url() -> String {
    std::env::var("ATOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn backend_is_postgres() -> bool {
    std::env::var("ATOM_TEST_DATABASE_URL").is_ok()
}

/// A PostgreSQL database that exists for one test.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let admin_url = pg_admin_url();
        let name = format!("atom_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect_pg(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database on {admin_url}: {e}"));
        let url = with_database(&admin_url, &name);
        Self { name, url, admin_url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside a test's runtime; a runtime of our own on another thread can block.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

pub async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required by this test and is unreachable: {e}"))
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = base[authority..].find('/').map_or(base, |i| &base[..authority + i]);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The database a test's application uses: the suite's backend, fresh.
#[derive(Debug)]
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
    pub key_space: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = if backend_is_postgres() { Some(PgDatabase::create().await) } else { None };
        Self { dir, pg, key_space: uuid::Uuid::new_v4().simple().to_string() }
    }

    /// SQLite whatever the suite's backend, for the tests that are about SQLite itself.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self { dir, pg: None, key_space: uuid::Uuid::new_v4().simple().to_string() }
    }

    pub async fn postgres() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self { dir, pg: Some(PgDatabase::create().await), key_space: uuid::Uuid::new_v4().simple().to_string() }
    }

    /// PostgreSQL whatever the suite's backend, behind a [`TcpProxy`] that can take it away
    /// or slow it down; the URL through the proxy, for `DATABASE_URL`.
    pub async fn postgres_behind_proxy() -> (Self, TcpProxy, String) {
        let db = Self::postgres().await;
        let pg = db.pg.as_ref().expect("postgres");
        let proxy = TcpProxy::start(socket_addr_of(&pg.url)).await;
        let url = via(&pg.url, proxy.addr);
        (db, proxy, url)
    }

    /// Configuration pairs (without `ATOM_`) that point an application at this database.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![("DATA_DIR".to_owned(), self.dir.path().display().to_string())];
        if let Some(pg) = &self.pg {
            pairs.push(("DATABASE_URL".to_owned(), pg.url.clone()));
        }
        if let Ok(redis) = std::env::var("ATOM_TEST_REDIS_URL") {
            pairs.push(("REDIS_URL".to_owned(), redis));
        }
        // Tests share one Redis: each database gets its own key space.
        pairs.push(("REDIS_KEY_PREFIX".to_owned(), format!("atom-test-{}", self.key_space)));
        pairs
    }
}

/// The application running in this process on a free port.
#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), atom::StartError>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[], Router::new()).await
    }

    /// Spawns with extra configuration pairs and extra routes (which get the full middleware).
    pub async fn spawn_with(extra: &[(&str, &str)], routes: Router<AppState>) -> Self {
        Self::spawn_on(TestDb::new().await, extra, routes).await
    }

    pub async fn spawn_on(db: TestDb, extra: &[(&str, &str)], routes: Router<AppState>) -> Self {
        let config = test_config(&db, extra);
        Self::spawn_config(db, config, routes).await
    }

    /// Spawns with a configuration the test has changed beyond what pairs can say (such as
    /// no Redis on a suite run with Redis).
    pub async fn spawn_config(db: TestDb, config: Config, routes: Router<AppState>) -> Self {
        let app = Application::build(config).await.expect("application builds");
        let addr = app.local_addr();
        let state = app.state().clone();
        let app = app.with_routes(routes);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Self { addr, client: reqwest::Client::new(), state, db, shutdown: Some(tx), handle: Some(handle) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request sent")
    }

    /// Begins graceful shutdown and returns the server task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), atom::StartError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("not yet shut down")
    }

    pub async fn stop(mut self) {
        let handle = self.begin_shutdown();
        handle.await.expect("server task").expect("clean shutdown");
    }
}

/// The configuration a test application runs with: port 0, its own database, quick timeouts.
pub fn test_config(db: &TestDb, extra: &[(&str, &str)]) -> Config {
    let base = db.pairs();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("LISTEN", "127.0.0.1:0"),
        ("LOG", "warn"),
        ("SHUTDOWN_GRACE_SECS", "5"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "2"),
        ("DATABASE_POOL_SIZE", "4"),
        // Generous on a loaded test machine, so that a slow answer does not switch a test's
        // node to local limits; the Redis fault tests set the production default.
        ("REDIS_CALL_TIMEOUT_MS", "1000"),
        // Tests sign in far more often than people; the edge tests set their own limits.
        ("RATE_LIMIT_AUTH_PER_MINUTE", "6000"),
        ("RATE_LIMIT_AUTH_BURST", "1000"),
    ];
    pairs.extend(base.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    pairs.extend_from_slice(extra);
    Config::from_pairs(pairs).expect("test configuration is valid")
}

/// Asserts an RFC 9457 response of `status` whose `request_id` matches `X-Request-Id`.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status of {}", response.url());
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(request_id.is_some(), "X-Request-Id header present");
    let body: Value = response.json().await.expect("problem body is JSON");
    for field in ["type", "title", "detail", "request_id"] {
        assert!(body[field].is_string(), "problem has string {field}: {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "request id in body matches header");
    body
}

/// What the code on this thread logs, as JSON lines, through a thread-local subscriber.
/// Under tokio::test's current-thread runtime a spawned [`TestApp`] runs on the test's
/// thread, so this sees everything the server logs, and nothing other tests do.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Starts capturing (INFO and above) until the guard drops.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    /// The lines logged so far, parsed; each has its fields under `fields`.
    pub fn lines(&self) -> Vec<Value> {
        self.text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// An account of a test application, signed in.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// Creates an account with `role` ("user" or "admin") and signs it in over HTTP.
    pub async fn user(&self, role: &str) -> TestUser {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let role = if role == "admin" { atom::identity::Role::Admin } else { atom::identity::Role::User };
        let row = atom::identity::accounts::create_with_role(&self.state.db, &email, PASSWORD.into(), role)
            .await
            .expect("account created");
        let body = self.login(&email, PASSWORD).await;
        TestUser {
            id: row.id,
            email,
            access_token: body["access_token"].as_str().expect("access token").to_owned(),
            refresh_token: body["refresh_token"].as_str().expect("refresh token").to_owned(),
        }
    }

    /// Signs in and returns the token response; panics unless it is a 200.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "login of {email}");
        response.json().await.expect("json")
    }

    /// `GET path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("sent")
    }
}
