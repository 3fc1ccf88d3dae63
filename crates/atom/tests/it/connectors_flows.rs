//! Connecting against a real authorization server (oidc-provider on loopback): PKCE with
//! `client_secret_basic`, `client_secret_post` without PKCE, reconnecting the same account,
//! consent denied, and every way a callback can be wrong (unknown, replayed or expired state,
//! another user's state, a wrong `iss`) or a provider can fail (invalid_grant, an HTML page,
//! a missing field, a timeout), each with its stable code, nothing stored, no secret shown.

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::oauth_peer::{self, OAuthPeer, connect, consent, deliver, landing, start};

async fn spawn(peer: &OAuthPeer, extra: &[(&str, &str)]) -> TestApp {
    oauth_peer::spawn_app(peer, extra).await
}

async fn connections(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_as(token, "/v1/connections").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["connections"].as_array().expect("list").clone()
}

#[tokio::test]
async fn pkce_with_client_secret_basic_connects_and_stores_the_tokens_encrypted() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;

    let url = start(&app, &user, "peer-basic").await;
    let parsed = url::Url::parse(&url).expect("url");
    let query: std::collections::BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["redirect_uri"], oauth_peer::CALLBACK, "the one fixed callback path under ATOM_PUBLIC_URL");
    let state = &query["state"];
    assert!(state.len() >= 43, "state of at least 256 bits, base64url: {state}");

    let callback = consent(&url, "allow", "alice").await;
    let landed = landing(deliver(&app, &callback).await).await;
    assert_eq!(landed.get("provider").map(String::as_str), Some("peer-basic"));
    let id = landed["connection_id"].clone();

    let stats = peer.stats().await;
    let exchange = &stats["token_log"][0];
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(exchange["auth"], "basic", "client_secret_basic: {stats}");
    assert_eq!(exchange["code_verifier"], true, "the PKCE verifier is sent");

    let list = connections(&app, &user.access_token).await;
    assert_eq!(list.len(), 1);
    let c = &list[0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["provider"], "peer-basic");
    assert_eq!(c["label"], "alice@peer.test", "labelled from the identity endpoint");
    assert_eq!(c["status"], "active");
    let scopes: Vec<&str> = c["scopes"].as_array().expect("scopes").iter().filter_map(Value::as_str).collect();
    assert!(scopes.contains(&"openid") && scopes.contains(&"email"), "{scopes:?}");
    assert!(c["expires_at"].is_string());
    for secret_field in ["access_token", "refresh_token", "credentials"] {
        assert!(c.get(secret_field).is_none(), "{secret_field} never listed");
    }

    // At rest: ciphertext that decrypts only as this row of this user.
    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    let keyring = app.state.identity.keyring();
    let credentials = Credentials::open(&keyring, &row).expect("decrypts");
    let access = credentials.access_token.clone().expect("access token");
    assert!(credentials.refresh_token.is_some());
    assert!(!row.credentials.contains(&access));
    let mut moved = row.clone();
    moved.user_id = "someone-else".to_owned();
    assert!(Credentials::open(&keyring, &moved).is_err(), "bound to its owner");

    // The pending state was single-use: the same callback again is refused.
    let body = assert_problem(deliver(&app, &callback).await, 400).await;
    assert_eq!(body["code"], "state_invalid");
    app.stop().await;
}

#[tokio::test]
async fn client_secret_post_without_pkce_connects_and_reconnecting_updates_the_same_connection() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let first = connect(&app, &user, "peer-post", "bob").await;
    let stats = peer.stats().await;
    assert_eq!(stats["token_log"][0]["auth"], "post", "client_secret_post: {stats}");
    assert_eq!(stats["token_log"][0]["code_verifier"], false, "no PKCE for this client");

    let again = connect(&app, &user, "peer-post", "bob").await;
    assert_eq!(first, again, "the same provider account updates its connection");
    let other = connect(&app, &user, "peer-post", "alice").await;
    assert_ne!(first, other, "another provider account is another connection");
    assert_eq!(connections(&app, &user.access_token).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn consent_denied_lands_with_access_denied_and_stores_nothing() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let url = start(&app, &user, "peer-basic").await;
    let callback = consent(&url, "deny", "alice").await;
    let landed = landing(deliver(&app, &callback).await).await;
    assert_eq!(landed.get("error").map(String::as_str), Some("access_denied"), "{landed:?}");
    assert!(!landed.contains_key("connection_id"));
    assert!(connections(&app, &user.access_token).await.is_empty());
    assert_eq!(peer.token_requests().await, 0, "no code to exchange");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_iss_an_expired_state_and_made_up_states_are_refused() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;

    // A mix-up: the response claims another authorization server (RFC 9207).
    let callback = consent(&start(&app, &user, "peer-basic").await, "allow", "alice").await;
    let mut forged = url::Url::parse(&callback).expect("url");
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            (k.clone().into_owned(), if k == "iss" { "https://evil.example".to_owned() } else { v.into_owned() })
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let landed = landing(deliver(&app, forged.as_str()).await).await;
    assert_eq!(landed.get("error").map(String::as_str), Some("issuer_mismatch"));
    // Without `iss` at all, from a server that sends it: refused too.
    let callback = consent(&start(&app, &user, "peer-basic").await, "allow", "alice").await;
    let mut stripped = url::Url::parse(&callback).expect("url");
    let pairs: Vec<(String, String)> =
        stripped.query_pairs().filter(|(k, _)| k != "iss").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    stripped.query_pairs_mut().clear().extend_pairs(pairs);
    let landed = landing(deliver(&app, stripped.as_str()).await).await;
    assert_eq!(landed.get("error").map(String::as_str), Some("issuer_mismatch"));

    // Expired: the pending authorization's ten minutes are over.
    let callback = consent(&start(&app, &user, "peer-basic").await, "allow", "alice").await;
    expire_pending_authorizations(&app).await;
    let landed = landing(deliver(&app, &callback).await).await;
    assert_eq!(landed.get("error").map(String::as_str), Some("state_expired"));

    // Made up, or missing: nothing to return to, a problem with the code.
    let body =
        assert_problem(deliver(&app, "http://atom.test/v1/connections/callback?code=x&state=made-up").await, 400).await;
    assert_eq!(body["code"], "state_invalid");
    assert_eq!(body["type"], "urn:atom:problem:connection-state-invalid");
    let body = assert_problem(deliver(&app, "http://atom.test/v1/connections/callback?code=x").await, 422).await;
    assert_eq!(body["code"], "invalid_callback");

    assert!(connections(&app, &user.access_token).await.is_empty(), "nothing was connected");
    assert_eq!(peer.token_requests().await, 0, "no refused callback exchanged its code");
    app.stop().await;
}

async fn expire_pending_authorizations(app: &TestApp) {
    let sql = "UPDATE connection_authorizations SET expires_at = 0";
    match &app.state.db {
        atom::Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        atom::Db::Postgres(pool, ..) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .expect("expired");
}

#[tokio::test]
async fn another_users_state_gives_that_user_nothing_and_the_codes_are_not_crossed() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let alice = app.user("user").await;
    let mallory = app.user("user").await;
    // Mallory authorizes at the provider as herself, then swaps in Alice's state, hoping her
    // provider account lands on Alice's connections (or Alice's on hers).
    let alice_url = start(&app, &alice, "peer-basic").await;
    let mallory_callback = consent(&start(&app, &mallory, "peer-basic").await, "allow", "bob").await;
    let alice_state = url::Url::parse(&alice_url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .expect("state")
        .1
        .into_owned();
    let mut crossed = url::Url::parse(&mallory_callback).expect("url");
    let pairs: Vec<(String, String)> = crossed
        .query_pairs()
        .map(|(k, v)| (k.clone().into_owned(), if k == "state" { alice_state.clone() } else { v.into_owned() }))
        .collect();
    crossed.query_pairs_mut().clear().extend_pairs(pairs);
    let landed = landing(deliver(&app, crossed.as_str()).await).await;
    // Alice's PKCE verifier does not match the challenge Mallory's code was issued for.
    assert_eq!(landed.get("error").map(String::as_str), Some("invalid_grant"), "{landed:?}");
    assert!(connections(&app, &alice.access_token).await.is_empty(), "nothing landed on Alice");
    assert!(connections(&app, &mallory.access_token).await.is_empty(), "nothing landed on Mallory");
    // Mallory's own state with her own code connects her account to her, and only to her.
    let landed = landing(deliver(&app, &mallory_callback).await).await;
    assert!(landed.contains_key("connection_id"), "{landed:?}");
    assert_eq!(connections(&app, &mallory.access_token).await[0]["label"], "bob@peer.test");
    assert!(connections(&app, &alice.access_token).await.is_empty(), "still nothing on Alice");
    app.stop().await;
}

#[tokio::test]
async fn provider_failures_at_the_token_endpoint_have_stable_codes_and_store_nothing() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[("CONNECTORS_HTTP_TIMEOUT_SECS", "1")]).await;
    let user = app.user("user").await;
    for (fault, code) in [
        ("invalid_grant", "invalid_grant"),
        ("html", "invalid_response"),
        ("missing_access_token", "missing_field"),
        ("slow", "timeout"),
        ("server_error", "provider_unavailable"),
    ] {
        let callback = consent(&start(&app, &user, "peer-post").await, "allow", "alice").await;
        peer.fault(json!({ "token": fault, "count": 1 })).await;
        let landed = landing(deliver(&app, &callback).await).await;
        assert_eq!(landed.get("error").map(String::as_str), Some(code), "{fault}: {landed:?}");
    }
    assert!(connections(&app, &user.access_token).await.is_empty(), "no failure stored a connection");
    // Each failure is audited under its code, with nothing of the provider's text that looks
    // like a credential.
    let audit = audit_rows(&app).await;
    let failures: Vec<&Value> = audit.iter().filter(|r| r["action"] == "connection.failed").collect();
    assert_eq!(failures.len(), 5, "{audit:?}");
    let text = serde_json::to_string(&audit).expect("json");
    assert!(!text.contains("leaked-secret-value") && !text.contains("abc.def.ghi"), "{text}");
    app.stop().await;
}

/// Every audit row, through the admin API.
pub async fn audit_rows(app: &TestApp) -> Vec<Value> {
    let admin = app.user("admin").await;
    let response = app.get_as(&admin.access_token, "/v1/admin/audit?limit=200").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["entries"].as_array().cloned().unwrap_or_else(|| panic!("audit page: {body}"))
}

#[tokio::test]
async fn starting_needs_a_known_oauth_provider_its_app_and_an_allowed_return_url() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let post = |body: Value| {
        app.client.post(app.url("/v1/connections/authorize")).bearer_auth(&user.access_token).json(&body).send()
    };
    let body = assert_problem(post(json!({ "provider": "nope" })).await.expect("sent"), 404).await;
    assert_eq!(body["code"], "unknown_provider");
    let body = assert_problem(
        post(json!({ "provider": "peer-basic", "return_to": "https://evil.example/steal" })).await.expect("sent"),
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "return_to");
    app.state.connectors.add_provider(peer.spec("peer-unset", atom::connectors::spec::TokenAuth::Post));
    let body = assert_problem(post(json!({ "provider": "peer-unset" })).await.expect("sent"), 409).await;
    assert_eq!(body["code"], "not_configured");
    app.stop().await;
}
