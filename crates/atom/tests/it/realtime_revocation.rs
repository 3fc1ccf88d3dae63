//! Open Socket.io connections end with their credentials, on every node: a disabled account,
//! a revoked API key, a logout and a password change close the sockets that used them (the
//! real socket.io-client sees `session:closing` with `credential_revoked`, then `disconnect`
//! with `io server disconnect`), and leave the others
//! open; a node cut from Redis still closes its own, and subscribes again when Redis is back.

use axum::Router;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TcpProxy, TestApp, TestUser, redis_url, socket_addr_of, via};
use crate::identity_support::{create_api_key, delete_as, post};
use crate::realtime::{Peer, TRANSPORTS, assert_refused, auth, spawn};

/// Waits for the server to close `id`, after telling it why (`session:closing`).
async fn closed_by_server(peer: &mut Peer, id: &str) {
    let closing = peer.next(id).await;
    assert_eq!(
        (&closing["event"], &closing["name"]),
        (&json!("server_event"), &json!("session:closing")),
        "{id}: {closing}"
    );
    assert_eq!(closing["data"]["code"], "credential_revoked", "{id}: {closing}");
    let event = peer.next(id).await;
    assert_eq!(event["event"], "disconnect", "{id}: {event}");
    assert_eq!(event["reason"], "io server disconnect", "{id}: closed by the server, not to be retried: {event}");
}

/// Asserts `id` is still open and answers as `user`.
async fn still_open(peer: &mut Peer, id: &str, user: &TestUser) {
    assert_eq!(peer.whoami(id).await["user_id"], json!(user.id), "{id} stays open");
}

async fn api_key(app: &TestApp, user: &TestUser) -> (String, String) {
    let created = create_api_key(app, &user.access_token, json!({ "name": "realtime" })).await;
    (created["id"].as_str().expect("id").to_owned(), created["key"].as_str().expect("key").to_owned())
}

async fn disable(app: &TestApp, admin: &TestUser, user: &TestUser) {
    let path = format!("/v1/admin/users/{}/disable", user.id);
    assert_eq!(post(app, Some(&admin.access_token), &path, &json!({})).await.status(), 200);
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().expect("access token").to_owned()
}

#[tokio::test]
async fn disabling_a_user_closes_every_socket_of_theirs_and_no_other() {
    let app = spawn(&[]).await;
    let (admin, user, bystander) = (app.user("admin").await, app.user("user").await, app.user("user").await);
    let (_, key) = api_key(&app, &user).await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(&format!("token-{transport}"), &app, transport, &user.access_token).await;
        peer.admitted(&format!("key-{transport}"), &app, transport, &key).await;
        peer.admitted(&format!("other-{transport}"), &app, transport, &bystander.access_token).await;
        still_open(&mut peer, &format!("token-{transport}"), &user).await;
    }
    disable(&app, &admin, &user).await;
    for transport in TRANSPORTS {
        closed_by_server(&mut peer, &format!("token-{transport}")).await;
        closed_by_server(&mut peer, &format!("key-{transport}")).await;
        still_open(&mut peer, &format!("other-{transport}"), &bystander).await;
        let outcome = peer.connect(&format!("again-{transport}"), &app, transport, auth(&key)).await;
        assert_refused(&outcome, "unauthorized", "reconnecting as the disabled user");
    }
    app.stop().await;
}

#[tokio::test]
async fn revoking_an_api_key_closes_the_sockets_opened_with_it() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let ((revoked_id, revoked), (_, kept)) = (api_key(&app, &user).await, api_key(&app, &user).await);
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(&format!("revoked-{transport}"), &app, transport, &revoked).await;
        peer.admitted(&format!("kept-{transport}"), &app, transport, &kept).await;
        peer.admitted(&format!("token-{transport}"), &app, transport, &user.access_token).await;
    }
    assert_eq!(delete_as(&app, &user.access_token, &format!("/v1/api-keys/{revoked_id}")).await.status(), 204);
    for transport in TRANSPORTS {
        closed_by_server(&mut peer, &format!("revoked-{transport}")).await;
        still_open(&mut peer, &format!("kept-{transport}"), &user).await;
        still_open(&mut peer, &format!("token-{transport}"), &user).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_logout_closes_its_sessions_sockets_and_a_password_change_every_token_socket() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let second = app.login(&user.email, PASSWORD).await;
    let (_, key) = api_key(&app, &user).await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(&format!("first-{transport}"), &app, transport, &user.access_token).await;
        peer.admitted(&format!("second-{transport}"), &app, transport, &access_token(&second)).await;
        peer.admitted(&format!("key-{transport}"), &app, transport, &key).await;
    }
    let logout = json!({ "refresh_token": user.refresh_token });
    assert_eq!(post(&app, None, "/v1/auth/logout", &logout).await.status(), 204);
    for transport in TRANSPORTS {
        closed_by_server(&mut peer, &format!("first-{transport}")).await;
        still_open(&mut peer, &format!("second-{transport}"), &user).await;
    }
    let change = json!({ "current_password": PASSWORD, "new_password": "a different passphrase, 42 long" });
    assert_eq!(post(&app, Some(&access_token(&second)), "/v1/me/password", &change).await.status(), 204);
    for transport in TRANSPORTS {
        closed_by_server(&mut peer, &format!("second-{transport}")).await;
        // An API key outlives a password change; so does its socket.
        still_open(&mut peer, &format!("key-{transport}"), &user).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_disable_on_one_node_closes_the_users_sockets_on_another() {
    let redis = redis_url();
    let a = spawn(&[("REDIS_URL", &redis)]).await;
    let shared: Vec<(String, String)> = a.db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    let mut pairs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.extend([("REDIS_URL", redis.as_str()), ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000")]);
    let b = TestApp::spawn_with(&pairs, Router::new()).await;
    let (admin, user, bystander) = (a.user("admin").await, a.user("user").await, a.user("user").await);
    let (key_id, key) = api_key(&a, &user).await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(&format!("b-{transport}"), &b, transport, &user.access_token).await;
        peer.admitted(&format!("b-other-{transport}"), &b, transport, &bystander.access_token).await;
    }
    peer.admitted("b-key", &b, "websocket", &key).await;
    // A revoked key on A closes its socket on B.
    assert_eq!(delete_as(&a, &user.access_token, &format!("/v1/api-keys/{key_id}")).await.status(), 204);
    closed_by_server(&mut peer, "b-key").await;
    disable(&a, &admin, &user).await;
    for transport in TRANSPORTS {
        closed_by_server(&mut peer, &format!("b-{transport}")).await;
        still_open(&mut peer, &format!("b-other-{transport}"), &bystander).await;
    }
    a.stop().await;
    b.stop().await;
}

/// Subscribers of the bus channel of `app`'s key space, as Redis counts them.
async fn bus_subscribers(app: &TestApp) -> i64 {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis is required by this test");
    let channel = format!("{}:bus", app.state.config.redis.key_prefix);
    let counts: Vec<(String, i64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.expect("PUBSUB NUMSUB");
    counts.first().map_or(0, |(_, n)| *n)
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_node_cut_from_redis_closes_its_own_sockets_and_subscribes_again_when_redis_is_back() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let a = spawn(&[("REDIS_URL", &redis)]).await;
    let shared: Vec<(String, String)> = a.db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    let mut pairs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let through_proxy = via(&redis, proxy.addr);
    pairs.extend([("REDIS_URL", through_proxy.as_str()), ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000")]);
    let b = TestApp::spawn_with(&pairs, Router::new()).await;
    let (admin, user) = (a.user("admin").await, a.user("user").await);
    let (key_id, key) = api_key(&a, &user).await;
    until("both nodes subscribed", async || bus_subscribers(&a).await == 2).await;

    let mut peer = Peer::start().await;
    peer.admitted("b-key", &b, "websocket", &key).await;
    peer.admitted("b-token", &b, "websocket", &user.access_token).await;
    proxy.set_down(true);
    until("B's subscription dropped", async || bus_subscribers(&a).await == 1).await;
    // Revoked on B while B cannot reach Redis: B's own socket still closes.
    assert_eq!(delete_as(&b, &user.access_token, &format!("/v1/api-keys/{key_id}")).await.status(), 204);
    closed_by_server(&mut peer, "b-key").await;

    proxy.set_down(false);
    until("B subscribed again", async || bus_subscribers(&a).await == 2).await;
    disable(&a, &admin, &user).await;
    closed_by_server(&mut peer, "b-token").await;
    a.stop().await;
    b.stop().await;
}
