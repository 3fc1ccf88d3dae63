//! The proxy's record of who used a connection, and calls of the provider's API base URL
//! itself, against the stub provider of `connectors_proxy` on loopback.
//!
//! - A caller's first proxied call in a window (`connectors.proxy_use_window_secs`) adds one
//!   `connection.proxy_used` row, which the admin history shows with the caller (the API key,
//!   or the user) and when; later calls of the same caller in the window add none, another
//!   caller adds its own, a refused call none, and a call after the window a new one.
//! - `/v1/proxy/{connection_id}` and `/v1/proxy/{connection_id}/` call the template's base URL.

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser, assert_problem};
use crate::connectors_proxy::{Stub, key_connection, proxy_url, spawn};
use crate::oauth_peer::OAuthPeer;

const USED: &str = "connection.proxy_used";

/// A `connections:use` key of `user`'s: (the key, its id).
async fn agent_key(app: &TestApp, user: &TestUser) -> (String, String) {
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "name": "agent", "scopes": ["connections:use"] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
    let body: Value = response.json().await.expect("json");
    (body["key"].as_str().expect("key").to_owned(), body["id"].as_str().expect("id").to_owned())
}

/// The connection's `connection.proxy_used` entries in its admin history, newest first.
async fn proxy_uses(app: &TestApp, admin: &TestUser, id: &str) -> Vec<Value> {
    let response = app.get_as(&admin.access_token, &format!("/v1/admin/connections/{id}/history")).await;
    assert_eq!(response.status(), 200);
    let history: Value = response.json().await.expect("json");
    history["actions"].as_array().expect("actions").iter().filter(|a| a["action"] == USED).cloned().collect()
}

async fn call(app: &TestApp, credential: &str, id: &str, path: &str) -> reqwest::Response {
    app.client.get(proxy_url(app, id, path)).bearer_auth(credential).send().await.expect("sent")
}

#[tokio::test]
async fn the_history_shows_who_used_a_connection_through_the_proxy_once_per_caller_and_window() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-bearer").await;
    let (key, key_id) = agent_key(&app, &user).await;
    assert!(proxy_uses(&app, &admin, &id).await.is_empty(), "no use yet");

    // A key without the scope is refused before the connection is used: nothing recorded.
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({ "name": "plain" }))
        .send()
        .await
        .expect("sent");
    let plain = response.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_owned();
    assert_problem(call(&app, &plain, &id, "items/1").await, 403).await;
    assert!(proxy_uses(&app, &admin, &id).await.is_empty(), "a refused call is no use");

    // The agent's first call: one row naming its key, the connection and the provider.
    let response = call(&app, &key, &id, "items/1").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    let uses = proxy_uses(&app, &admin, &id).await;
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0]["actor_type"], "api_key");
    assert_eq!(uses[0]["actor_id"], key_id.as_str());
    assert_eq!(uses[0]["outcome"], "success");
    assert_eq!(uses[0]["details"]["provider"], "stub-bearer");
    assert_eq!(uses[0]["details"]["window_secs"], 600, "the default window");
    assert!(uses[0]["at"].is_string());

    // A second call of the same key in the window: no second row.
    assert_eq!(call(&app, &key, &id, "items/2").await.status(), 200);
    assert_eq!(proxy_uses(&app, &admin, &id).await.len(), 1, "one row per caller and window");

    // The owner with their own token is another caller: a row of its own.
    assert_eq!(call(&app, &user.access_token, &id, "items/2").await.status(), 200);
    assert_eq!(call(&app, &user.access_token, &id, "items/3").await.status(), 200);
    let uses = proxy_uses(&app, &admin, &id).await;
    assert_eq!(uses.len(), 2, "{uses:?}");
    let by_user: Vec<&Value> = uses.iter().filter(|u| u["actor_type"] == "user").collect();
    assert_eq!(by_user.len(), 1, "{uses:?}");
    assert_eq!(by_user[0]["actor_id"], user.id.as_str());

    // Many first calls at once, on another connection: they share one row.
    let other = key_connection(&app, &user, "stub-bearer").await;
    let mut calls = Vec::new();
    for n in 0..8 {
        let (client, url, key) = (app.client.clone(), proxy_url(&app, &other, &format!("items/{n}")), key.clone());
        calls.push(tokio::spawn(async move { client.get(url).bearer_auth(key).send().await.expect("sent").status() }));
    }
    for call in calls {
        assert_eq!(call.await.expect("task"), 200);
    }
    assert_eq!(proxy_uses(&app, &admin, &other).await.len(), 1, "concurrent first calls write one row");
    assert_eq!(proxy_uses(&app, &admin, &id).await.len(), 2, "each connection has its own record");

    let text = serde_json::to_string(&uses).expect("json");
    assert!(!text.contains(&key) && !text.contains(crate::connectors_proxy::KEY), "no credential in the history");
    app.stop().await;
}

#[tokio::test]
async fn a_new_window_records_the_callers_use_again() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[("CONNECTORS_PROXY_USE_WINDOW_SECS", "1")]).await;
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-bearer").await;
    let (key, _) = agent_key(&app, &user).await;

    assert_eq!(call(&app, &key, &id, "items/1").await.status(), 200);
    assert_eq!(call(&app, &key, &id, "items/2").await.status(), 200);
    assert_eq!(proxy_uses(&app, &admin, &id).await.len(), 1);
    // Past the one-second window (waiting, not timing anything): the next call is a new use.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(call(&app, &key, &id, "items/3").await.status(), 200);
    let uses = proxy_uses(&app, &admin, &id).await;
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert_eq!(uses[0]["details"]["window_secs"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_connection_alone_calls_the_templates_base_url_itself() {
    let peer = OAuthPeer::start(3600).await;
    let stub = Stub::start().await;
    let app = spawn(&stub, &peer, &[]).await;
    let user = app.user("user").await;
    let id = key_connection(&app, &user, "stub-bearer").await;
    let (key, _) = agent_key(&app, &user).await;

    for url in [app.url(&format!("/v1/proxy/{id}?page=2")), app.url(&format!("/v1/proxy/{id}/?page=2"))] {
        let response = app.client.get(&url).bearer_auth(&key).send().await.expect("sent");
        let status = response.status();
        let text = response.text().await.expect("text");
        assert_eq!(status, 200, "{url}: {text}");
        let echo: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(echo["path"], "/bearer", "{url}: the base URL as the template writes it");
        assert_eq!(echo["query"], "page=2", "{url}");
        let seen = stub.seen_path("/bearer").pop().expect("seen");
        assert_eq!(seen.headers["authorization"], format!("Bearer {}", crate::connectors_proxy::KEY));
    }
    // Every method, with a body passed through.
    let response = app
        .client
        .post(app.url(&format!("/v1/proxy/{id}")))
        .bearer_auth(&key)
        .json(&json!({ "n": 1 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let seen = stub.seen_path("/bearer").pop().expect("seen");
    assert_eq!((seen.method.as_str(), seen.body.as_slice()), ("POST", &br#"{"n":1}"#[..]));

    // The same checks as below it: another user's connection is not found, nothing sent.
    let other = app.user("user").await;
    let before = stub.seen_path("/bearer").len();
    for url in [app.url(&format!("/v1/proxy/{id}")), app.url(&format!("/v1/proxy/{id}/"))] {
        assert_problem(app.client.get(&url).bearer_auth(&other.access_token).send().await.expect("sent"), 404).await;
    }
    assert_eq!(stub.seen_path("/bearer").len(), before);
    app.stop().await;
}
