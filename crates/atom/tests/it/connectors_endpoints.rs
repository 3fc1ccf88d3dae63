//! A connection's endpoints, against the real authorization server (oidc-provider on
//! loopback): a template with only an `issuer` reads its endpoints from the server's metadata
//! (OIDC discovery, cached) and pushes its authorization request when the server requires it
//! (RFC 9126); a template whose URLs carry a connection parameter (a tenant in the path) gets
//! the user's checked value at authorization, exchange, refresh and revocation, and a bad value
//! never reaches a URL. The provider's own revocation call (GitHub's
//! `DELETE /applications/{client_id}/grant`) is checked by a strict local stub, since no real
//! server here speaks it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::common::{TestApp, TestDb, assert_problem};
use crate::oauth_peer::{self, OAuthPeer, consent, deliver, landing};

/// An application whose providers directory holds the peer's two templates and `templates`.
async fn spawn_with(peer: &OAuthPeer, templates: &[(&str, String)]) -> TestApp {
    let db = TestDb::new().await;
    let dir = db.dir.path().join("providers");
    peer.write_templates(&dir);
    for (name, body) in templates {
        std::fs::write(dir.join(format!("{name}.toml")), body).expect("write template");
    }
    let dir = dir.display().to_string();
    let mut config = oauth_peer::app_config();
    config.push(("CONNECTORS_PROVIDERS_DIR", dir.as_str()));
    TestApp::spawn_on(db, &config, axum::Router::new()).await
}

/// `POST /v1/connections/authorize` as `token`: the response.
async fn authorize(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url("/v1/connections/authorize")).bearer_auth(token).json(&body).send().await.expect("sent")
}

async fn authorization_url(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let body: Value = response.json().await.expect("json");
    body["authorization_url"].as_str().expect("authorization_url").to_owned()
}

async fn disconnect(app: &TestApp, token: &str, id: &str) -> Value {
    let response =
        app.client.delete(app.url(&format!("/v1/connections/{id}"))).bearer_auth(token).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn query(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url).expect("url").query_pairs().into_owned().collect()
}

/// A template with nothing but its issuer: discovery gives every endpoint.
fn issuer_only(peer: &OAuthPeer) -> String {
    let issuer = &peer.issuer;
    format!(
        r#"id = "peer-discovered"
name = "Peer discovered"
auth_mode = "oauth2_authorization_code"

[oauth2]
issuer = "{issuer}"
pkce = true
scopes = ["openid", "offline_access", "email"]
client_auth = "basic"

[oauth2.authorization_params]
prompt = "consent"

[api]
base_url = "{issuer}"

[api.credential]
in = "bearer"

[identity]
url = "{issuer}/me"
label = "/email"
account_id = "/sub"
"#
    )
}

#[tokio::test]
async fn an_issuer_template_discovers_its_endpoints_and_pushes_its_request_when_the_server_requires_it() {
    let peer = OAuthPeer::start_options(json!({ "require_par": true })).await;
    let app = spawn_with(&peer, &[("peer-discovered", issuer_only(&peer))]).await;
    oauth_peer::set_app(&app, "peer-discovered", oauth_peer::BASIC_CLIENT).await;
    let user = app.user("user").await;

    let url = authorization_url(
        authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-discovered", "return_to": oauth_peer::RETURN_URL }),
        )
        .await,
    )
    .await;
    assert!(url.starts_with(&format!("{}/auth?", peer.issuer)), "the discovered authorization endpoint: {url}");
    let q = query(&url);
    assert_eq!(q.keys().collect::<Vec<_>>(), ["client_id", "request_uri"], "only the pushed request's handle: {url}");
    assert!(q["request_uri"].starts_with("urn:ietf:params:oauth:request_uri:"), "{url}");
    let stats = peer.stats().await;
    assert_eq!(stats["par_requests"], 1, "{stats}");
    let discovered = stats["discovery_requests"].as_u64().expect("count");
    assert!(discovered >= 1, "{stats}");

    let landed = landing(deliver(&app, &consent(&url, "allow", "alice").await).await).await;
    assert!(!landed.contains_key("error"), "connected through the pushed request: {landed:?}");
    let id = landed["connection_id"].clone();
    let stats = peer.stats().await;
    assert_eq!(stats["token_log"][0]["grant_type"], "authorization_code", "the discovered token endpoint: {stats}");
    assert_eq!(stats["token_log"][0]["auth"], "basic");
    assert_eq!(stats["token_log"][0]["code_verifier"], true);

    // A second authorization uses the cached metadata.
    let again = authorization_url(
        authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-discovered", "return_to": oauth_peer::RETURN_URL }),
        )
        .await,
    )
    .await;
    assert!(query(&again).contains_key("request_uri"));
    let stats = peer.stats().await;
    assert_eq!(stats["discovery_requests"].as_u64(), Some(discovered), "metadata cached: {stats}");
    assert_eq!(stats["par_requests"], 2);

    // Disconnecting revokes at the discovered revocation endpoint.
    let body = disconnect(&app, &user.access_token, &id).await;
    assert_eq!(body["revoked"], true, "{body}");
    assert_eq!(peer.stats().await["revocations"], 2, "refresh then access token");
    app.stop().await;
}

#[tokio::test]
async fn a_server_without_par_is_sent_the_request_in_the_url() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn_with(&peer, &[("peer-discovered", issuer_only(&peer))]).await;
    oauth_peer::set_app(&app, "peer-discovered", oauth_peer::BASIC_CLIENT).await;
    let user = app.user("user").await;
    let url = authorization_url(
        authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-discovered", "return_to": oauth_peer::RETURN_URL }),
        )
        .await,
    )
    .await;
    let q = query(&url);
    assert_eq!(q["code_challenge_method"], "S256", "{url}");
    assert!(!q.contains_key("request_uri"));
    assert_eq!(peer.stats().await["par_requests"], 0);
    let landed = landing(deliver(&app, &consent(&url, "allow", "alice").await).await).await;
    assert!(landed.contains_key("connection_id"), "{landed:?}");
    app.stop().await;
}

/// A template whose every URL names the connection's tenant in its path.
fn tenant_template(peer: &OAuthPeer) -> String {
    let issuer = &peer.issuer;
    format!(
        r#"id = "peer-tenant"
name = "Peer tenant"
auth_mode = "oauth2_authorization_code"

[[params]]
name = "tenant"
label = "Tenant"
pattern = "^[a-z0-9][a-z0-9-]{{0,39}}$"
example = "contoso"

[oauth2]
authorization_url = "{issuer}/tenants/{{tenant}}/auth"
token_url = "{issuer}/tenants/{{tenant}}/token"
pkce = true
scopes = ["openid", "offline_access", "email"]
client_auth = "basic"

[oauth2.authorization_params]
prompt = "consent"

[oauth2.revocation]
style = "rfc7009"
url = "{issuer}/tenants/{{tenant}}/token/revocation"
client_auth = "basic"

[api]
base_url = "{issuer}/tenants/{{tenant}}"

[api.credential]
in = "bearer"

[identity]
url = "/me"
label = "/email"
account_id = "/sub"
"#
    )
}

#[tokio::test]
async fn a_connection_parameter_fills_the_urls_at_every_step_and_a_bad_one_is_refused() {
    // The exchange's access token is due at once, so the refresh route refreshes.
    let peer = OAuthPeer::start_options(json!({ "first_access_ttl": 1, "access_ttl": 3600 })).await;
    let app = spawn_with(&peer, &[("peer-tenant", tenant_template(&peer))]).await;
    oauth_peer::set_app(&app, "peer-tenant", oauth_peer::BASIC_CLIENT).await;
    let user = app.user("user").await;

    for (params, field) in [
        (json!({}), "params.tenant"),
        (json!({ "tenant": "evil.example.com/x" }), "params.tenant"),
        (json!({ "tenant": "Contoso" }), "params.tenant"),
        (json!({ "tenant": "contoso", "region": "eu" }), "params.region"),
    ] {
        let response = authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-tenant", "params": params, "return_to": oauth_peer::RETURN_URL }),
        )
        .await;
        let problem = assert_problem(response, 422).await;
        let fields: Vec<&str> =
            problem["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
        assert!(fields.contains(&field), "{params} names {field}: {problem}");
    }
    assert_eq!(peer.stats().await["tenant_log"], json!([]), "no bad value reached the provider");

    let url = authorization_url(
        authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-tenant", "params": { "tenant": "contoso" }, "return_to": oauth_peer::RETURN_URL }),
        )
        .await,
    )
    .await;
    assert!(url.starts_with(&format!("{}/tenants/contoso/auth?", peer.issuer)), "{url}");
    let landed = landing(deliver(&app, &consent(&url, "allow", "alice").await).await).await;
    let id = landed.get("connection_id").cloned().unwrap_or_else(|| panic!("connected: {landed:?}"));

    let view: Value =
        app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["label"], "alice@peer.test", "the identity URL filled too: {view}");

    let response = app
        .client
        .post(app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let stats = peer.stats().await;
    let grants: Vec<&str> =
        stats["token_log"].as_array().expect("log").iter().filter_map(|t| t["grant_type"].as_str()).collect();
    assert_eq!(grants, ["authorization_code", "refresh_token"], "{stats}");

    let body = disconnect(&app, &user.access_token, &id).await;
    assert_eq!(body["revoked"], true, "{body}");

    let stats = peer.stats().await;
    let log: Vec<(String, String)> = stats["tenant_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|e| (e["tenant"].as_str().unwrap_or("").to_owned(), e["path"].as_str().unwrap_or("").to_owned()))
        .collect();
    let paths: Vec<&str> = log.iter().map(|(_, p)| p.as_str()).collect();
    assert!(log.iter().all(|(t, _)| t == "contoso"), "{log:?}");
    for path in ["/auth", "/token", "/me", "/token/revocation"] {
        assert!(paths.contains(&path), "{path} reached under the tenant: {log:?}");
    }
    assert_eq!(paths.iter().filter(|p| **p == "/token").count(), 2, "exchange and refresh: {log:?}");
    assert_eq!(paths.iter().filter(|p| **p == "/token/revocation").count(), 2, "{log:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_template_without_an_issuer_pushes_its_request_to_the_par_url_it_declares() {
    let peer = OAuthPeer::start_options(json!({ "require_par": true })).await;
    // The tenant template, with its PAR endpoint named (under the tenant) instead of discovered.
    let template = tenant_template(&peer)
        .replace("pkce = true\n", &format!("pkce = true\npar_url = \"{}/tenants/{{tenant}}/request\"\n", peer.issuer));
    assert!(template.contains("par_url") && !template.contains("issuer ="), "{template}");
    let app = spawn_with(&peer, &[("peer-tenant", template)]).await;
    oauth_peer::set_app(&app, "peer-tenant", oauth_peer::BASIC_CLIENT).await;
    let user = app.user("user").await;

    let url = authorization_url(
        authorize(
            &app,
            &user.access_token,
            json!({ "provider": "peer-tenant", "params": { "tenant": "contoso" }, "return_to": oauth_peer::RETURN_URL }),
        )
        .await,
    )
    .await;
    assert!(url.starts_with(&format!("{}/tenants/contoso/auth?", peer.issuer)), "{url}");
    let q = query(&url);
    assert_eq!(q.keys().collect::<Vec<_>>(), ["client_id", "request_uri"], "only the pushed request's handle: {url}");
    let stats = peer.stats().await;
    assert_eq!(stats["par_requests"], 1, "{stats}");
    assert_eq!(stats["discovery_requests"], 0, "no metadata read: {stats}");
    let pushed: Vec<&Value> =
        stats["tenant_log"].as_array().expect("log").iter().filter(|e| e["path"] == "/request").collect();
    assert_eq!(pushed.len(), 1, "{stats}");
    assert_eq!(pushed[0]["tenant"], "contoso", "the connection's parameter filled the PAR URL");

    let landed = landing(deliver(&app, &consent(&url, "allow", "alice").await).await).await;
    assert!(landed.contains_key("connection_id"), "connected through the pushed request: {landed:?}");
    let stats = peer.stats().await;
    assert_eq!(stats["token_log"][0]["grant_type"], "authorization_code", "{stats}");
    assert_eq!(stats["token_log"][0]["code_verifier"], true);

    // A parameter that fails its pattern never reaches the PAR endpoint.
    let response = authorize(
        &app,
        &user.access_token,
        json!({ "provider": "peer-tenant", "params": { "tenant": "evil.example.com/x" }, "return_to": oauth_peer::RETURN_URL }),
    )
    .await;
    assert_problem(response, 422).await;
    assert_eq!(peer.stats().await["par_requests"], 1);
    app.stop().await;
}

/// What the strict stub saw: the revoked token, or why a request was refused.
type Seen = Arc<Mutex<Vec<Result<String, String>>>>;

/// GitHub's "Delete an app authorization", as strict as GitHub documents it: `DELETE
/// /applications/{client_id}/grant`, HTTP Basic with the app's client id and secret, a JSON
/// body holding only `access_token`.
async fn github_grant(
    State((seen, expected_basic)): State<(Seen, String)>,
    method: Method,
    uri: Uri,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let verdict = (|| {
        if method != Method::DELETE {
            return Err(format!("method {method}"));
        }
        if uri.query().is_some() {
            return Err("a query string".to_owned());
        }
        if client_id != oauth_peer::POST_CLIENT.0 {
            return Err(format!("client id {client_id}"));
        }
        if header("authorization") != expected_basic {
            return Err("not the app's Basic credentials".to_owned());
        }
        if !header("content-type").starts_with("application/json") {
            return Err(format!("content type {}", header("content-type")));
        }
        let json: Value = serde_json::from_slice(&body).map_err(|_| "a body that is not JSON".to_owned())?;
        let object = json.as_object().ok_or("a body that is not an object")?;
        match (object.len(), object.get("access_token").and_then(Value::as_str)) {
            (1, Some(token)) if !token.is_empty() => Ok(token.to_owned()),
            _ => Err(format!("body fields {:?}", object.keys().collect::<Vec<_>>())),
        }
    })();
    let answer = match &verdict {
        Ok(_) => (StatusCode::NO_CONTENT, String::new()),
        Err(why) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{{\"message\":\"{why}\"}}")),
    };
    seen.lock().expect("lock").push(verdict);
    answer
}

#[tokio::test]
async fn a_provider_revocation_call_is_sent_as_the_template_declares_it() {
    use base64::Engine;
    let seen: Seen = Arc::default();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            oauth_peer::POST_CLIENT.0,
            oauth_peer::POST_CLIENT.1
        ))
    );
    let seen_elsewhere = Arc::clone(&seen);
    let stub = axum::Router::new()
        .route("/applications/{client_id}/grant", axum::routing::any(github_grant))
        .fallback(move |uri: Uri| {
            let seen = Arc::clone(&seen_elsewhere);
            async move {
                seen.lock().expect("lock").push(Err(format!("unexpected path {uri}")));
                StatusCode::NOT_FOUND
            }
        })
        .with_state((Arc::clone(&seen), expected));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stub_url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, stub).await });

    let peer = OAuthPeer::start(3600).await;
    let issuer = &peer.issuer;
    let template = format!(
        r#"id = "peer-grant"
name = "Peer with GitHub's revocation"
auth_mode = "oauth2_authorization_code"

[oauth2]
authorization_url = "{issuer}/auth"
token_url = "{issuer}/token"
scopes = ["openid", "offline_access", "email"]
client_auth = "form"

[oauth2.authorization_params]
prompt = "consent"

[oauth2.revocation]
style = "provider"
url = "{stub_url}/applications/{{client_id}}/grant"
method = "DELETE"
token = "access"
token_in = "json"
token_field = "access_token"
client_auth = "basic"

[api]
base_url = "{issuer}"

[api.credential]
in = "bearer"

[identity]
url = "{issuer}/me"
label = "/email"
account_id = "/sub"
"#
    );
    let app = spawn_with(&peer, &[("peer-grant", template)]).await;
    oauth_peer::set_app(&app, "peer-grant", oauth_peer::POST_CLIENT).await;
    let user = app.user("user").await;
    let id = oauth_peer::connect(&app, &user, "peer-grant", "alice").await;

    let body = disconnect(&app, &user.access_token, &id).await;
    assert_eq!(body["revoked"], true, "{body}");
    let outcomes = seen.lock().expect("lock").clone();
    assert_eq!(outcomes.len(), 1, "one call: {outcomes:?}");
    let token = outcomes[0].clone().unwrap_or_else(|why| panic!("the stub refused the revocation: {why}"));
    // The token sent is the connection's real access token: the provider still honours it.
    let me = reqwest::Client::new().get(format!("{issuer}/me")).bearer_auth(&token).send().await.expect("sent");
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.expect("json")["sub"], "alice");
    assert_eq!(peer.stats().await["revocations"], 0, "no RFC 7009 call besides the provider's own");
    app.stop().await;
}
