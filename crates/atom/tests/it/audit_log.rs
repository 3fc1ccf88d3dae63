//! The audit log: a row for every security event of the identity feature, read by admins
//! through `GET /v1/admin/audit` with filters and cursor pagination; no secret in any row;
//! the hash chain intact afterwards.

use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, TestUser, assert_problem};
use crate::identity_support::{api_key_parts, audit, create_api_key, delete_as, post, try_login, try_refresh};

const NEW_PASSWORD: &str = "an entirely new passphrase";
const WRONG_PASSWORD: &str = "wrong horse battery staple";

/// What a scenario did: its admin, its user, and every secret that went over the wire.
struct Scenario {
    admin: TestUser,
    user: TestUser,
    secrets: Vec<String>,
}

/// Drives every audited event once: logins that succeed and fail, a lockout, a refresh and a
/// reuse of a spent refresh token, a logout, a password change, an invite, an API key created
/// and revoked, and an account disabled.
async fn scenario(app: &TestApp) -> Scenario {
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let mut secrets = vec![PASSWORD.to_owned(), NEW_PASSWORD.to_owned(), WRONG_PASSWORD.to_owned()];
    for u in [&admin, &user] {
        secrets.extend([u.access_token.clone(), u.refresh_token.clone()]);
    }

    assert_eq!(try_login(&app.client, app, &user.email, WRONG_PASSWORD).await.status(), 401);
    for _ in 0..2 {
        assert_eq!(try_login(&app.client, app, "locked@example.com", WRONG_PASSWORD).await.status(), 401);
    }

    let response = try_refresh(&app.client, app, &user.refresh_token).await;
    assert_eq!(response.status(), 200);
    let refreshed: Value = response.json().await.expect("json");
    for field in ["access_token", "refresh_token"] {
        secrets.push(refreshed[field].as_str().expect("token").to_owned());
    }
    let thief = reqwest::Client::builder().user_agent("thief/1.0").build().expect("client");
    assert_eq!(try_refresh(&thief, app, &user.refresh_token).await.status(), 401);

    let session = app.login(&user.email, PASSWORD).await;
    let refresh = session["refresh_token"].as_str().expect("refresh").to_owned();
    secrets.extend([refresh.clone(), session["access_token"].as_str().expect("access").to_owned()]);
    let response = post(app, None, "/v1/auth/logout", &json!({ "refresh_token": refresh })).await;
    assert_eq!(response.status(), 204);

    let session = app.login(&user.email, PASSWORD).await;
    let token = session["access_token"].as_str().expect("access").to_owned();
    secrets.extend([token.clone(), session["refresh_token"].as_str().expect("refresh").to_owned()]);
    let key = create_api_key(app, &token, json!({ "name": "audited key" })).await;
    let key_secret = key["key"].as_str().expect("key");
    secrets.extend([key_secret.to_owned(), api_key_parts(key_secret).1.to_owned()]);
    assert_eq!(app.get_as(key_secret, "/v1/me").await.status(), 200);
    let path = format!("/v1/api-keys/{}", key["id"].as_str().expect("id"));
    assert_eq!(delete_as(app, &token, &path).await.status(), 204);

    let change = json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD });
    assert_eq!(post(app, Some(&token), "/v1/me/password", &change).await.status(), 204);

    let response = post(app, Some(&admin.access_token), "/v1/admin/invites", &json!({})).await;
    let invite: Value = response.json().await.expect("json");
    secrets.push(invite["invite_code"].as_str().expect("invite code").to_owned());
    let disable = format!("/v1/admin/users/{}/disable", user.id);
    assert_eq!(post(app, Some(&admin.access_token), &disable, &json!({})).await.status(), 200);
    Scenario { admin, user, secrets }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(&[("AUTH_LOCKOUT_THRESHOLD", "2")], axum::Router::new()).await
}

#[tokio::test]
async fn every_security_event_leaves_a_row() {
    let app = spawn().await;
    let Scenario { admin, user, .. } = scenario(&app).await;
    let expected: &[(&str, &str, Option<&str>)] = &[
        ("auth.login", "success", Some(&user.id)),
        ("auth.login", "failure", None),
        ("auth.lockout", "denied", None),
        ("auth.refresh", "success", Some(&user.id)),
        ("auth.refresh_reuse", "denied", Some(&user.id)),
        ("auth.logout", "success", Some(&user.id)),
        ("account.password_changed", "success", Some(&user.id)),
        ("account.disabled", "success", Some(&admin.id)),
        ("account.invite_created", "success", Some(&admin.id)),
        ("api_key.created", "success", Some(&user.id)),
        ("api_key.revoked", "success", Some(&user.id)),
    ];
    for (action, outcome, actor) in expected {
        let rows = audit(&app, &admin.access_token, &format!("action={action}&outcome={outcome}")).await;
        assert!(!rows.is_empty(), "a {outcome} {action} row");
        let row = &rows[0];
        assert_eq!(row["action"], *action);
        assert_eq!(row["outcome"], *outcome);
        if let Some(actor) = actor {
            assert!(rows.iter().any(|r| r["actor_id"] == *actor), "{action} by {actor}: {rows:?}");
        }
        assert_eq!(row["client_addr"], "127.0.0.1", "{action} records where it came from");
        assert!(row["request_id"].is_string(), "{action} records the request id");
    }
    let disabled = audit(&app, &admin.access_token, "action=account.disabled").await;
    assert_eq!(disabled[0]["target"], user.id.as_str());
    let lockout = audit(&app, &admin.access_token, "action=auth.lockout").await;
    assert_eq!(lockout[0]["target"], "account:locked@example.com");
    let failures = audit(&app, &admin.access_token, "action=auth.login&outcome=failure").await;
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures.iter().all(|r| r["actor_type"] == "anonymous"));

    assert_eq!(
        atom::audit::verify(&app.state.db).await.expect("walk"),
        atom::audit::Verification::Intact {
            rows: u64::try_from(audit(&app, &admin.access_token, "").await.len()).expect("count"),
        }
    );
    app.stop().await;
}

#[tokio::test]
async fn no_secret_reaches_any_audit_row() {
    let app = spawn().await;
    let Scenario { admin, secrets, .. } = scenario(&app).await;
    let rows = audit(&app, &admin.access_token, "").await;
    assert!(rows.len() >= 15, "{}", rows.len());
    let dump = serde_json::to_string(&rows).expect("json");
    for secret in &secrets {
        assert!(secret.len() >= 12, "a real secret: {secret}");
        assert!(!dump.contains(secret.as_str()), "a secret in the audit log: {secret:.24}…");
    }
    // The same, straight from the table, every column.
    let raw = crate::identity_support::fetch_strings(
        &app,
        "SELECT id || coalesce(actor_id, '') || action || coalesce(target, '') || coalesce(user_agent, '') \
         || details FROM audit_log",
    )
    .await;
    for secret in &secrets {
        assert!(raw.iter().all(|row| !row.contains(secret.as_str())), "a secret in the table: {secret:.24}…");
    }
    app.stop().await;
}

#[tokio::test]
async fn filters_select_exactly_what_they_name() {
    let app = spawn().await;
    let Scenario { admin, user, .. } = scenario(&app).await;
    let all = audit(&app, &admin.access_token, "").await;

    let by_user = audit(&app, &admin.access_token, &format!("actor={}", user.id)).await;
    let expected = all.iter().filter(|r| r["actor_id"] == user.id.as_str()).count();
    assert_eq!(by_user.len(), expected);
    assert!(expected >= 5, "{expected}");

    for outcome in ["success", "failure", "denied"] {
        let rows = audit(&app, &admin.access_token, &format!("outcome={outcome}")).await;
        assert_eq!(rows.len(), all.iter().filter(|r| r["outcome"] == outcome).count(), "{outcome}");
    }
    let combined =
        audit(&app, &admin.access_token, &format!("actor={}&action=auth.login&outcome=success", user.id)).await;
    assert_eq!(combined.len(), 3, "the user signed in three times: {combined:?}");

    // since is inclusive, until exclusive: together they split the log at any instant.
    let middle = &all[all.len() / 2];
    let at = middle["at"].as_str().expect("at");
    let since = audit(&app, &admin.access_token, &format!("since={at}")).await;
    let until = audit(&app, &admin.access_token, &format!("until={at}")).await;
    assert_eq!(since.len() + until.len(), all.len());
    assert!(since.iter().any(|r| r["id"] == middle["id"]));
    assert!(until.iter().all(|r| r["id"] != middle["id"]));
    let window = audit(&app, &admin.access_token, &format!("since={at}&until={at}")).await;
    assert!(window.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn cursor_pages_cover_the_log_once_in_order() {
    let app = spawn().await;
    let Scenario { admin, user, .. } = scenario(&app).await;
    let all: Vec<i64> =
        audit(&app, &admin.access_token, "").await.iter().map(|r| r["seq"].as_i64().expect("seq")).collect();
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");

    let mut paged = Vec::new();
    let mut path = "/v1/admin/audit?limit=3".to_owned();
    loop {
        let page: Value = app.get_as(&admin.access_token, &path).await.json().await.expect("json");
        let entries = page["entries"].as_array().expect("entries");
        assert!(entries.len() <= 3);
        paged.extend(entries.iter().map(|r| r["seq"].as_i64().expect("seq")));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(entries.len(), 3, "only the last page is short");
                path = format!("/v1/admin/audit?limit=3&cursor={cursor}");
            }
            None => break,
        }
    }
    assert_eq!(paged, all);

    // Filters hold across pages.
    let query = format!("actor={}&limit=1", user.id);
    let mut cursor = String::new();
    let mut count = 0;
    loop {
        let page: Value = app
            .get_as(&admin.access_token, &format!("/v1/admin/audit?{query}{cursor}"))
            .await
            .json()
            .await
            .expect("json");
        for entry in page["entries"].as_array().expect("entries") {
            assert_eq!(entry["actor_id"], user.id.as_str());
            count += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(count, audit(&app, &admin.access_token, &format!("actor={}", user.id)).await.len());
    app.stop().await;
}

#[tokio::test]
async fn bad_filters_are_all_reported_and_users_are_refused() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let user = app.user("user").await;
    let path = "/v1/admin/audit?limit=0&outcome=maybe&since=yesterday&until=2024-13-01&cursor=abc";
    let body = assert_problem(app.get_as(&admin.access_token, path).await, 422).await;
    let fields: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["limit", "outcome", "since", "until", "cursor"], "{body}");
    assert_problem(app.get_as(&user.access_token, "/v1/admin/audit").await, 403).await;
    app.stop().await;
}
