//! Access tokens end with their session: a logout, a password change, a disable and re-enable
//! and a stolen refresh token refuse the access tokens issued before, at once (through the
//! cached account status) and on every node sharing Redis; another session of the same user
//! is untouched.

use axum::Router;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, TestUser, redis_url};
use crate::identity_support::{assert_unauthorized, post, sign, signing_key, try_refresh, valid_claims, valid_header};

const NEW_PASSWORD: &str = "a different passphrase, 42 long";

async fn status_of(app: &TestApp, token: &str) -> u16 {
    app.get_as(token, "/v1/me").await.status().as_u16()
}

/// Several requests, so that the account's status is cached and the token's memo is warm.
async fn warm(app: &TestApp, tokens: &[&str]) {
    for _ in 0..3 {
        for token in tokens {
            assert_eq!(status_of(app, token).await, 200, "valid before the change");
        }
    }
}

async fn refused(app: &TestApp, token: &str, case: &str) {
    let body = assert_unauthorized(app.get_as(token, "/v1/me").await, Some("invalid_token")).await;
    assert!(!body.to_string().contains(token), "{case}: the token is not echoed");
}

async fn logout(app: &TestApp, refresh_token: &str) {
    let response = post(app, None, "/v1/auth/logout", &json!({ "refresh_token": refresh_token })).await;
    assert_eq!(response.status(), 204);
}

fn access_token(body: &Value) -> String {
    body["access_token"].as_str().expect("access token").to_owned()
}

async fn set_disabled(app: &TestApp, admin: &TestUser, user: &TestUser, disable: bool) {
    let action = if disable { "disable" } else { "enable" };
    let response =
        post(app, Some(&admin.access_token), &format!("/v1/admin/users/{}/{action}", user.id), &json!({})).await;
    assert_eq!(response.status(), 200, "{action}");
}

#[tokio::test]
async fn after_logout_the_sessions_access_token_is_refused_and_another_session_stays_valid() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let other = app.login(&user.email, PASSWORD).await;
    let other_token = access_token(&other);
    warm(&app, &[&user.access_token, &other_token]).await;

    logout(&app, &user.refresh_token).await;
    refused(&app, &user.access_token, "the logged-out session's token").await;
    assert_eq!(status_of(&app, &other_token).await, 200, "the other session is untouched");
    // And it goes on: its refresh gives a token that works.
    let renewed = try_refresh(&app.client, &app, other["refresh_token"].as_str().expect("refresh")).await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(status_of(&app, &access_token(&renewed.json().await.expect("json"))).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn after_a_password_change_earlier_tokens_are_refused_and_a_new_login_works() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let other = access_token(&app.login(&user.email, PASSWORD).await);
    warm(&app, &[&user.access_token, &other]).await;

    let change = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    assert_eq!(post(&app, Some(&user.access_token), "/v1/me/password", &change).await.status(), 204);
    refused(&app, &user.access_token, "the token that changed the password").await;
    refused(&app, &other, "another session's token").await;
    let fresh = access_token(&app.login(&user.email, NEW_PASSWORD).await);
    assert_eq!(status_of(&app, &fresh).await, 200, "a sign-in after the change works at once");
    app.stop().await;
}

#[tokio::test]
async fn after_a_disable_and_re_enable_earlier_tokens_stay_refused() {
    let app = TestApp::spawn().await;
    let (admin, user) = (app.user("admin").await, app.user("user").await);
    warm(&app, &[&user.access_token]).await;
    set_disabled(&app, &admin, &user, true).await;
    refused(&app, &user.access_token, "disabled").await;
    set_disabled(&app, &admin, &user, false).await;
    refused(&app, &user.access_token, "issued before the disable").await;
    let fresh = access_token(&app.login(&user.email, PASSWORD).await);
    assert_eq!(status_of(&app, &fresh).await, 200, "a sign-in after the re-enable works");
    assert_eq!(status_of(&app, &admin.access_token).await, 200, "other accounts are untouched");
    app.stop().await;
}

#[tokio::test]
async fn a_stolen_refresh_token_ends_its_sessions_access_tokens_too() {
    let app = TestApp::spawn_with(&[("AUTH_REFRESH_REUSE_GRACE_SECS", "1")], Router::new()).await;
    let user = app.user("user").await;
    let other = access_token(&app.login(&user.email, PASSWORD).await);
    let renewed = try_refresh(&app.client, &app, &user.refresh_token).await;
    assert_eq!(renewed.status(), 200);
    let successor = access_token(&renewed.json().await.expect("json"));
    warm(&app, &[&successor, &other]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The spent token again, after the grace window: one of its two holders is a thief.
    assert_eq!(try_refresh(&app.client, &app, &user.refresh_token).await.status(), 401);
    refused(&app, &successor, "the family's newest access token").await;
    assert_eq!(status_of(&app, &other).await, 200, "the other session is untouched");
    app.stop().await;
}

#[tokio::test]
async fn a_token_that_names_no_session_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let mut claims = valid_claims(&app, &user.id);
    claims.as_object_mut().expect("object").remove("sid");
    let token = sign(&signing_key(&app).await, &valid_header(&app).await, &claims);
    refused(&app, &token, "no sid").await;
    app.stop().await;
}

/// A second node on `first`'s database and Redis.
async fn second_node(first: &TestApp, redis: &str) -> TestApp {
    let shared: Vec<(String, String)> = first.db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    let mut pairs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.push(("REDIS_URL", redis));
    TestApp::spawn_with(&pairs, Router::new()).await
}

#[tokio::test]
async fn a_logout_or_password_change_on_one_node_refuses_the_tokens_on_another_at_once() {
    let redis = redis_url();
    let a = TestApp::spawn_with(&[("REDIS_URL", &redis)], Router::new()).await;
    let b = second_node(&a, &redis).await;
    let user = a.user("user").await;
    let (second, third) =
        (access_token(&a.login(&user.email, PASSWORD).await), access_token(&b.login(&user.email, PASSWORD).await));
    warm(&b, &[&user.access_token, &second, &third]).await;
    warm(&a, &[&user.access_token, &second, &third]).await;

    logout(&a, &user.refresh_token).await;
    refused(&b, &user.access_token, "logged out on A, presented to B").await;
    assert_eq!(status_of(&b, &second).await, 200, "another session stays valid on B");

    let change = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    assert_eq!(post(&b, Some(&third), "/v1/me/password", &change).await.status(), 204);
    refused(&a, &second, "password changed on B, presented to A").await;
    refused(&a, &third, "the changing token, presented to A").await;
    a.stop().await;
    b.stop().await;
}
