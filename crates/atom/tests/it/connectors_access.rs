//! Who reaches what: user B cannot see, use, refresh or delete user A's connection through
//! any route (each answers as for a connection that does not exist); the admin app API never
//! returns the client secret; and no credential (the tokens the provider issued, the client
//! secret) appears in any log line, response body or audit row of a whole connect, refresh,
//! failure and disconnect.

use serde_json::{Value, json};

use crate::common::{CapturedLogs, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::oauth_peer::{self, OAuthPeer, connect};

#[tokio::test]
async fn user_b_cannot_see_use_refresh_or_delete_user_as_connection() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[("CONNECTORS_REFRESH_MARGIN_SECS", "7200")]).await;
    let a = app.user("user").await;
    let b = app.user("user").await;
    let id = connect(&app, &a, "peer-basic", "alice").await;
    let before = peer.token_requests().await;

    let list: Value = app.get_as(&b.access_token, "/v1/connections").await.json().await.expect("json");
    assert_eq!(list["connections"], json!([]), "B lists none of A's");
    assert_problem(app.get_as(&b.access_token, &format!("/v1/connections/{id}")).await, 404).await;
    let refresh = app.client.post(app.url(&format!("/v1/connections/{id}/refresh"))).bearer_auth(&b.access_token);
    assert_problem(refresh.send().await.expect("sent"), 404).await;
    let delete = app.client.delete(app.url(&format!("/v1/connections/{id}"))).bearer_auth(&b.access_token);
    assert_problem(delete.send().await.expect("sent"), 404).await;
    // The agent's token path (in process) refuses B too.
    assert!(app.state.connectors.access_token(&b.id, &id).await.is_err());
    assert_eq!(peer.token_requests().await, before, "nothing B did reached the provider");
    assert_eq!(peer.stats().await["revocations"], 0);

    // A's connection is untouched, and A still reaches it.
    let view: Value = app.get_as(&a.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["status"], "active");
    assert!(app.state.connectors.access_token(&a.id, &id).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn the_admin_app_api_stores_the_secret_encrypted_and_never_returns_it() {
    let peer = OAuthPeer::start(3600).await;
    let app = oauth_peer::spawn_app(&peer, &[]).await;
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let url = app.url("/v1/admin/providers/peer-post/app");
    let body = json!({ "client_id": "new-client", "client_secret": "a-new-client-secret-0123456789", "settings": { "tenant": "t1" } });
    let response = app.client.put(&url).bearer_auth(&admin.access_token).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    assert!(!text.contains("a-new-client-secret"), "{text}");
    let view: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(view["client_id"], "new-client");
    assert_eq!(view["has_client_secret"], true);
    assert_eq!(view["settings"]["tenant"], "t1");
    assert_eq!(view["source"], "api");
    assert_eq!(view["callback_url"], oauth_peer::CALLBACK, "the URL to register at the provider");
    let shown = app.get_as(&admin.access_token, "/v1/admin/providers/peer-post/app").await.text().await.expect("text");
    assert!(!shown.contains("a-new-client-secret") && shown.contains("new-client"), "{shown}");
    let stored = atom::storage::connections::app(&app.state.db, "peer-post").await.expect("query").expect("row");
    assert!(!stored.client_secret.contains("a-new-client-secret"), "encrypted at rest");

    // Users may not; invalid bodies are named; unknown providers are 404.
    assert_problem(app.get_as(&user.access_token, "/v1/admin/providers/peer-post/app").await, 403).await;
    let bad = app.client.put(&url).bearer_auth(&admin.access_token).json(&json!({ "client_id": "" })).send().await;
    assert_problem(bad.expect("sent"), 422).await;
    let unknown = app.get_as(&admin.access_token, "/v1/admin/providers/no-such/app").await;
    assert_eq!(assert_problem(unknown, 404).await["code"], "unknown_provider");

    let deleted = app.client.delete(&url).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_eq!(deleted.status(), 204);
    assert_problem(app.get_as(&admin.access_token, "/v1/admin/providers/peer-post/app").await, 404).await;
    let audit = audit_rows(&app).await;
    assert!(audit.iter().any(|r| r["action"] == "provider_app.set" && r["target"] == "peer-post"));
    assert!(audit.iter().any(|r| r["action"] == "provider_app.deleted" && r["target"] == "peer-post"));
    app.stop().await;
}

#[tokio::test]
async fn no_credential_appears_in_logs_response_bodies_or_audit_rows() {
    let peer = OAuthPeer::start(3600).await;
    let (logs, _guard) = CapturedLogs::install();
    let app = oauth_peer::spawn_app(&peer, &[("CONNECTORS_REFRESH_MARGIN_SECS", "7200"), ("LOG", "debug")]).await;
    let user = app.user("user").await;
    let mut bodies = Vec::new();
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let first = atom::storage::connections::by_id(&app.state.db, &id).await.expect("query").expect("row");
    let keyring = app.state.identity.keyring();
    let mut secrets: Vec<String> = Vec::new();
    let creds = atom::connectors::vault::Credentials::open(&keyring, &first).expect("decrypts");
    secrets.extend(creds.access_token.clone());
    secrets.extend(creds.refresh_token.clone());

    for _ in 0..2 {
        let r = app.client.post(app.url(&format!("/v1/connections/{id}/refresh"))).bearer_auth(&user.access_token);
        bodies.push(r.send().await.expect("sent").text().await.expect("text"));
    }
    let now = atom::storage::connections::by_id(&app.state.db, &id).await.expect("query").expect("row");
    let creds = atom::connectors::vault::Credentials::open(&keyring, &now).expect("decrypts");
    secrets.extend(creds.access_token.clone());
    secrets.extend(creds.refresh_token.clone());
    peer.fault(json!({ "token": "invalid_grant", "count": 1 })).await;
    let r = app.client.post(app.url(&format!("/v1/connections/{id}/refresh"))).bearer_auth(&user.access_token);
    bodies.push(r.send().await.expect("sent").text().await.expect("text"));
    bodies.push(app.get_as(&user.access_token, "/v1/connections").await.text().await.expect("text"));
    bodies.push(app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.text().await.expect("text"));
    let d = app.client.delete(app.url(&format!("/v1/connections/{id}"))).bearer_auth(&user.access_token);
    bodies.push(d.send().await.expect("sent").text().await.expect("text"));
    let audit = serde_json::to_string(&audit_rows(&app).await).expect("json");
    app.stop().await;

    secrets.push(oauth_peer::BASIC_CLIENT.1.to_owned());
    secrets.push("leaked-secret-value".to_owned());
    assert!(secrets.len() >= 5, "tokens seen: {}", secrets.len());
    let logged = logs.text();
    assert!(!logged.is_empty(), "logs were captured");
    for secret in &secrets {
        assert!(!logged.contains(secret.as_str()), "a credential in the logs");
        assert!(!audit.contains(secret.as_str()), "a credential in the audit log");
        for body in &bodies {
            assert!(!body.contains(secret.as_str()), "a credential in a response: {body}");
        }
    }
}
