//! Keeping credentials alive against the real authorization server: refresh with rotation
//! (both tokens stored together), a thousand concurrent callers on a due token making one
//! token request, `invalid_grant` marking the connection `needs_reauth` (audited, published
//! on the bus), transient failures retried and the connection left usable, and disconnecting
//! revoking at the provider, also when the provider is down.

use std::sync::Arc;

use atom::bus::EventKind;
use atom::connectors::vault::Credentials;
use atom::storage::connections as sql;
use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::connectors_flows::audit_rows;
use crate::oauth_peer::{self, OAuthPeer, connect};

/// An application whose every token is due for refresh: the margin exceeds the peer's
/// token lifetime.
async fn spawn(peer: &OAuthPeer, extra: &[(&str, &str)]) -> TestApp {
    let mut config = vec![("CONNECTORS_REFRESH_MARGIN_SECS", "7200")];
    config.extend_from_slice(extra);
    oauth_peer::spawn_app(peer, &config).await
}

fn credentials(app: &TestApp, row: &sql::ConnectionRow) -> Credentials {
    Credentials::open(&app.state.identity.keyring(), row).expect("decrypts")
}

async fn row(app: &TestApp, id: &str) -> sql::ConnectionRow {
    sql::by_id(&app.state.db, id).await.expect("query").expect("row")
}

#[tokio::test]
async fn refresh_rotates_both_tokens_and_stores_them_together() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let before = credentials(&app, &row(&app, &id).await);

    let response = app
        .client
        .post(app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert!(view["last_refresh_at"].is_string(), "{view}");
    assert!(view.get("access_token").is_none());

    let after = credentials(&app, &row(&app, &id).await);
    assert_ne!(after.access_token, before.access_token, "a new access token");
    assert_ne!(after.refresh_token, before.refresh_token, "the rotated refresh token is stored");
    let stats = peer.stats().await;
    assert_eq!(stats["token_log"][1]["grant_type"], "refresh_token");
    assert_eq!(stats["token_log"][1]["auth"], "basic");

    // The rotated one works: a second refresh succeeds with it.
    let token = app.state.connectors.access_token(&user.id, &id).await.expect("refreshed again");
    assert_ne!(Some(token.token), after.access_token);
    assert_eq!(peer.token_requests().await, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_callers_on_a_due_token_make_one_token_request_and_all_get_the_new_token() {
    // The first token is due at once (60 s left, within the 300 s margin); the refreshed one
    // is not, so a caller arriving after the refresh uses it without another.
    let peer = OAuthPeer::start_with(60, 3600).await;
    let app =
        oauth_peer::spawn_app(&peer, &[("DATABASE_POOL_SIZE", "8"), ("CONNECTORS_REFRESH_MARGIN_SECS", "300")]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let old = credentials(&app, &row(&app, &id).await).access_token.clone().expect("token");
    let before = peer.token_requests().await;
    // The provider's round trip, so that every caller arrives while the refresh is in flight.
    peer.delay_tokens(300).await;

    let connectors = Arc::clone(&app.state.connectors);
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let mut callers = Vec::new();
    for _ in 0..1000 {
        let (connectors, barrier, user_id, id) =
            (Arc::clone(&connectors), Arc::clone(&barrier), user.id.clone(), id.clone());
        callers.push(tokio::spawn(async move {
            barrier.wait().await;
            connectors.access_token(&user_id, &id).await.map(|t| t.token)
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    for caller in callers {
        tokens.insert(caller.await.expect("task").expect("a token"));
    }
    assert_eq!(peer.token_requests().await - before, 1, "exactly one request to the provider");
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    let new = tokens.into_iter().next().expect("one");
    assert_ne!(new, old, "the new token");
    assert_eq!(credentials(&app, &row(&app, &id).await).access_token.as_deref(), Some(new.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn invalid_grant_on_refresh_marks_needs_reauth_audits_and_tells_the_owner() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let mut events = app.state.bus.subscribe();

    peer.fault(json!({ "token": "invalid_grant", "count": 1 })).await;
    let response = app
        .client
        .post(app.url(&format!("/v1/connections/{id}/refresh")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 409).await;
    assert_eq!(body["code"], "needs_reauth");
    let text = body.to_string();
    assert!(!text.contains("leaked-secret-value") && !text.contains("abc.def.ghi"), "{text}");

    let view: Value =
        app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["status"], "needs_reauth");
    let last_error = view["last_error"].as_str().expect("last error");
    assert!(last_error.starts_with("invalid_grant"), "{last_error}");
    assert!(
        !last_error.contains("leaked-secret-value") && !last_error.contains("abc.def.ghi"),
        "scrubbed: {last_error}"
    );

    let event = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let event = events.recv().await.expect("bus open");
            if matches!(event.kind, EventKind::Notification { .. }) {
                return event;
            }
        }
    })
    .await
    .expect("the owner is told");
    assert_eq!(event.user_id, user.id);
    assert_eq!(
        event.kind,
        EventKind::Notification {
            notification_type: "connection.needs_reauth".to_owned(),
            data: serde_json::json!({ "connection_id": id, "provider": "peer-basic" }),
        }
    );

    let audit = audit_rows(&app).await;
    let marked = audit.iter().find(|r| r["action"] == "connection.needs_reauth").expect("audited");
    assert_eq!(marked["target"], id.as_str());

    // No more requests while it needs the user; asking for a token says so.
    let before = peer.token_requests().await;
    let err = app.state.connectors.access_token(&user.id, &id).await.expect_err("needs reauth");
    assert!(err.to_string().starts_with("needs_reauth"), "{err}");
    assert_eq!(peer.token_requests().await, before);

    // Authorizing again makes it active.
    assert_eq!(connect(&app, &user, "peer-basic", "alice").await, id);
    let view: Value =
        app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["status"], "active");
    app.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_leave_the_connection_usable_while_its_token_is_valid() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[("CONNECTORS_REFRESH_ATTEMPTS", "3"), ("CONNECTORS_HTTP_TIMEOUT_SECS", "1")]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let old = credentials(&app, &row(&app, &id).await);

    // One 502: the second attempt succeeds.
    peer.fault(json!({ "token": "server_error", "count": 1 })).await;
    let before = peer.token_requests().await;
    let first = tokio::spawn({
        let connectors = Arc::clone(&app.state.connectors);
        let (user_id, id) = (user.id.clone(), id.clone());
        async move { connectors.access_token(&user_id, &id).await.map(|t| t.token) }
    });
    let token = first.await.expect("task").expect("refreshed after a retry");
    assert_ne!(Some(token), old.access_token);
    assert_eq!(peer.token_requests().await - before, 2, "one retry");

    // Down for every attempt: the old token, still valid, is served; the failure recorded.
    let current = credentials(&app, &row(&app, &id).await).access_token.clone();
    peer.fault(json!({ "token": "slow", "count": 3 })).await;
    let before = peer.token_requests().await;
    let token = app.state.connectors.access_token(&user.id, &id).await.expect("still usable");
    assert_eq!(Some(token.token), current);
    assert_eq!(peer.token_requests().await - before, 3, "three attempts");
    let view: Value =
        app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.json().await.expect("json");
    assert_eq!(view["status"], "active");
    assert!(view["last_error"].as_str().is_some_and(|e| e.starts_with("timeout")), "{view}");
    app.stop().await;
}

#[tokio::test]
async fn disconnecting_revokes_at_the_provider_then_deletes_and_succeeds_when_the_provider_is_down() {
    let peer = OAuthPeer::start(3600).await;
    let app = spawn(&peer, &[]).await;
    let user = app.user("user").await;
    let id = connect(&app, &user, "peer-basic", "alice").await;
    let refresh_token = credentials(&app, &row(&app, &id).await).refresh_token.clone().expect("refresh token");

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
    let stats = peer.stats().await;
    assert_eq!(stats["revocations"], 2, "refresh token and access token: {stats}");
    assert_eq!(stats["revocation_log"][0]["token_type_hint"], "refresh_token");
    // The provider no longer honours the refresh token.
    let refused = reqwest::Client::new()
        .post(format!("{}/token", peer.issuer))
        .basic_auth(oauth_peer::BASIC_CLIENT.0, Some(oauth_peer::BASIC_CLIENT.1))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 400);
    assert!(sql::by_id(&app.state.db, &id).await.expect("query").is_none(), "deleted locally");
    assert_eq!(app.get_as(&user.access_token, &format!("/v1/connections/{id}")).await.status(), 404);

    // With the provider failing, the connection is deleted all the same; the failure recorded.
    let id = connect(&app, &user, "peer-basic", "alice").await;
    peer.fault(json!({ "revocation": "down", "count": 1 })).await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/connections/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["revoked"], false);
    assert!(body["revocation_error"].as_str().is_some_and(|e| e.starts_with("provider_unavailable")), "{body}");
    assert!(sql::by_id(&app.state.db, &id).await.expect("query").is_none());
    let audit = audit_rows(&app).await;
    let deleted: Vec<&Value> = audit.iter().filter(|r| r["action"] == "connection.deleted").collect();
    assert_eq!(deleted.len(), 2);
    assert!(deleted.iter().any(|r| r["details"]["revoked"] == false && r["target"] == id.as_str()), "{deleted:?}");
    app.stop().await;
}
