//! Trello's OAuth 1.0a three-legged flow against a strict local stub that verifies every
//! request as RFC 5849 and Trello do: the `Authorization: OAuth` header parsed, the signature
//! base string recomputed here from what was received (independently of `atom`'s signing
//! code), the HMAC-SHA1 signature compared under the consumer secret and the token secret of
//! the step, a fresh nonce, a timestamp within five minutes, the callback confirmed, the
//! verifier bound to its request token, each token usable once. A full connect, list and
//! disconnect; a wrong verifier, a wrong consumer secret, a replayed or unknown callback each
//! fail with their stable code and store nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;

use crate::common::{TestApp, TestDb, TestUser, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::oauth_peer::{self, deliver, landing};
use crate::provider_stub::{Record, Seen, Stub};

const CONSUMER_KEY: &str = "trello-consumer-key-0123";
const CONSUMER_SECRET: &str = "trello-consumer-secret-value-0123456789";
const MEMBER_ID: &str = "5abbe4b7ddc1b351ef961414";

/// What the stub issued and what it has seen used.
#[derive(Debug, Default)]
struct Issued {
    /// Request token → (its secret, the callback it was issued for, its verifier once authorized).
    request_tokens: BTreeMap<String, (String, String, Option<String>)>,
    /// Access token → its secret.
    access_tokens: BTreeMap<String, String>,
    nonces: BTreeSet<String>,
    counter: u64,
}

#[derive(Debug, Clone, Default)]
struct Trello {
    record: Record,
    issued: Arc<Mutex<Issued>>,
    /// The token deletion answers 503 (Trello unavailable) while set.
    revocation_down: Arc<Mutex<bool>>,
}

/// RFC 3986 unreserved characters stay; everything else is `%XX`, upper case (RFC 5849 §3.6).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The `Authorization: OAuth …` header's parameters (§3.5.1), decoded.
fn oauth_params(seen: &Seen) -> Result<BTreeMap<String, String>, String> {
    let header = seen.header("authorization").ok_or("no Authorization header")?;
    let fields = header.strip_prefix("OAuth ").ok_or("the Authorization header is not OAuth")?;
    let mut params = BTreeMap::new();
    for part in fields.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or_else(|| format!("malformed parameter {part}"))?;
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or("an unquoted value")?;
        if params.insert(pct_decode(name), pct_decode(value)).is_some() {
            return Err(format!("{name} twice"));
        }
    }
    Ok(params)
}

/// Verifies a signed request; its protocol parameters, or why the provider refuses it.
fn verify(stub: &Trello, seen: &Seen, token_secret: &str) -> Result<BTreeMap<String, String>, String> {
    let oauth = oauth_params(seen)?;
    if oauth.get("oauth_consumer_key").map(String::as_str) != Some(CONSUMER_KEY) {
        return Err("unknown consumer key".into());
    }
    if oauth.get("oauth_signature_method").map(String::as_str) != Some("HMAC-SHA1") {
        return Err("signature method is not HMAC-SHA1".into());
    }
    if oauth.get("oauth_version").is_some_and(|v| v != "1.0") {
        return Err("oauth_version is not 1.0".into());
    }
    let timestamp: i64 = oauth.get("oauth_timestamp").and_then(|t| t.parse().ok()).ok_or("no timestamp")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if (now - timestamp).abs() > 300 {
        return Err(format!("timestamp {timestamp} is not within 5 minutes of {now}"));
    }
    let nonce = oauth.get("oauth_nonce").filter(|n| !n.is_empty()).ok_or("no nonce")?;
    // §3.3: a nonce is used once (per timestamp and token; once at all here).
    if !stub.issued.lock().expect("lock").nonces.insert(nonce.clone()) {
        return Err("nonce replayed".into());
    }
    let signature = oauth.get("oauth_signature").ok_or("no signature")?;
    // §3.4.1: the base string from what was received: method, scheme, host, path, and every
    // query, form body and protocol parameter except the signature (and realm).
    let host = seen.header("host").ok_or("no Host")?.to_ascii_lowercase();
    let uri = format!("http://{host}{}", seen.path);
    let mut pairs: Vec<(String, String)> = seen.query.iter().map(|(k, v)| (pct(k), pct(v))).collect();
    if seen.content_type() == Some("application/x-www-form-urlencoded") {
        pairs.extend(seen.form().iter().map(|(k, v)| (pct(k), pct(v))));
    }
    pairs.extend(
        oauth
            .iter()
            .filter(|(k, _)| k.as_str() != "oauth_signature" && k.as_str() != "realm")
            .map(|(k, v)| (pct(k), pct(v))),
    );
    pairs.sort();
    let normalized = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let base = format!("{}&{}&{}", seen.method.as_str(), pct(&uri), pct(&normalized));
    let key = format!("{}&{}", pct(CONSUMER_SECRET), pct(token_secret));
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(base.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if &expected != signature {
        return Err("invalid signature".into());
    }
    Ok(oauth)
}

fn refuse(stub: &Trello, why: String, expected: bool) -> Response {
    if !expected {
        stub.record.violation(why.clone());
    }
    (StatusCode::UNAUTHORIZED, why).into_response()
}

fn form(pairs: &[(&str, &str)]) -> Response {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    ([("content-type", "application/x-www-form-urlencoded")], body).into_response()
}

async fn handle(State(stub): State<Trello>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = stub.record.seen(method, &uri, headers, body);
    let next = |prefix: &str| {
        let mut issued = stub.issued.lock().expect("lock");
        issued.counter += 1;
        format!("{prefix}{:032x}", issued.counter)
    };
    match (seen.method.clone(), seen.path.as_str()) {
        (Method::POST, "/1/OAuthGetRequestToken") => {
            let oauth = match verify(&stub, &seen, "") {
                Ok(oauth) => oauth,
                // A wrong consumer secret is a case the tests make on purpose.
                Err(why) => return refuse(&stub, why.clone(), why == "invalid signature"),
            };
            let Some(callback) = oauth.get("oauth_callback").cloned() else {
                return refuse(&stub, "no oauth_callback".into(), false);
            };
            if oauth.contains_key("oauth_token") {
                return refuse(&stub, "a token on the request token request".into(), false);
            }
            let (token, secret) = (next("req"), next("reqsecret"));
            stub.issued.lock().expect("lock").request_tokens.insert(token.clone(), (secret.clone(), callback, None));
            form(&[("oauth_token", &token), ("oauth_token_secret", &secret), ("oauth_callback_confirmed", "true")])
        }
        (Method::GET, "/1/OAuthAuthorizeToken") => {
            // The user's browser at the consent page, allowing: back to the callback.
            for (name, value) in [("name", "Atom"), ("scope", "read,write"), ("expiration", "never")] {
                if seen.query.get(name).map(String::as_str) != Some(value) {
                    stub.record.violation(format!("authorize without {name}={value}"));
                }
            }
            let token = seen.query.get("oauth_token").cloned().unwrap_or_default();
            let verifier = next("verifier");
            let mut issued = stub.issued.lock().expect("lock");
            let Some(entry) = issued.request_tokens.get_mut(&token) else {
                stub.record.violation("authorize of an unknown request token");
                return (StatusCode::BAD_REQUEST, "unknown token").into_response();
            };
            entry.2 = Some(verifier.clone());
            let location = format!("{}?oauth_token={token}&oauth_verifier={verifier}", entry.1);
            (StatusCode::FOUND, [("location", location)]).into_response()
        }
        (Method::POST, "/1/OAuthGetAccessToken") => {
            let token = oauth_params(&seen).ok().and_then(|o| o.get("oauth_token").cloned()).unwrap_or_default();
            // Each request token is exchanged once.
            let Some((secret, _, verifier)) = stub.issued.lock().expect("lock").request_tokens.remove(&token) else {
                return refuse(&stub, "unknown or used request token".into(), false);
            };
            let oauth = match verify(&stub, &seen, &secret) {
                Ok(oauth) => oauth,
                Err(why) => return refuse(&stub, why, false),
            };
            if verifier.is_none() || oauth.get("oauth_verifier") != verifier.as_ref() {
                // A wrong verifier is a case the tests make on purpose.
                return refuse(&stub, "invalid verifier".into(), true);
            }
            let (access, access_secret) = (next("access"), next("accesssecret"));
            stub.issued.lock().expect("lock").access_tokens.insert(access.clone(), access_secret.clone());
            form(&[("oauth_token", &access), ("oauth_token_secret", &access_secret)])
        }
        (Method::GET, "/1/members/me") => {
            let token = oauth_params(&seen).ok().and_then(|o| o.get("oauth_token").cloned()).unwrap_or_default();
            let Some(secret) = stub.issued.lock().expect("lock").access_tokens.get(&token).cloned() else {
                return refuse(&stub, "unknown access token".into(), false);
            };
            if let Err(why) = verify(&stub, &seen, &secret) {
                return refuse(&stub, why, false);
            }
            axum::Json(json!({ "id": MEMBER_ID, "username": "trellouser", "fullName": "Trello User" })).into_response()
        }
        // Revocation: `DELETE /1/tokens/{token}`, authenticated by the app's key and that
        // token (here a signature with both).
        (Method::DELETE, path) if path.starts_with("/1/tokens/") => {
            let deleted = path.trim_start_matches("/1/tokens/").to_owned();
            let token = oauth_params(&seen).ok().and_then(|o| o.get("oauth_token").cloned()).unwrap_or_default();
            let Some(secret) = stub.issued.lock().expect("lock").access_tokens.get(&token).cloned() else {
                return refuse(&stub, "token deletion with an unknown access token".into(), false);
            };
            if let Err(why) = verify(&stub, &seen, &secret) {
                return refuse(&stub, why, false);
            }
            if deleted != token {
                return refuse(&stub, format!("deleting {deleted} with another token"), false);
            }
            if !seen.body.is_empty() {
                stub.record.violation("a body on the token deletion");
            }
            if *stub.revocation_down.lock().expect("lock") {
                return (StatusCode::SERVICE_UNAVAILABLE, "<html><body>Service Unavailable</body></html>")
                    .into_response();
            }
            stub.issued.lock().expect("lock").access_tokens.remove(&token);
            axum::Json(json!({ "_value": null })).into_response()
        }
        (Method::POST, "/1/cards") => {
            // An API call through the proxy: signed with the access token, the form body's
            // parameters in the signature.
            let token = oauth_params(&seen).ok().and_then(|o| o.get("oauth_token").cloned()).unwrap_or_default();
            let Some(secret) = stub.issued.lock().expect("lock").access_tokens.get(&token).cloned() else {
                return refuse(&stub, "unknown access token".into(), false);
            };
            if let Err(why) = verify(&stub, &seen, &secret) {
                return refuse(&stub, why, false);
            }
            let form = seen.form();
            axum::Json(json!({
                "id": next("card"),
                "name": form.get("name"),
                "desc_len": form.get("desc").map_or(0, String::len),
                "idList": seen.query.get("idList"),
            }))
            .into_response()
        }
        (method, path) => {
            stub.record.violation(format!("unexpected {method} {path}"));
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

struct Setup {
    app: TestApp,
    stub: Stub,
    trello: Trello,
}

async fn setup(consumer_secret: &str) -> Setup {
    let trello = Trello::default();
    let router = Router::new().route("/{*rest}", axum::routing::any(handle)).with_state(trello.clone());
    let stub = Stub::start(router, trello.record.clone()).await;
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    std::fs::create_dir_all(&dir).expect("dir");
    let base = stub.url();
    let template = include_str!("../../../../providers/trello.toml")
        .replace("https://trello.com/1/", &format!("{base}/1/"))
        .replace("https://api.trello.com/1", &format!("{base}/1"));
    assert!(!template.contains("trello.com"), "every URL moved to the stub");
    std::fs::write(dir.join("trello.toml"), template).expect("write");
    let dir = dir.display().to_string();
    let mut config = oauth_peer::app_config();
    config.push(("CONNECTORS_PROVIDERS_DIR", dir.as_str()));
    // The proxy may call the stub on loopback.
    config.push(("CONNECTORS_PROXY_ALLOW_RANGES", "[\"127.0.0.0/8\"]"));
    let app = TestApp::spawn_on(db, &config, Router::new()).await;
    let admin = app.user("admin").await;
    let response = app
        .client
        .put(app.url("/v1/admin/providers/trello/app"))
        .bearer_auth(&admin.access_token)
        .json(&json!({ "client_id": CONSUMER_KEY, "client_secret": consumer_secret }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    Setup { app, stub, trello }
}

async fn start(app: &TestApp, user: &TestUser) -> reqwest::Response {
    app.client
        .post(app.url("/v1/connections/authorize"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "provider": "trello", "return_to": oauth_peer::RETURN_URL }))
        .send()
        .await
        .expect("sent")
}

/// The user's browser at Trello's consent page: the redirect to our callback.
async fn authorize(authorization_url: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = http.get(authorization_url).send().await.expect("authorize page");
    assert_eq!(response.status(), 302);
    response.headers()["location"].to_str().expect("ascii").to_owned()
}

async fn connections(app: &TestApp, user: &TestUser) -> Vec<Value> {
    let body: Value = app.get_as(&user.access_token, "/v1/connections").await.json().await.expect("json");
    body["connections"].as_array().expect("list").clone()
}

#[tokio::test]
async fn trello_connects_through_the_three_legs_and_disconnects() {
    let Setup { app, stub, .. } = setup(CONSUMER_SECRET).await;
    let user = app.user("user").await;
    let other = app.user("user").await;

    let response = start(&app, &user).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let started: Value = response.json().await.expect("json");
    let authorization_url = started["authorization_url"].as_str().expect("url");
    assert!(
        authorization_url.starts_with(&format!("{}/1/OAuthAuthorizeToken?oauth_token=req", stub.url())),
        "{authorization_url}"
    );
    let request = &stub.seen()[0];
    let oauth = oauth_params(request).expect("signed");
    assert_eq!(oauth["oauth_callback"], oauth_peer::CALLBACK, "the one callback URL");

    let callback = authorize(authorization_url).await;
    assert!(callback.starts_with(oauth_peer::CALLBACK), "{callback}");
    let landed = landing(deliver(&app, &callback).await).await;
    assert!(!landed.contains_key("error"), "{landed:?}");
    assert_eq!(landed["provider"], "trello");
    let id = landed["connection_id"].clone();

    let list = connections(&app, &user).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["auth_kind"], "oauth1");
    assert_eq!(list[0]["label"], "trellouser", "labelled from /members/me, signed with the access token");
    assert!(list[0]["expires_at"].is_null(), "expiration=never");
    assert!(connections(&app, &other).await.is_empty(), "the connection is only its starter's");

    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    assert_eq!(row.account_id, MEMBER_ID);
    let credentials = Credentials::open(&app.state.identity.keyring(), &row).expect("decrypts");
    let access = credentials.access_token.clone().expect("access token");
    let token_secret = credentials.token_secret.clone().expect("token secret");
    assert!(access.starts_with("access") && token_secret.starts_with("accesssecret"));
    assert!(!row.credentials.contains(&access) && !row.credentials.contains(&token_secret));

    // The same callback again finds nothing: the pending authorization was single-use.
    let body = assert_problem(deliver(&app, &callback).await, 400).await;
    assert_eq!(body["code"], "state_invalid");

    // Connecting the same Trello member again updates the connection.
    let started: Value = start(&app, &user).await.json().await.expect("json");
    let callback = authorize(started["authorization_url"].as_str().expect("url")).await;
    let landed = landing(deliver(&app, &callback).await).await;
    assert_eq!(landed["connection_id"], id);
    assert_eq!(connections(&app, &user).await.len(), 1);

    // The reconnection's token is the connection's now: the one to revoke.
    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    let current = Credentials::open(&app.state.identity.keyring(), &row).expect("decrypts").access_token.clone();
    let current = current.expect("access token");
    let response = app
        .client
        .delete(app.url(&format!("/v1/connections/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["revoked"], true, "{body}");
    assert!(connections(&app, &user).await.is_empty());
    // Revoked at Trello: the token deleted by a request signed with it.
    let deletions: Vec<String> =
        stub.seen().iter().filter(|r| r.method == Method::DELETE).map(|r| r.path.clone()).collect();
    assert_eq!(deletions, [format!("/1/tokens/{current}")]);

    let audit = serde_json::to_string(&audit_rows(&app).await).expect("json");
    assert!(audit.contains("connection.created") && audit.contains("connection.deleted"));
    for secret in [&access, &token_secret] {
        assert!(!audit.contains(secret.as_str()), "no token in the audit log");
    }
    stub.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_verifier_a_wrong_consumer_secret_and_an_unknown_token_each_fail_and_store_nothing() {
    let Setup { app, stub, .. } = setup(CONSUMER_SECRET).await;
    let user = app.user("user").await;

    // A verifier that is not the one issued: Trello refuses the exchange.
    let started: Value = start(&app, &user).await.json().await.expect("json");
    let callback = authorize(started["authorization_url"].as_str().expect("url")).await;
    let tampered = callback.replace("oauth_verifier=verifier", "oauth_verifier=forged");
    let landed = landing(deliver(&app, &tampered).await).await;
    assert_eq!(landed["error"], "provider_error");
    assert!(!landed.contains_key("connection_id"));
    // …and the pending authorization is gone with it.
    let body = assert_problem(deliver(&app, &callback).await, 400).await;
    assert_eq!(body["code"], "state_invalid");

    // A request token never issued by a start here.
    let unknown = format!("{}?oauth_token=req-never-issued&oauth_verifier=x", oauth_peer::CALLBACK);
    assert_eq!(assert_problem(deliver(&app, &unknown).await, 400).await["code"], "state_invalid");
    // A callback with neither state nor request token.
    assert_eq!(assert_problem(deliver(&app, oauth_peer::CALLBACK).await, 422).await["code"], "invalid_callback");

    assert!(connections(&app, &user).await.is_empty(), "nothing stored");
    stub.assert_no_violations();
    app.stop().await;

    // The instance's app with a consumer secret Trello does not know: the request token is
    // refused with a stable code, and no secret is shown.
    let Setup { app, stub, .. } = setup("not-the-consumer-secret-0123456789").await;
    let user = app.user("user").await;
    let body = assert_problem(start(&app, &user).await, 502).await;
    assert_eq!(body["code"], "provider_error");
    assert!(!body.to_string().contains("not-the-consumer-secret"), "{body}");
    assert!(connections(&app, &user).await.is_empty());
    stub.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn a_revocation_trello_refuses_still_deletes_the_connection_and_records_the_failure() {
    let Setup { app, stub, trello } = setup(CONSUMER_SECRET).await;
    let user = app.user("user").await;
    let started: Value = start(&app, &user).await.json().await.expect("json");
    let callback = authorize(started["authorization_url"].as_str().expect("url")).await;
    let landed = landing(deliver(&app, &callback).await).await;
    let id = landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone();
    let row = sql::by_id(&app.state.db, &id).await.expect("query").expect("row");
    let access =
        Credentials::open(&app.state.identity.keyring(), &row).expect("decrypts").access_token.clone().expect("token");

    *trello.revocation_down.lock().expect("lock") = true;
    let response = app
        .client
        .delete(app.url(&format!("/v1/connections/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "the local deletion does not depend on Trello");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["revoked"], false, "{body}");
    assert!(body["revocation_error"].as_str().is_some_and(|e| e.starts_with("provider_unavailable")), "{body}");
    assert!(connections(&app, &user).await.is_empty());
    assert!(sql::by_id(&app.state.db, &id).await.expect("query").is_none(), "the secrets are gone");
    assert_eq!(stub.seen().iter().filter(|r| r.method == Method::DELETE).count(), 1, "one revocation attempt");

    let audit = audit_rows(&app).await;
    let deleted = audit
        .iter()
        .find(|e| e["action"] == "connection.deleted" && e["target"] == id.as_str())
        .unwrap_or_else(|| panic!("the deletion audited: {audit:?}"));
    let details = deleted["details"].to_string();
    assert!(details.contains("provider_unavailable") && details.contains("\"revoked\":false"), "{details}");
    let text = serde_json::to_string(&audit).expect("json") + &body.to_string();
    assert!(!text.contains(&access), "no token in the audit log or the answer");
    stub.assert_no_violations();
    app.stop().await;
}

/// Connects `user`'s Trello account through the three legs; the connection id.
async fn connect(app: &TestApp, user: &TestUser) -> String {
    let started: Value = start(app, user).await.json().await.expect("json");
    let callback = authorize(started["authorization_url"].as_str().expect("url")).await;
    let landed = landing(deliver(app, &callback).await).await;
    landed.get("connection_id").unwrap_or_else(|| panic!("connected: {landed:?}")).clone()
}

/// A form body as a stream of chunks with no `Content-Length` (sent chunked).
fn chunked(body: String) -> reqwest::Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        body.into_bytes().chunks(16 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn proxied_form_bodies_are_signed_whole_within_the_bound_and_refused_beyond_it() {
    const FORM: &str = "application/x-www-form-urlencoded";
    let Setup { app, stub, .. } = setup(CONSUMER_SECRET).await;
    let user = app.user("user").await;
    let id = connect(&app, &user).await;
    let cards = app.url(&format!("/v1/proxy/{id}/cards?idList=list-1"));
    let post = |body: reqwest::Body| {
        app.client.post(&cards).bearer_auth(&user.access_token).header("content-type", FORM).body(body).send()
    };
    let form = |desc: &str| {
        form_urlencoded::Serializer::new(String::new()).extend_pairs([("name", "Card one"), ("desc", desc)]).finish()
    };

    // A small form: its parameters are in the signature the stub recomputes.
    let response = post(form("caf\u{e9} & more").into()).await.expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let card: Value = response.json().await.expect("json");
    assert_eq!((card["name"].as_str(), card["idList"].as_str()), (Some("Card one"), Some("list-1")));

    // Beyond what the proxy holds for a replay (64 KiB), streamed in without a length: still
    // held whole and signed with it.
    let desc = "x".repeat(300 * 1024);
    let response = post(chunked(form(&desc))).await.expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    assert_eq!(response.json::<Value>().await.expect("json")["desc_len"], desc.len());
    let sent = stub.seen().into_iter().filter(|s| s.path == "/1/cards").count();
    assert_eq!(sent, 2);

    // Over the bound (1 MiB by default): refused before anything goes out, declared or not.
    let desc = "x".repeat(1024 * 1024);
    for body in [reqwest::Body::from(form(&desc)), chunked(form(&desc))] {
        let problem = assert_problem(post(body).await.expect("sent"), 413).await;
        assert_eq!(problem["code"], "body_too_large", "{problem}");
        assert_eq!(problem["fault"], "caller", "{problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| d.contains("OAuth 1.0a")), "{problem}");
    }
    assert_eq!(stub.seen().into_iter().filter(|s| s.path == "/1/cards").count(), sent, "nothing sent");
    stub.assert_no_violations();
    app.stop().await;
}
