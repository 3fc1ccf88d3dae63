//! Sign-in gives nothing away and resists guessing: an unknown email and a wrong password get
//! the same answer (and do the same work, one password verification each: counted in
//! tests/process_metrics.rs, timed in bench/login.sh); repeated failures slow down, then lock
//! the account (by the email asked for, existing or not) and the client address, each lock
//! audited.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{PASSWORD, TestApp, assert_problem};
use crate::identity_support::{audit, client_from, try_login};

/// The configuration pairs for a test of locking: thresholds, a long window, `lock_secs`.
fn lockout(account: &'static str, addr: &'static str, lock_secs: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("AUTH_LOCKOUT_THRESHOLD", account),
        ("AUTH_LOCKOUT_ADDR_THRESHOLD", addr),
        ("AUTH_LOCKOUT_WINDOW_SECS", "900"),
        ("AUTH_LOCKOUT_SECS", lock_secs),
    ]
}

/// The parts of a 401 that a client sees, without the request id.
async fn answer(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body: Value = response.json().await.expect("json");
    body.as_object_mut().expect("object").remove("request_id");
    (status, challenge, body)
}

#[tokio::test]
async fn unknown_email_wrong_password_and_disabled_account_look_the_same() {
    // High thresholds: this test is about the answer, not the throttle.
    let app = TestApp::spawn_with(&lockout("1000", "1000", "900"), axum::Router::new()).await;
    let user = app.user("user").await;

    let unknown = answer(try_login(&app.client, &app, "nobody@example.com", PASSWORD).await).await;
    let wrong = answer(try_login(&app.client, &app, &user.email, "not the password").await).await;
    assert_eq!(unknown, wrong, "identical status, challenge and body");
    assert_eq!(unknown.0, 401);
    assert_eq!(unknown.2["detail"], "Wrong email or password.");
    // A disabled account answers the same as well.
    let disabled = app.user("user").await;
    let admin = app.user("admin").await;
    let path = format!("/v1/admin/users/{}/disable", disabled.id);
    let response = crate::identity_support::post(&app, Some(&admin.access_token), &path, &serde_json::json!({})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(answer(try_login(&app.client, &app, &disabled.email, PASSWORD).await).await, wrong);

    app.stop().await;
}

#[tokio::test]
async fn repeated_failures_slow_down_then_lock_the_account_from_every_address() {
    let app = TestApp::spawn_with(&lockout("4", "1000", "900"), axum::Router::new()).await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;

    // Failures from two addresses count against the one account.
    let mut times = Vec::new();
    for i in 0..4u8 {
        let started = Instant::now();
        let response = try_login(&client_from(2 + i % 2), &app, &user.email, "guess guess guess").await;
        times.push(started.elapsed());
        assert_eq!(response.status(), 401, "attempt {i}");
    }
    // From the third failure on, each answer is held back longer (lower bounds only: the
    // held-back time is a floor, whatever the machine's load).
    assert!(times[2] >= Duration::from_millis(250), "third failure slowed: {times:?}");
    assert!(times[3] >= Duration::from_millis(500), "fourth failure slowed more: {times:?}");

    // Locked: even the right password, from a third address, gets 429 with Retry-After.
    let response = try_login(&client_from(4), &app, &user.email, PASSWORD).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_problem(response, 429).await;
    // Other accounts are not affected.
    app.login(&admin.email, PASSWORD).await;

    let locks = audit(&app, &admin.access_token, "action=auth.lockout").await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0]["outcome"], "denied");
    assert_eq!(locks[0]["target"], format!("account:{}", user.email));
    assert_eq!(locks[0]["details"]["failures"], 4);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_email_locks_like_a_real_one() {
    let app = TestApp::spawn_with(&lockout("2", "1000", "900"), axum::Router::new()).await;
    for email in ["ghost@example.com", "ghost@example.com"] {
        assert_eq!(try_login(&app.client, &app, email, "whatever whatever").await.status(), 401);
    }
    let locked = try_login(&app.client, &app, "ghost@example.com", PASSWORD).await;
    let locked_body = assert_problem(locked, 429).await;

    let user = app.user("user").await;
    for _ in 0..2 {
        assert_eq!(try_login(&app.client, &app, &user.email, "whatever whatever").await.status(), 401);
    }
    let real_body = assert_problem(try_login(&app.client, &app, &user.email, PASSWORD).await, 429).await;
    assert_eq!(locked_body["detail"], real_body["detail"]);
    app.stop().await;
}

#[tokio::test]
async fn a_client_address_is_locked_across_accounts_and_other_addresses_are_not() {
    let app = TestApp::spawn_with(&lockout("1000", "3", "900"), axum::Router::new()).await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let attacker = client_from(2);
    for i in 0..3 {
        let response = try_login(&attacker, &app, &format!("victim{i}@example.com"), "password123456").await;
        assert_eq!(response.status(), 401);
    }
    // The address is locked, for any account, the right password included.
    assert_problem(try_login(&attacker, &app, &user.email, PASSWORD).await, 429).await;
    // The same account from another address signs in.
    assert_eq!(try_login(&client_from(3), &app, &user.email, PASSWORD).await.status(), 200);

    let locks = audit(&app, &admin.access_token, "action=auth.lockout").await;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0]["target"], "addr:127.0.0.2");
    assert_eq!(locks[0]["client_addr"], "127.0.0.2");
    app.stop().await;
}

#[tokio::test]
async fn a_lock_ends_after_its_time_and_a_success_resets_the_count() {
    let app = TestApp::spawn_with(&lockout("3", "1000", "1"), axum::Router::new()).await;
    let user = app.user("user").await;

    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        assert_eq!(try_login(&app.client, &app, &user.email, "wrong wrong wrong").await.status(), 401);
    }
    app.login(&user.email, PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(try_login(&app.client, &app, &user.email, "wrong wrong wrong").await.status(), 401);
    }
    app.login(&user.email, PASSWORD).await;

    for _ in 0..3 {
        assert_eq!(try_login(&app.client, &app, &user.email, "wrong wrong wrong").await.status(), 401);
    }
    assert_problem(try_login(&app.client, &app, &user.email, PASSWORD).await, 429).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    app.login(&user.email, PASSWORD).await;
    app.stop().await;
}
