//! Helpers for the identity and audit tests: JSON calls with or without a bearer token, the
//! 401 challenge assertion, the audit log as an admin sees it, and access tokens built by hand
//! (base64url JSON header and claims, Ed25519-signed with `ed25519-dalek` directly), so that a
//! bug in issuing cannot hide a bug in verifying.

#![allow(dead_code)]

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};

/// A client whose connections come from `127.0.0.<last>`, a distinct client address.
pub fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, last])).build().expect("client")
}

/// `POST path` with a JSON body, with a bearer token when one is given.
pub async fn post(app: &TestApp, token: Option<&str>, path: &str, body: &Value) -> reqwest::Response {
    post_with(&app.client, app, token, path, body).await
}

pub async fn post_with(
    client: &reqwest::Client,
    app: &TestApp,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    let mut request = client.post(app.url(path)).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sent")
}

pub async fn delete_as(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client.delete(app.url(path)).bearer_auth(token).send().await.expect("sent")
}

/// `POST /v1/auth/login` from `client`, whatever the answer.
pub async fn try_login(client: &reqwest::Client, app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post_with(client, app, None, "/v1/auth/login", &json!({ "email": email, "password": password })).await
}

/// `POST /v1/auth/refresh` from `client`, whatever the answer.
pub async fn try_refresh(client: &reqwest::Client, app: &TestApp, refresh_token: &str) -> reqwest::Response {
    post_with(client, app, None, "/v1/auth/refresh", &json!({ "refresh_token": refresh_token })).await
}

/// Asserts a 401 problem with a Bearer challenge: with `error="<error>"` when `error` is
/// given, without any error attribute when it is `None` (RFC 6750 §3, no credentials sent).
pub async fn assert_unauthorized(response: reqwest::Response, error: Option<&str>) -> Value {
    let url = response.url().clone();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("401 from {url} carries WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(r#"realm="atom""#), "{challenge}");
    match error {
        Some(error) => assert!(challenge.contains(&format!(r#"error="{error}""#)), "{challenge}"),
        None => assert!(!challenge.contains("error"), "no error attribute without credentials: {challenge}"),
    }
    let body = assert_problem(response, 401).await;
    assert_eq!(body["type"], "urn:atom:problem:unauthorized", "{body}");
    body
}

/// The audit entries matching `query` (e.g. `action=auth.login&outcome=failure`), every
/// page, newest first.
pub async fn audit(app: &TestApp, admin_token: &str, query: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/audit?limit=500&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = app.get_as(admin_token, &path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let page: Value = response.json().await.expect("json");
        entries.extend(page["entries"].as_array().expect("entries").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

/// Creates an API key as `token`'s owner and returns the whole creation response.
pub async fn create_api_key(app: &TestApp, token: &str, body: Value) -> Value {
    let response = post(app, Some(token), "/v1/api-keys", &body).await;
    assert_eq!(response.status(), 201, "API key created");
    response.json().await.expect("json")
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_json(value: &Value) -> String {
    b64(value.to_string().as_bytes())
}

pub fn unb64_json(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// The application's current signing key, for signing tokens by hand.
pub async fn signing_key(app: &TestApp) -> ed25519_dalek::SigningKey {
    let keys = atom::identity::signing::load(app.state.identity.db(), &app.state.identity.keyring())
        .await
        .expect("keys load")
        .expect("a signing key exists");
    ed25519_dalek::SigningKey::from_bytes(&keys.current().to_bytes())
}

/// The header of a token the application would accept.
pub async fn valid_header(app: &TestApp) -> Value {
    let keys = atom::identity::signing::load(app.state.identity.db(), &app.state.identity.keyring())
        .await
        .expect("keys load")
        .expect("a signing key exists");
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": keys.current().kid() })
}

/// Claims the application would accept for user `sub`.
pub fn valid_claims(app: &TestApp, sub: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": app.state.config.token_issuer(),
        "sub": sub,
        "aud": app.state.config.auth.audience,
        "exp": now + 600,
        "nbf": now,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
        "roles": ["user"],
        "sid": uuid::Uuid::new_v4().to_string(),
    })
}

/// A compact JWS of `header` and `claims`, signed with `key`.
pub fn sign(key: &ed25519_dalek::SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// HMAC-SHA256 (RFC 2104), for the algorithm-confusion token.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// Runs `sql` (a statement valid on both SQLite and PostgreSQL) on the application's database.
pub async fn execute(app: &TestApp, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match &app.state.db {
        atom::Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        atom::Db::Postgres(pool, ..) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .expect("statement runs");
}

/// The single text column of every row `sql` returns.
pub async fn fetch_strings(app: &TestApp, sql: &str) -> Vec<String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match &app.state.db {
        atom::Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        atom::Db::Postgres(pool, ..) => sqlx::query_scalar(sql).fetch_all(pool).await,
    }
    .expect("query runs")
}

/// `(atom_sk_<prefix>, secret)` of an API key; the secret is base64url and may contain `_`.
pub fn api_key_parts(key: &str) -> (&str, &str) {
    let split = "atom_sk_".len() + 12;
    assert_eq!(key.as_bytes().get(split), Some(&b'_'), "atom_sk_<12-char prefix>_<secret>: {key}");
    (&key[..split], &key[split + 1..])
}
