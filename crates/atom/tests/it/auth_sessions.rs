//! Refresh tokens: opaque, stored only as a hash, rotated on every use; reuse of a spent
//! token revokes its family and is audited, except for the same client within the grace
//! window (two tabs refreshing at once); logout revokes the session.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestApp;
use crate::identity_support::{assert_unauthorized, audit, execute, fetch_strings, post, try_refresh};

async fn refreshed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "refresh succeeds");
    response.json().await.expect("json")
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"].as_str().expect("refresh_token").to_owned()
}

#[tokio::test]
async fn refresh_tokens_are_opaque_hashed_at_rest_and_rotated_on_every_use() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let first = user.refresh_token.clone();
    assert!(first.starts_with("atom_rt_"), "{first}");
    assert_eq!(first.matches('.').count(), 0, "opaque, not a JWT: {first}");

    let body = refreshed(try_refresh(&app.client, &app, &first).await).await;
    let second = refresh_token(&body);
    assert_ne!(second, first, "rotated");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["user"]["id"], user.id.as_str());
    let access = body["access_token"].as_str().expect("access token");
    assert_eq!(app.get_as(access, "/v1/me").await.status(), 200);
    let third = refresh_token(&refreshed(try_refresh(&app.client, &app, &second).await).await);

    let stored = fetch_strings(&app, "SELECT token_hash FROM refresh_tokens").await;
    assert_eq!(stored.len(), 3);
    for token in [&first, &second, &third] {
        let secret = token.trim_start_matches("atom_rt_");
        assert!(stored.iter().all(|h| !h.contains(secret)), "the token itself is never stored");
        assert!(stored.contains(&atom::identity::secret_hash(token)), "stored as its SHA-256");
    }
    app.stop().await;
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_the_family_and_is_audited() {
    let app = TestApp::spawn_with(&[("AUTH_REFRESH_REUSE_GRACE_SECS", "1")], axum::Router::new()).await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let spent = user.refresh_token.clone();
    let successor = refresh_token(&refreshed(try_refresh(&app.client, &app, &spent).await).await);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_unauthorized(try_refresh(&app.client, &app, &spent).await, Some("invalid_token")).await;
    // The token issued from the spent one is revoked with its family.
    assert_unauthorized(try_refresh(&app.client, &app, &successor).await, Some("invalid_token")).await;
    // Another session of the same user is untouched.
    let other = app.login(&user.email, crate::common::PASSWORD).await;
    refreshed(try_refresh(&app.client, &app, &refresh_token(&other)).await).await;

    let reuse = audit(&app, &admin.access_token, "action=auth.refresh_reuse").await;
    assert_eq!(reuse.len(), 1, "{reuse:?}");
    assert_eq!(reuse[0]["outcome"], "denied");
    assert_eq!(reuse[0]["actor_id"], user.id.as_str());
    assert_eq!(reuse[0]["details"]["revoked_tokens"], 2, "the spent token and its successor");
    app.stop().await;
}

// Two worker threads: the server and the two requests really run in parallel, so that the
// refreshes race in the database as two tabs' do, rather than interleave on one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_by_the_same_client_both_succeed() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    // Both requests leave at the same moment, each from its own task.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let tab = |app: std::sync::Arc<TestApp>, start: std::sync::Arc<tokio::sync::Barrier>, token: String| {
        tokio::spawn(async move {
            start.wait().await;
            try_refresh(&app.client, &app, &token).await
        })
    };
    let a = tab(std::sync::Arc::clone(&app), std::sync::Arc::clone(&start), user.refresh_token.clone());
    let b = tab(std::sync::Arc::clone(&app), start, user.refresh_token.clone());
    let (a, b) = (a.await.expect("first tab"), b.await.expect("second tab"));
    let (a, b) = (refreshed(a).await, refreshed(b).await);
    let (a, b) = (refresh_token(&a), refresh_token(&b));
    assert_ne!(a, b);
    // Nothing was revoked: both successors carry on.
    refreshed(try_refresh(&app.client, &app, &a).await).await;
    refreshed(try_refresh(&app.client, &app, &b).await).await;
    assert!(audit(&app, &admin.access_token, "action=auth.refresh_reuse").await.is_empty());
    let refreshes = audit(&app, &admin.access_token, &format!("action=auth.refresh&actor={}", user.id)).await;
    assert_eq!(refreshes.len(), 4, "{refreshes:?}");
    std::sync::Arc::into_inner(app).expect("the tabs are done").stop().await;
}

#[tokio::test]
async fn reuse_by_another_user_agent_within_the_grace_window_is_theft() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let successor = refresh_token(&refreshed(try_refresh(&app.client, &app, &user.refresh_token).await).await);

    let thief = reqwest::Client::builder().user_agent("curl/8.0").build().expect("client");
    assert_unauthorized(try_refresh(&thief, &app, &user.refresh_token).await, Some("invalid_token")).await;
    assert_unauthorized(try_refresh(&app.client, &app, &successor).await, Some("invalid_token")).await;

    let reuse = audit(&app, &admin.access_token, "action=auth.refresh_reuse").await;
    assert_eq!(reuse.len(), 1, "{reuse:?}");
    assert_eq!(reuse[0]["details"]["same_client"], false);
    assert_eq!(reuse[0]["user_agent"], "curl/8.0");
    app.stop().await;
}

#[tokio::test]
async fn reuse_from_another_address_within_the_grace_window_is_theft() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let successor = refresh_token(&refreshed(try_refresh(&app.client, &app, &user.refresh_token).await).await);
    let elsewhere = crate::identity_support::client_from(2);
    assert_unauthorized(try_refresh(&elsewhere, &app, &user.refresh_token).await, Some("invalid_token")).await;
    assert_unauthorized(try_refresh(&app.client, &app, &successor).await, Some("invalid_token")).await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_refresh_tokens_all_get_the_same_401() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let hash = atom::identity::secret_hash(&user.refresh_token);
    execute(&app, &format!("UPDATE refresh_tokens SET expires_at = 1 WHERE token_hash = '{hash}'")).await;
    let fake = format!("atom_rt_{}", "A".repeat(43));
    let long = format!("atom_rt_{}", "A".repeat(200));
    for token in ["", "nope", fake.as_str(), long.as_str(), user.refresh_token.as_str()] {
        let body = assert_unauthorized(try_refresh(&app.client, &app, token).await, Some("invalid_token")).await;
        assert_eq!(body["detail"], "The refresh token is invalid, expired or revoked.");
    }
    app.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_session_and_is_audited() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let other = app.login(&user.email, crate::common::PASSWORD).await;
    let successor = refresh_token(&refreshed(try_refresh(&app.client, &app, &user.refresh_token).await).await);

    // Logging out with any token of the family ends the whole session.
    let response = post(&app, None, "/v1/auth/logout", &json!({ "refresh_token": user.refresh_token })).await;
    assert_eq!(response.status(), 204);
    assert_unauthorized(try_refresh(&app.client, &app, &successor).await, Some("invalid_token")).await;
    // The user's other session goes on.
    refreshed(try_refresh(&app.client, &app, &refresh_token(&other)).await).await;
    // Idempotent, and silent about tokens that do not exist.
    for token in [user.refresh_token.as_str(), "atom_rt_unknown", "garbage"] {
        let response = post(&app, None, "/v1/auth/logout", &json!({ "refresh_token": token })).await;
        assert_eq!(response.status(), 204, "{token}");
    }

    let logouts = audit(&app, &admin.access_token, "action=auth.logout").await;
    assert!(!logouts.is_empty());
    assert!(logouts.iter().all(|e| e["actor_id"] == user.id.as_str() && e["outcome"] == "success"), "{logouts:?}");
    app.stop().await;
}
