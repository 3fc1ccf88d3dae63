//! The test harness: a fresh database per test (SQLite in a temporary directory, or a new
//! PostgreSQL database when `ATOM_TEST_DATABASE_URL` is set), the application spawned on
//! port 0, typed assertions for problem responses, the real `atom` binary, and a TCP proxy
//! that can cut or slow a real PostgreSQL or Redis connection.
//!
//! Every resource cleans up on drop, panicking tests included: PostgreSQL databases are
//! dropped with `WITH (FORCE)`, temporary directories removed, child processes killed.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atom::{AppState, Application, Config};
use axum::Router;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

/// A TCP proxy in front of a real server, which a test can cut (`set_down`: connections are
/// accepted and closed at once), stop (`set_refusing`: connecting is refused, as with a
/// stopped server) or slow (`set_delay`, applied to every chunk the server sends back).
#[derive(Debug)]
pub struct TcpProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<ProxyState>,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    down: AtomicBool,
    delay_ms: AtomicU64,
    connections: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let proxy = Self { addr, upstream, state: Arc::new(ProxyState::default()), task: Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (accept_state, upstream) = (Arc::clone(&self.state), self.upstream);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accept_state.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let state = Arc::clone(&accept_state);
                let conn = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream_copy = async { tokio::io::copy(&mut client_read, &mut server_write).await };
                    let downstream_copy = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            let delay = state.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            client_write.write_all(&buf[..n]).await?;
                        }
                    };
                    tokio::select! {
                        _ = upstream_copy => {}
                        _ = downstream_copy => {}
                    }
                });
                accept_state.connections.lock().expect("lock").push(conn);
            }
        });
        if let Some(previous) = self.task.lock().expect("lock").replace(task) {
            previous.abort();
        }
    }

    fn cut_connections(&self) {
        for conn in self.state.connections.lock().expect("lock").drain(..) {
            conn.abort();
        }
    }

    /// Cuts every open connection and refuses new ones while `down`.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
        if down {
            self.cut_connections();
        }
    }

    /// `true`: cuts every open connection and closes the listening socket, so that
    /// connecting is refused outright; `false`: listens on the same port again.
    pub async fn set_refusing(&self, refusing: bool) {
        if refusing {
            if let Some(task) = self.task.lock().expect("lock").take() {
                task.abort();
            }
            self.cut_connections();
            // The listener closes when the aborted task is dropped: wait until it has.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while TcpStream::connect(self.addr).await.is_ok() {
                assert!(tokio::time::Instant::now() < deadline, "the proxy still accepts connections");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            self.serve(TcpListener::bind(self.addr).await.expect("the proxy listens again on its port"));
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().map(|mut t| t.take()).unwrap_or_default() {
            task.abort();
        }
        for conn in self.state.connections.lock().map(|mut c| c.drain(..).collect::<Vec<_>>()).unwrap_or_default() {
            conn.abort();
        }
    }
}

/// The host:port of a `scheme://user@host:port/...` URL, resolved.
pub fn socket_addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().ok().and_then(|mut a| a.next()).unwrap_or_else(|| panic!("cannot resolve {host_port}"))
}

/// `url` with its host:port replaced by `addr`.
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (user, rest) = rest.rsplit_once('@').map_or((None, rest), |(u, r)| (Some(u), r));
    let tail_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let tail = &rest[tail_start..];
    match user {
        Some(u) => format!("{scheme}://{u}@{addr}{tail}"),
        None => format!("{scheme}://{addr}{tail}"),
    }
}

/// Sends raw bytes on a fresh connection and returns everything the server sent back
/// until it closed the connection (or 10 s passed).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
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
