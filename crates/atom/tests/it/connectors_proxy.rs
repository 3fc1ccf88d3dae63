//! The agent's access to connections: the token route (a due token refreshed once for many
//! concurrent callers, against the real oidc-provider peer; each use audited), the scopes
//! that let an API key use connections, and the proxy against a stub provider on loopback
//! (each credential style checked at the stub as strictly as the provider would, 50 MB
//! streamed both ways while the other side is still sending, one retry after a refresh on
//! 401, a 429's `Retry-After` passed on, its own errors by fault), and every SSRF attempt
//! refused (the server's own addresses, a name resolving to them, redirects, encoded paths
//! leaving the base URL, a parameter carrying a host).
//!
//! The stub is an axum server in the test: no real server here shows an API that takes a
//! credential in each of these ways. Loopback is allowed through
//! `connectors.proxy_allow_ranges`, except in the tests that show it refused without.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atom::connectors::oauth1;
use atom::connectors::vault::{self, Credentials, Obtained};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{TestApp, TestDb, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::oauth_peer::{self, OAuthPeer, connect};

pub(crate) const KEY: &str = "stub-key-0123456789";
const BASIC_USER: &str = "stub-user";
const BASIC_PASSWORD: &str = "stub-password-0123456789";
const CONSUMER_KEY: &str = "stub-consumer";
const CONSUMER_SECRET: &str = "stub-consumer-secret-0123456789";
const OAUTH1_TOKEN: &str = "stub-oauth1-token-0123456789";
const OAUTH1_TOKEN_SECRET: &str = "stub-oauth1-token-secret-0123456789";
const MB: usize = 1024 * 1024;

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct StubState {
    port: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// Bytes of `/stream/upload` received so far, and a wake-up on each chunk.
    uploaded: AtomicU64,
    upload_progress: tokio::sync::Notify,
    /// What `/stream/download` answers with, fed by the test.
    download: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// `/oauth2/reject-first` has refused its first call.
    rejected: AtomicBool,
}

/// A provider API on loopback.
pub(crate) struct Stub {
    addr: SocketAddr,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(StubState::default());
        state.port.store(u64::from(addr.port()), Ordering::Relaxed);
        let router = axum::Router::new().fallback(handle).with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, state, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    pub(crate) fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(stub): State<Arc<StubState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let port = stub.port.load(Ordering::Relaxed);
    if path == "/stream/upload" {
        if let Err(reason) = check(&parts.headers, parts.uri.query(), "bearer", &parts.method, &path, b"", port) {
            return (StatusCode::UNAUTHORIZED, reason).into_response();
        }
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return StatusCode::BAD_REQUEST.into_response() };
            stub.uploaded.fetch_add(chunk.len() as u64, Ordering::AcqRel);
            stub.upload_progress.notify_waiters();
        }
        return axum::Json(json!({ "received": stub.uploaded.load(Ordering::Acquire) })).into_response();
    }
    if path == "/stream/download" {
        let Some(rx) = stub.download.lock().expect("lock").take() else { return StatusCode::GONE.into_response() };
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
        });
        return Response::new(Body::from_stream(stream));
    }
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    let body = axum::body::to_bytes(body, 64 * MB).await.unwrap_or_default().to_vec();
    stub.seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let style = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    if let Err(reason) = check(&parts.headers, parts.uri.query(), style, &parts.method, &path, &body, port) {
        return (StatusCode::UNAUTHORIZED, reason).into_response();
    }
    if path.ends_with("/status/429") {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down, from the provider").into_response();
    }
    if path.ends_with("/status/404") {
        return (StatusCode::NOT_FOUND, [("content-type", "application/json")], r#"{"provider":"not found"}"#)
            .into_response();
    }
    if path.ends_with("/redirect-metadata") {
        return (StatusCode::FOUND, [("location", "http://169.254.169.254/latest/meta-data/")]).into_response();
    }
    if path.ends_with("/redirect-local") {
        let location = format!("http://127.0.0.1:{port}/bearer/elsewhere");
        return (StatusCode::FOUND, [("location", location)]).into_response();
    }
    if path == "/oauth2/reject-first" && !stub.rejected.swap(true, Ordering::AcqRel) {
        return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer error=\"invalid_token\"")]).into_response();
    }
    let echo = json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "body_len": body.len(),
    });
    (StatusCode::OK, [("set-cookie", "provider_session=secret-cookie"), ("x-provider", "stub")], axum::Json(echo))
        .into_response()
}

/// The credential each style's provider expects, checked as strictly as it would: the right
/// value in the right place, and nothing of Atom's (its bearer token) beside it.
fn check(
    headers: &HeaderMap,
    query: Option<&str>,
    style: &str,
    method: &axum::http::Method,
    path: &str,
    body: &[u8],
    port: u64,
) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = header("authorization");
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    match style {
        "bearer" | "shops" | "stream" => {
            (auth.as_deref() == Some(&format!("Bearer {KEY}"))).then_some(()).ok_or(format!("bearer: {auth:?}"))
        }
        "header" => {
            if auth.is_some() {
                return Err("an Authorization header reached the provider".into());
            }
            (header("x-api-key").as_deref() == Some(KEY)).then_some(()).ok_or("x-api-key".into())
        }
        "query" => {
            if auth.is_some() {
                return Err("an Authorization header reached the provider".into());
            }
            let keys: Vec<&String> = pairs.iter().filter(|(k, _)| k == "api_key").map(|(_, v)| v).collect();
            (keys == [KEY]).then_some(()).ok_or(format!("api_key: {keys:?}"))
        }
        "basic" => {
            let expected = base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASSWORD}"));
            (auth.as_deref() == Some(&format!("Basic {expected}"))).then_some(()).ok_or(format!("basic: {auth:?}"))
        }
        "oauth1" => check_oauth1(auth.as_deref(), headers, method, path, query, body, port),
        "oauth2" => auth.filter(|a| a.starts_with("Bearer ")).map(drop).ok_or("bearer".into()),
        other => Err(format!("no style {other}")),
    }
}

/// RFC 5849: the protocol parameters, then the signature recomputed over the request as
/// received (query and form body included).
fn check_oauth1(
    auth: Option<&str>,
    headers: &HeaderMap,
    method: &axum::http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    port: u64,
) -> Result<(), String> {
    let header = auth.and_then(|a| a.strip_prefix("OAuth ")).ok_or("no OAuth header")?;
    let mut params = BTreeMap::new();
    for pair in header.split(", ") {
        let (k, v) = pair.split_once('=').ok_or("malformed OAuth header")?;
        let v = percent_encoding::percent_decode_str(v.trim_matches('"')).decode_utf8_lossy().into_owned();
        params.insert(k.to_owned(), v);
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    if get("oauth_consumer_key") != Some(CONSUMER_KEY)
        || get("oauth_token") != Some(OAUTH1_TOKEN)
        || get("oauth_signature_method") != Some("HMAC-SHA1")
        || get("oauth_version") != Some("1.0")
        || get("oauth_nonce").is_none_or(str::is_empty)
    {
        return Err(format!("protocol parameters: {params:?}"));
    }
    let timestamp: i64 = get("oauth_timestamp").and_then(|t| t.parse().ok()).ok_or("timestamp")?;
    if (timestamp - atom::storage::now_ms() / 1000).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let mut url = format!("http://127.0.0.1:{port}{path}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let url = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let mut signed: Vec<(String, String)> =
        params.iter().filter(|(k, _)| *k != "oauth_signature").map(|(k, v)| (k.clone(), v.clone())).collect();
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        signed.extend(form_urlencoded::parse(body).into_owned());
    }
    let base = oauth1::base_string(method.as_str(), &url, &signed);
    let expected = oauth1::hmac_sha1(&base, CONSUMER_SECRET, OAUTH1_TOKEN_SECRET);
    (get("oauth_signature") == Some(expected.as_str())).then_some(()).ok_or(format!("signature over {base}"))
}

/// A key-style template whose API is the stub under `/{prefix}`.
fn key_template(id: &str, base_url: &str, credential: &str) -> String {
    format!(
        r#"id = "{id}"
name = "Stub {id}"
auth_mode = "api_key"

[[fields]]
name = "api_key"
label = "API key"
secret = true
pattern = "^[A-Za-z0-9_-]{{8,64}}$"
example = "key_example_123"

[api]
base_url = "{base_url}"

[api.headers]
X-Stub-Version = "2024-01"

[api.credential]
{credential}
"#
    )
}

fn templates(stub: &Stub, peer: &OAuthPeer) -> Vec<(String, String)> {
    let port = stub.addr.port();
    let base = |prefix: &str| format!("http://127.0.0.1:{port}/{prefix}");
    let mut oauth2 = peer.template("stub-oauth2", "basic");
    oauth2 = oauth2.replace(
        &format!("[api]\nbase_url = \"{}\"", peer.issuer),
        &format!("[api]\nbase_url = \"{}\"", base("oauth2")),
    );
    assert!(oauth2.contains("/oauth2\""), "the OAuth template calls the stub: {oauth2}");
    vec![
        ("stub-bearer".into(), key_template("stub-bearer", &base("bearer"), "in = \"bearer\"\nvalue = \"{api_key}\"")),
        ("stub-stream".into(), key_template("stub-stream", &base("stream"), "in = \"bearer\"\nvalue = \"{api_key}\"")),
        (
            "stub-header".into(),
            key_template("stub-header", &base("header"), "in = \"header\"\nname = \"X-Api-Key\"\nvalue = \"{api_key}\""),
        ),
        (
            "stub-query".into(),
            key_template("stub-query", &base("query"), "in = \"query\"\nname = \"api_key\"\nvalue = \"{api_key}\""),
        ),
        (
            "stub-localhost".into(),
            key_template("stub-localhost", &format!("http://localhost:{port}/bearer"), "in = \"bearer\"\nvalue = \"{api_key}\""),
        ),
        (
            "stub-closed".into(),
            key_template("stub-closed", &format!("http://127.0.0.1:{}/bearer", closed_port()), "in = \"bearer\"\nvalue = \"{api_key}\""),
        ),
        (
            "stub-shop".into(),
            key_template("stub-shop", &format!("{}/{{shop}}", base("shops")), "in = \"bearer\"\nvalue = \"{api_key}\"")
                .replace(
                    "[[fields]]",
                    "[[params]]\nname = \"shop\"\nlabel = \"Shop\"\npattern = \"^[a-z0-9][a-z0-9-]*$\"\nexample = \"acme\"\n\n[[fields]]",
                ),
        ),
        (
            "stub-basic".into(),
            format!(
                r#"id = "stub-basic"
name = "Stub basic"
auth_mode = "basic"

[[fields]]
name = "user"
label = "User"
secret = false
pattern = "^[a-z-]{{1,32}}$"
example = "someone"

[[fields]]
name = "password"
label = "Password"
secret = true
pattern = "^[A-Za-z0-9_-]{{8,64}}$"
example = "password-123"

[api]
base_url = "{}"

[api.credential]
in = "basic"
username = "{{user}}"
password = "{{password}}"
"#,
                base("basic")
            ),
        ),
        (
            "stub-oauth1".into(),
            format!(
                r#"id = "stub-oauth1"
name = "Stub OAuth 1.0a"
auth_mode = "oauth1a"

[oauth1]
request_token_url = "{b}/request_token"
authorization_url = "{b}/authorize"
access_token_url = "{b}/access_token"
signature_method = "HMAC-SHA1"

[api]
base_url = "{b}"

[api.credential]
in = "oauth1"
"#,
                b = base("oauth1")
            ),
        ),
        ("stub-oauth2".into(), oauth2),
    ]
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// An application with the peer's and the stub's templates, loopback allowed unless
/// `extra` says otherwise, the OAuth apps set.
pub(crate) async fn spawn(stub: &Stub, peer: &OAuthPeer, extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    peer.write_templates(&dir);
    for (id, text) in templates(stub, peer) {
        std::fs::write(dir.join(format!("{id}.toml")), text).expect("template written");
    }
    let dir = dir.display().to_string();
    let mut config = oauth_peer::app_config();
    config.push(("CONNECTORS_PROVIDERS_DIR", dir.as_str()));
    config.push(("CONNECTORS_PROXY_ALLOW_RANGES", "[\"127.0.0.0/8\", \"::1/128\"]"));
    config.extend_from_slice(extra);
    let app = TestApp::spawn_on(db, &config, axum::Router::new()).await;
    oauth_peer::set_apps(&app).await;
    let admin = app.user("admin").await;
    for (provider, (id, secret)) in
        [("stub-oauth2", oauth_peer::BASIC_CLIENT), ("stub-oauth1", (CONSUMER_KEY, CONSUMER_SECRET))]
    {
        let response = app
            .client
            .put(app.url(&format!("/v1/admin/providers/{provider}/app")))
            .bearer_auth(&admin.access_token)
            .json(&json!({ "client_id": id, "client_secret": secret }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{provider}: {}", response.text().await.unwrap_or_default());
    }
    app
}

/// Stores a connection as a finished connect flow would; its id.
async fn store(
    app: &TestApp,
    user: &TestUser,
    provider: &str,
    auth_kind: &'static str,
    fields: &[(&str, &str)],
    params: Value,
) -> String {
    let mut credentials = Credentials::default();
    for (k, v) in fields {
        credentials.fields.insert((*k).to_owned(), (*v).to_owned());
    }
    if auth_kind == "oauth1" {
        credentials.access_token = Some(OAUTH1_TOKEN.to_owned());
        credentials.token_secret = Some(OAUTH1_TOKEN_SECRET.to_owned());
    }
    let obtained = Obtained {
        user_id: user.id.clone(),
        provider: provider.to_owned(),
        auth_kind,
        account_id: uuid::Uuid::new_v4().to_string(),
        label: format!("{provider} account"),
        scopes: Vec::new(),
        params,
        credentials,
        expires_at: None,
    };
    let mut tx = app.state.db.begin().await.expect("tx");
    let (row, _) =
        vault::store(&mut tx, &app.state.identity.keyring(), &obtained, atom::storage::now_ms()).await.expect("stored");
    tx.commit().await.expect("commit");
    row.id
}

pub(crate) async fn key_connection(app: &TestApp, user: &TestUser, provider: &str) -> String {
    store(app, user, provider, "api_key", &[("api_key", KEY)], json!({})).await
}

/// An API key of `user`'s with `body`'s scopes and providers.
async fn api_key(app: &TestApp, user: &TestUser, body: Value) -> String {
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    response.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_owned()
}

async fn use_key(app: &TestApp, user: &TestUser) -> String {
    api_key(app, user, json!({ "name": "agent", "scopes": ["connections:use"] })).await
}

pub(crate) fn proxy_url(app: &TestApp, id: &str, path: &str) -> String {
    app.url(&format!("/v1/proxy/{id}/{path}"))
}

fn stored_access_token(app: &TestApp, row: &atom::storage::connections::ConnectionRow) -> String {
    Credentials::open(&app.state.identity.keyring(), row).expect("decrypts").access_token.clone().expect("token")
}

async fn row(app: &TestApp, id: &str) -> atom::storage::connections::ConnectionRow {
    atom::storage::connections::by_id(&app.state.db, id).await.expect("query").expect("row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_route_refreshes_a_due_token_once_for_many_concurrent_callers_and_audits_each() {
    // The first token is due at once (60 s left, within the 300 s margin); the refreshed one is not.
    let peer = OAuthPeer::start_with(60, 3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[("CONNECTORS_REFRESH_MARGIN_SECS", "300"), ("DATABASE_POOL_SIZE", "8")]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let old = stored_access_token(&app, &row(&app, &id).await);
    let key = use_key(&app, &user).await;
    let before = peer.token_requests().await;
    peer.delay_tokens(300).await;

    let callers = 40;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, url, key) = (app.client.clone(), app.url(&format!("/v1/connections/{id}/token")), key.clone());
        tasks.push(tokio::spawn(async move { client.get(url).bearer_auth(key).send().await.expect("sent") }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for task in tasks {
        let response = task.await.expect("task");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        assert!(body["expires_at"].is_string(), "{body}");
        assert_eq!(body["provider"], "peer-basic");
        assert!(body["params"].is_object(), "{body}");
        tokens.insert(body["access_token"].as_str().expect("token").to_owned());
    }
    assert_eq!(peer.token_requests().await, before + 1, "one refresh for every caller");
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    let fresh = tokens.into_iter().next().expect("token");
    assert_ne!(fresh, old, "the refreshed token");
    assert_eq!(fresh, stored_access_token(&app, &row(&app, &id).await));

    let rows = audit_rows(&app).await;
    let used: Vec<&Value> =
        rows.iter().filter(|r| r["action"] == "connection.token_read" && r["target"] == id).collect();
    assert_eq!(used.len(), callers, "each use audited with the connection as the target");
    assert!(used.iter().all(|r| r["actor_type"] == "api_key" && r["outcome"] == "success"), "{used:?}");
    let text = serde_json::to_string(&rows).expect("json");
    assert!(!text.contains(&fresh) && !text.contains(&old), "no token in the audit rows");

    // The owner's own access token may use it too, audited as the user.
    let response = app.get_as(&user.access_token, &format!("/v1/connections/{id}/token")).await;
    assert_eq!(response.status(), 200);
    let rows = audit_rows(&app).await;
    assert!(
        rows.iter()
            .any(|r| r["action"] == "connection.token_read" && r["actor_type"] == "user" && r["actor_id"] == user.id)
    );
    app.stop().await;
}

#[tokio::test]
async fn keys_need_the_scope_and_the_provider_and_no_caller_reaches_another_users_connection() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let a = app.user("user").await;
    let b = app.user("user").await;
    let oauth = connect(&app, &a, "peer-basic", "alice").await;
    let keyed = key_connection(&app, &a, "stub-bearer").await;

    // Key creation: providers go with the scope, and name catalog providers.
    for (body, field) in [
        (json!({ "name": "k", "scopes": ["api"], "providers": ["peer-basic"] }), "providers"),
        (json!({ "name": "k", "scopes": ["connections:use"], "providers": ["no-such-provider"] }), "providers"),
        (json!({ "name": "k", "scopes": ["connections:use"], "providers": ["Not An Id"] }), "providers"),
        (json!({ "name": "k", "scopes": ["connections:use"], "providers": [] }), "providers"),
    ] {
        let response = app.client.post(app.url("/v1/api-keys")).bearer_auth(&a.access_token).json(&body).send().await;
        let problem = assert_problem(response.expect("sent"), 422).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let plain = api_key(&app, &a, json!({ "name": "plain" })).await;
    let other_provider =
        api_key(&app, &a, json!({ "name": "o", "scopes": ["connections:use"], "providers": ["stub-header"] })).await;
    let limited =
        api_key(&app, &a, json!({ "name": "l", "scopes": ["connections:use"], "providers": ["stub-bearer"] })).await;
    let listed: Value = app.get_as(&a.access_token, "/v1/api-keys").await.json().await.expect("json");
    assert!(
        listed["api_keys"].as_array().expect("keys").iter().any(|k| k["providers"] == json!(["stub-bearer"])),
        "{listed}"
    );
    // A limited key cannot make a key that reaches further.
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&limited)
        .json(&json!({ "name": "wider", "scopes": ["connections:use"] }))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 403).await;

    let token_path = |id: &str| format!("/v1/connections/{id}/token");
    // Without the scope: 403 on both routes.
    assert_problem(app.get_as(&plain, &token_path(&oauth)).await, 403).await;
    let response = app.client.get(proxy_url(&app, &keyed, "echo")).bearer_auth(&plain).send().await.expect("sent");
    assert_problem(response, 403).await;
    // Limited to another provider: 403; to this one: through.
    let response =
        app.client.get(proxy_url(&app, &keyed, "echo")).bearer_auth(&other_provider).send().await.expect("sent");
    assert_problem(response, 403).await;
    assert_problem(app.get_as(&other_provider, &token_path(&oauth)).await, 403).await;
    let response = app.client.get(proxy_url(&app, &keyed, "echo")).bearer_auth(&limited).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_problem(app.get_as(&limited, &token_path(&oauth)).await, 403).await;
    let seen_before = stub.seen().len();

    // User B, with a token or a key of the right scope: every new route answers as for no
    // such connection.
    let b_key = use_key(&app, &b).await;
    for credential in [&b.access_token, &b_key] {
        for id in [&oauth, &keyed] {
            assert_problem(app.get_as(credential, &token_path(id)).await, 404).await;
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let response = app
                    .client
                    .request(method.clone(), proxy_url(&app, id, "echo"))
                    .bearer_auth(credential)
                    .body("{}")
                    .send()
                    .await
                    .expect("sent");
                assert_problem(response, 404).await;
            }
        }
    }
    assert_eq!(stub.seen().len(), seen_before, "nothing B did reached the provider");
    let rows = audit_rows(&app).await;
    assert!(
        !rows
            .iter()
            .any(|r| r["action"] == "connection.token_read" && (r["actor_id"] == b.id || r["outcome"] == "success")),
        "refusals before the lookup leave no token row, and B read no token"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_proxy_injects_each_credential_style_passes_the_call_through_and_counts_it() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let user = app.user("user").await;
    let key = use_key(&app, &user).await;
    let connections = [
        ("stub-bearer", key_connection(&app, &user, "stub-bearer").await),
        ("stub-header", key_connection(&app, &user, "stub-header").await),
        ("stub-query", key_connection(&app, &user, "stub-query").await),
        (
            "stub-basic",
            store(&app, &user, "stub-basic", "basic", &[("user", BASIC_USER), ("password", BASIC_PASSWORD)], json!({}))
                .await,
        ),
        ("stub-oauth1", store(&app, &user, "stub-oauth1", "oauth1", &[], json!({})).await),
    ];
    for (provider, id) in &connections {
        let style = provider.trim_start_matches("stub-");
        // A GET with a query (the caller's own `api_key` is replaced, never doubled).
        let response = app
            .client
            .get(proxy_url(&app, id, "items/42?expand=a%20b&api_key=caller-value"))
            .bearer_auth(&key)
            .header("x-caller", "kept")
            .send()
            .await
            .expect("sent");
        let status = response.status();
        assert_eq!(response.headers().get("x-provider").map(|v| v.to_str().ok()), Some(Some("stub")), "{provider}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{provider}: the provider's cookie stays with the proxy"
        );
        let text = response.text().await.expect("text");
        assert_eq!(status, 200, "{provider}: {text}");
        let echo: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(echo["path"], format!("/{style}/items/42"));
        let seen = stub.seen().pop().expect("seen");
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.headers.get("x-caller").and_then(|v| v.to_str().ok()), Some("kept"), "{provider}");
        if !matches!(style, "basic" | "oauth1") {
            let version = seen.headers.get("x-stub-version").and_then(|v| v.to_str().ok());
            assert_eq!(version, Some("2024-01"), "{provider}: the template's headers are set");
        }
        let query: Vec<(String, String)> =
            form_urlencoded::parse(seen.query.unwrap_or_default().as_bytes()).into_owned().collect();
        assert!(query.contains(&("expand".into(), "a b".into())), "{provider}: {query:?}");
        if style != "query" {
            assert!(
                query.contains(&("api_key".into(), "caller-value".into())),
                "{provider}: the caller's query passes"
            );
        }
        let auth = seen.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(!auth.contains(&key), "{provider}: the caller's key never reaches the provider");

        // A POST with a form body (signed too, for OAuth 1.0a) and a PUT with JSON.
        let response = app
            .client
            .post(proxy_url(&app, id, "items"))
            .bearer_auth(&key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("name=a+b&tags=x%2Cy")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{provider}: {}", response.text().await.unwrap_or_default());
        assert_eq!(stub.seen().pop().expect("seen").body, b"name=a+b&tags=x%2Cy");
        let response =
            app.client.put(proxy_url(&app, id, "items/1")).bearer_auth(&key).json(&json!({ "n": 1 })).send().await;
        assert_eq!(response.expect("sent").status(), 200, "{provider}");
        let seen = stub.seen().pop().expect("seen");
        assert_eq!(
            (seen.method.as_str(), serde_json::from_slice::<Value>(&seen.body).expect("json")),
            ("PUT", json!({ "n": 1 }))
        );
    }
    // The provider's error answers are its own: status, type and body as it sent them.
    let bearer = &connections[0].1;
    let response = app.client.get(proxy_url(&app, bearer, "status/404")).bearer_auth(&key).send().await.expect("sent");
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.expect("text"), r#"{"provider":"not found"}"#);

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let line = |needles: &[&str]| metrics.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(line(&["connector_proxy_requests_total", "provider=\"stub-oauth1\"", "status=\"200\""]), "{metrics}");
    assert!(line(&["connector_proxy_requests_total", "provider=\"stub-bearer\"", "status=\"404\""]), "{metrics}");
    assert!(line(&["connector_proxy_duration_seconds", "provider=\"stub-query\""]), "{metrics}");
    assert!(!metrics.contains(KEY), "no credential in the metrics");
    app.stop().await;
}

#[tokio::test]
async fn a_401_is_retried_once_after_a_refresh_when_the_body_could_be_held() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "stub-oauth2", "alice").await;
    let old = stored_access_token(&app, &row(&app, &id).await);
    let before = peer.token_requests().await;

    let response = app
        .client
        .post(proxy_url(&app, &id, "reject-first"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "small": true }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(peer.token_requests().await, before + 1, "one refresh");
    let seen = stub.seen_path("/oauth2/reject-first");
    assert_eq!(seen.len(), 2, "one retry");
    let bearer = |s: &Seen| s.headers["authorization"].to_str().expect("ascii").to_owned();
    let new = stored_access_token(&app, &row(&app, &id).await);
    assert_eq!(bearer(&seen[0]), format!("Bearer {old}"));
    assert_eq!(bearer(&seen[1]), format!("Bearer {new}"), "the retry carries the refreshed token");
    assert_ne!(old, new);
    assert_eq!(seen[1].body, seen[0].body, "the body is sent again whole");

    // A body beyond what is held streams through once: the 401 goes back as it is.
    stub.state.rejected.store(false, Ordering::Release);
    let big = vec![b'x'; 200 * 1024];
    let response =
        app.client.post(proxy_url(&app, &id, "reject-first")).bearer_auth(&user.access_token).body(big).send().await;
    let response = response.expect("sent");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    assert_eq!(peer.token_requests().await, before + 1, "no refresh for a body that was not held");
    assert_eq!(stub.seen_path("/oauth2/reject-first").len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_providers_429_passes_on_with_its_retry_after_and_the_proxys_own_errors_say_whose_fault() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[("CONNECTORS_PROXY_TIMEOUT_SECS", "1")]).await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-bearer").await;
    let get = |id: &str, path: &str| app.client.get(proxy_url(&app, id, path)).bearer_auth(&user.access_token).send();

    let response = get(&id, "status/429").await.expect("sent");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.text().await.expect("text"), "slow down, from the provider", "the provider's body, not ours");

    let closed = key_connection(&app, &user, "stub-closed").await;
    let problem = assert_problem(get(&closed, "x").await.expect("sent"), 502).await;
    assert_eq!((problem["code"].as_str(), problem["fault"].as_str()), (Some("provider_unreachable"), Some("provider")));

    let problem = assert_problem(get(&id, "hang").await.expect("sent"), 504).await;
    assert_eq!((problem["code"].as_str(), problem["fault"].as_str()), (Some("provider_timeout"), Some("provider")));

    let mut tx = app.state.db.begin().await.expect("tx");
    atom::storage::connections::record_failure(
        &mut tx,
        &id,
        "needs_reauth",
        "invalid_grant: test",
        atom::storage::now_ms(),
    )
    .await
    .expect("marked");
    tx.commit().await.expect("commit");
    let problem = assert_problem(get(&id, "x").await.expect("sent"), 409).await;
    assert_eq!(
        (problem["code"].as_str(), problem["fault"].as_str()),
        (Some("connection_needs_reauth"), Some("connection"))
    );
    app.stop().await;
}

#[tokio::test]
async fn calls_are_rate_limited_per_connection_and_per_key() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let limits = [
        ("CONNECTORS_PROXY_CONNECTION_PER_MINUTE", "1"),
        ("CONNECTORS_PROXY_CONNECTION_BURST", "3"),
        ("CONNECTORS_PROXY_KEY_PER_MINUTE", "1"),
        ("CONNECTORS_PROXY_KEY_BURST", "5"),
    ];
    let app = spawn(&stub, &peer, &limits).await;
    let user = app.user("user").await;
    let key = use_key(&app, &user).await;
    let first = key_connection(&app, &user, "stub-bearer").await;
    let second = key_connection(&app, &user, "stub-header").await;
    let get = |id: &str| app.client.get(proxy_url(&app, id, "x")).bearer_auth(&key).send();
    for _ in 0..3 {
        assert_eq!(get(&first).await.expect("sent").status(), 200);
    }
    let problem = assert_problem(get(&first).await.expect("sent"), 429).await;
    assert_eq!((problem["code"].as_str(), problem["fault"].as_str()), (Some("rate_limited"), Some("caller")));
    // Another connection has its own budget, until the key's runs out.
    assert_eq!(get(&second).await.expect("sent").status(), 200);
    let response = get(&second).await.expect("sent");
    assert!(response.headers().get("retry-after").is_some());
    let problem = assert_problem(response, 429).await;
    assert!(problem["detail"].as_str().expect("detail").contains("API key"), "{problem}");
    assert_eq!(stub.seen().len(), 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_megabytes_stream_both_ways_while_the_other_side_is_still_sending() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-stream").await;
    let chunk = Bytes::from(vec![b'a'; MB]);

    // Upload: the stub sees bytes while the client still holds back 49 MB; a proxy that
    // buffered the body would make this wait run out.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let request = app.client.post(proxy_url(&app, &id, "upload")).bearer_auth(&user.access_token).body(body).send();
    let response = tokio::spawn(request);
    tx.send(Ok(chunk.clone())).await.expect("first megabyte");
    tokio::time::timeout(Duration::from_secs(30), async {
        while stub.state.uploaded.load(Ordering::Acquire) == 0 {
            let notified = stub.state.upload_progress.notified();
            if stub.state.uploaded.load(Ordering::Acquire) > 0 {
                break;
            }
            notified.await;
        }
    })
    .await
    .expect("the provider received the body's start before the client sent the rest");
    for _ in 1..50 {
        tx.send(Ok(chunk.clone())).await.expect("next megabyte");
    }
    drop(tx);
    let response = response.await.expect("task").expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["received"], 50 * MB as u64);

    // Download: the client reads the start while the provider still holds back 49 MB.
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    *stub.state.download.lock().expect("lock") = Some(rx);
    tx.send(chunk.clone()).await.expect("first megabyte");
    let mut response =
        app.client.get(proxy_url(&app, &id, "download")).bearer_auth(&user.access_token).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("the start arrived before the provider sent the rest")
        .expect("read")
        .expect("a chunk");
    let mut received = first.len();
    let feeder = tokio::spawn(async move {
        for _ in 1..50 {
            tx.send(chunk.clone()).await.expect("next megabyte");
        }
    });
    while let Some(next) = response.chunk().await.expect("read") {
        received += next.len();
    }
    feeder.await.expect("fed");
    assert_eq!(received, 50 * MB);

    // Beyond the cap: refused at once when declared.
    let app_small = spawn(&stub, &peer, &[("CONNECTORS_PROXY_MAX_BODY_BYTES", "1048576")]).await;
    let user = app_small.user("user").await;
    let id = key_connection(&app_small, &user, "stub-stream").await;
    let response = app_small
        .client
        .post(proxy_url(&app_small, &id, "upload"))
        .bearer_auth(&user.access_token)
        .body(vec![0u8; 2 * MB])
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413).await;
    app_small.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_proxy_refuses_the_servers_own_network_unless_allowed_and_never_follows_redirects() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    // No range allowed: the stub's loopback address, literal or by name, is refused.
    let closed = spawn(&stub, &peer, &[("CONNECTORS_PROXY_ALLOW_RANGES", "[]")]).await;
    let user = closed.user("user").await;
    for provider in ["stub-bearer", "stub-localhost"] {
        let id = key_connection(&closed, &user, provider).await;
        let response = closed.client.get(proxy_url(&closed, &id, "x")).bearer_auth(&user.access_token).send().await;
        let problem = assert_problem(response.expect("sent"), 502).await;
        assert_eq!(problem["code"], "destination_refused", "{provider}: {problem}");
        assert_eq!(problem["fault"], "server");
    }
    assert!(stub.seen().is_empty(), "nothing reached the stub");
    closed.stop().await;

    let app = spawn(&stub, &peer, &[]).await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-bearer").await;
    // Redirects go back to the caller as they are, to the metadata address or to loopback
    // (this test's client follows none either).
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for (path, location) in [
        ("redirect-metadata", "http://169.254.169.254/latest/meta-data/".to_owned()),
        ("redirect-local", format!("http://127.0.0.1:{}/bearer/elsewhere", stub.addr.port())),
    ] {
        let response = client.get(proxy_url(&app, &id, path)).bearer_auth(&user.access_token).send().await;
        let response = response.expect("sent");
        assert_eq!(response.status(), 302, "{path}");
        assert_eq!(response.headers()["location"], location.as_str());
    }
    assert!(stub.seen_path("/bearer/elsewhere").is_empty(), "no redirect followed");

    // Paths that would leave the base URL, sent raw (a client library would normalise them).
    for path in ["%2e%2e/admin", "%2E%2E/%2e%2e/admin", "a/..%2f..%2fadmin", "a%5c..%5cadmin", "a/%2f%2fevil.example/x"]
    {
        let request = format!(
            "GET /v1/proxy/{id}/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            app.addr, user.access_token
        );
        let response = crate::common::raw_http(app.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
        assert!(response.contains("invalid_path"), "{path}: {response}");
    }
    // An `@` stays in the path: the host is the template's.
    let response =
        app.client.get(proxy_url(&app, &id, "@169.254.169.254/x")).bearer_auth(&user.access_token).send().await;
    assert_eq!(response.expect("sent").status(), 200);
    assert_eq!(stub.seen().pop().expect("seen").path, "/bearer/@169.254.169.254/x");

    // A parameter carrying a host is refused by its pattern when connecting, and a stored
    // one that no longer passes (a row changed behind the vault's back) stops the proxy.
    let template = app.state.catalog.get("stub-shop").expect("template").clone();
    for value in ["evil.example", "127.0.0.1", "acme@evil.example", "acme/../x", "acme:8080"] {
        let given = BTreeMap::from([("shop".to_owned(), value.to_owned())]);
        assert!(atom::connectors::Values::from_params(&template, &given).is_err(), "{value}");
    }
    let good = store(&app, &user, "stub-shop", "api_key", &[("api_key", KEY)], json!({ "shop": "acme" })).await;
    let response = app.client.get(proxy_url(&app, &good, "orders")).bearer_auth(&user.access_token).send().await;
    assert_eq!(response.expect("sent").status(), 200);
    assert_eq!(stub.seen().pop().expect("seen").path, "/shops/acme/orders");
    let bad =
        store(&app, &user, "stub-shop", "api_key", &[("api_key", KEY)], json!({ "shop": "evil.example/x" })).await;
    let seen = stub.seen().len();
    let response = app.client.get(proxy_url(&app, &bad, "orders")).bearer_auth(&user.access_token).send().await;
    let problem = assert_problem(response.expect("sent"), 409).await;
    assert_eq!(problem["code"], "connection_invalid");
    assert_eq!(stub.seen().len(), seen, "nothing sent");
    app.stop().await;
}
