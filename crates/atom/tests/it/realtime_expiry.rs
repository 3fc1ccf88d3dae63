//! A connection ends with its credential: at an access token's expiry the server sends
//! `session:closing` with `token_expired` and closes it in a way the real socket.io-client
//! does not retry on its own (`io server disconnect`); the client refreshes, sets its auth
//! and connects again. An API key ends its socket at its expiry, if it has one. A revoked credential gets `credential_revoked` the same way. On a
//! graceful shutdown, instead, the client sees its transport close and reconnects by itself,
//! here through a load balancer to a second node, with the same token.

use serde_json::{Value, json};

use crate::common::TestApp;
use crate::identity_support::{
    create_api_key, execute, post, sign, signing_key, unb64_json, unix_now, valid_claims, valid_header,
};
use crate::realtime::{Peer, TRANSPORTS, spawn};
use crate::realtime_support::{Balancer, second_node};

/// An access token of `user_id` (in the session of `session_token`) that expires in `secs`.
async fn expiring_token(app: &TestApp, user_id: &str, session_token: &str, secs: u64) -> String {
    let mut claims = valid_claims(app, user_id);
    let session = unb64_json(session_token.split('.').nth(1).expect("claims"));
    claims["sid"] = session["sid"].clone();
    claims["exp"] = json!(unix_now() + secs);
    sign(&signing_key(app).await, &valid_header(app).await, &claims)
}

#[tokio::test]
async fn a_socket_is_closed_at_its_tokens_expiry_with_a_reason_and_reconnects_with_a_fresh_token() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let id = format!("expiring-{transport}");
        let token = expiring_token(&app, &user.id, &user.access_token, 3).await;
        let outcome = peer.open_at(&id, &app.url(""), transport, &token, false).await;
        assert_eq!(outcome["event"], "connected", "{outcome}");
        assert_eq!(peer.whoami(&id).await["user_id"], json!(user.id));
        // Closed at the expiry, within the peer's generous event timeout.
        let closing = peer.closed_with(&id).await;
        assert_eq!(closing["code"], "token_expired", "{closing}");
        assert!(closing["message"].as_str().is_some_and(|m| !m.is_empty()), "{closing}");
        // What a client does next: a fresh token, then connect again on the same socket.
        peer.send(json!({ "op": "auth", "id": id, "auth": { "token": user.access_token } })).await;
        assert_eq!(peer.next(&id).await["event"], "auth_set");
        peer.send(json!({ "op": "open", "id": id })).await;
        assert_eq!(peer.next(&id).await["event"], "connected");
        assert_eq!(peer.whoami(&id).await["user_id"], json!(user.id));
    }
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_with_an_expiry_ends_its_socket_then_and_one_without_does_not() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let expiring = create_api_key(&app, &user.access_token, json!({ "name": "expiring" })).await;
    let lasting = create_api_key(&app, &user.access_token, json!({ "name": "lasting" })).await;
    // An expiry a few seconds away, set before the key is first used (and so cached).
    let at = (unix_now() + 4) * 1000;
    let id = expiring["id"].as_str().expect("id");
    execute(&app, &format!("UPDATE api_keys SET expires_at = {at} WHERE id = '{id}'")).await;
    let mut peer = Peer::start().await;
    for (name, key) in [("expiring", &expiring), ("lasting", &lasting)] {
        let outcome = peer.open_at(name, &app.url(""), "websocket", key["key"].as_str().expect("key"), false).await;
        assert_eq!(outcome["event"], "connected", "{name}: {outcome}");
    }
    assert_eq!(peer.closed_with("expiring").await["code"], "token_expired");
    assert_eq!(peer.whoami("lasting").await["user_id"], json!(user.id), "a key without an expiry stays");
    app.stop().await;
}

#[tokio::test]
async fn a_socket_whose_token_has_long_to_live_stays_open_and_a_revoked_one_is_told_why() {
    let app = spawn(&[]).await;
    let (admin, user) = (app.user("admin").await, app.user("user").await);
    let mut peer = Peer::start().await;
    let outcome = peer.open_at("long", &app.url(""), "websocket", &admin.access_token, false).await;
    assert_eq!(outcome["event"], "connected");
    let outcome = peer.open_at("revoked", &app.url(""), "websocket", &user.access_token, false).await;
    assert_eq!(outcome["event"], "connected");
    let path = format!("/v1/admin/users/{}/disable", user.id);
    assert_eq!(post(&app, Some(&admin.access_token), &path, &json!({})).await.status(), 200);
    let closing = peer.closed_with("revoked").await;
    assert_eq!(closing["code"], "credential_revoked", "{closing}");
    assert_eq!(peer.whoami("long").await["user_id"], json!(admin.id));
    app.stop().await;
}

#[tokio::test]
async fn after_a_graceful_shutdown_the_client_reconnects_by_itself_to_another_node() {
    let mut a = spawn(&[]).await;
    let b = second_node(&a, &[]).await;
    let user = a.user("user").await;
    let balancer = Balancer::start(a.addr).await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let outcome = peer.open_at(transport, &balancer.url(), transport, &user.access_token, true).await;
        assert_eq!(outcome["event"], "connected", "{outcome}");
    }
    // The load balancer sends new connections to B while A drains.
    balancer.switch_to(b.addr);
    let server = a.begin_shutdown();
    for transport in TRANSPORTS {
        let mut seen: Vec<Value> = Vec::new();
        loop {
            let event = peer.next(transport).await;
            seen.push(event.clone());
            match event["event"].as_str() {
                Some("disconnect") => {
                    let reason = event["reason"].as_str().unwrap_or_default();
                    assert!(
                        ["transport close", "transport error", "ping timeout"].contains(&reason),
                        "{transport}: a reason socket.io-client reconnects after: {event}"
                    );
                }
                Some("connected") => break,
                Some("reconnect_attempt" | "reconnect_error" | "reconnect") => {}
                _ => panic!("{transport}: unexpected {event}; so far {seen:?}"),
            }
        }
        assert!(seen.iter().any(|e| e["event"] == "disconnect"), "{transport}: {seen:?}");
        assert_eq!(peer.whoami(transport).await["user_id"], json!(user.id), "{transport} served by B");
    }
    server.await.expect("task").expect("clean shutdown");
    b.stop().await;
}
