//! API keys: created with scopes and shown once, listed by prefix and last use (never the
//! secret), usable as a bearer token, revocable, owned by their creator alone; the `admin`
//! scope needs an admin account, and admin routes through a key need that scope.

use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::identity_support::{
    api_key_parts, assert_unauthorized, audit, create_api_key, delete_as, execute, fetch_strings, post,
};

fn key_of(created: &Value) -> String {
    created["key"].as_str().expect("key").to_owned()
}

async fn list(app: &TestApp, token: &str) -> Vec<Value> {
    let response = app.get_as(token, "/v1/api-keys").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["api_keys"].as_array().expect("api_keys").clone()
}

#[tokio::test]
async fn a_key_is_shown_once_listed_without_its_secret_and_works_as_a_bearer_token() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let created = create_api_key(&app, &user.access_token, json!({ "name": "worker", "expires_in_days": 30 })).await;
    let key = key_of(&created);
    assert!(key.starts_with("atom_sk_"), "{key}");
    assert_eq!(created["scopes"], json!(["api"]), "default scope");
    assert!(created["expires_at"].is_string());
    assert!(key.starts_with(created["prefix"].as_str().expect("prefix")), "the prefix is the key's start");

    let listed = list(&app, &user.access_token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created["id"]);
    assert_eq!(listed[0]["prefix"], created["prefix"]);
    assert!(listed[0]["last_used_at"].is_null(), "not used yet");
    assert!(listed[0].get("key").is_none());
    let secret = api_key_parts(&key).1;
    assert!(!serde_json::to_string(&listed).expect("json").contains(secret), "the secret is never listed");
    // Stored as a hash only.
    let stored = fetch_strings(&app, "SELECT key_hash FROM api_keys").await;
    assert_eq!(stored, vec![atom::identity::secret_hash(&key)]);

    let me: Value = app.get_as(&key, "/v1/me").await.json().await.expect("json");
    assert_eq!(me["id"], user.id.as_str());
    let listed = list(&app, &key).await;
    assert!(listed[0]["last_used_at"].is_string(), "use recorded: {}", listed[0]);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_or_expired_key_gets_401_and_revocation_is_audited() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let created = create_api_key(&app, &user.access_token, json!({ "name": "ci" })).await;
    let key = key_of(&created);
    let id = created["id"].as_str().expect("id");
    assert_eq!(app.get_as(&key, "/v1/me").await.status(), 200);

    assert_eq!(delete_as(&app, &user.access_token, &format!("/v1/api-keys/{id}")).await.status(), 204);
    assert_unauthorized(app.get_as(&key, "/v1/me").await, Some("invalid_token")).await;
    assert_eq!(list(&app, &user.access_token).await[0]["revoked"], true);
    assert_problem(delete_as(&app, &user.access_token, &format!("/v1/api-keys/{id}")).await, 404).await;

    // A key past its expiry, and keys that only look like keys.
    let expiring = create_api_key(&app, &user.access_token, json!({ "name": "old", "expires_in_days": 1 })).await;
    let expiring_id = expiring["id"].as_str().expect("id");
    execute(&app, &format!("UPDATE api_keys SET expires_at = 1 WHERE id = '{expiring_id}'")).await;
    assert_unauthorized(app.get_as(&key_of(&expiring), "/v1/me").await, Some("invalid_token")).await;
    let (prefix, _) = api_key_parts(&key);
    let wrong_secret = format!("{prefix}_{}", "A".repeat(43));
    for fake in [wrong_secret.as_str(), "atom_sk_", "atom_sk_short_secret", "atom_sk_000000000000_x"] {
        assert_unauthorized(app.get_as(fake, "/v1/me").await, Some("invalid_token")).await;
    }

    let created_rows = audit(&app, &admin.access_token, "action=api_key.created").await;
    assert_eq!(created_rows.len(), 2);
    let revoked = audit(&app, &admin.access_token, "action=api_key.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["target"], id);
    assert_eq!(revoked[0]["actor_id"], user.id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn keys_belong_to_their_owner_alone() {
    let app = TestApp::spawn().await;
    let alice = app.user("user").await;
    let bob = app.user("user").await;
    let bobs = create_api_key(&app, &bob.access_token, json!({ "name": "bob's" })).await;
    let bobs_id = bobs["id"].as_str().expect("id");
    create_api_key(&app, &alice.access_token, json!({ "name": "alice's" })).await;

    let alices_list = list(&app, &alice.access_token).await;
    assert_eq!(alices_list.len(), 1);
    assert!(alices_list.iter().all(|k| k["id"] != bobs_id), "Bob's key never in Alice's list");
    // Revoking Bob's key as Alice is a 404 (not a 403: it says nothing about the key), by
    // token or by Alice's own API key, and Bob's key goes on working.
    let alices_key = key_of(&create_api_key(&app, &alice.access_token, json!({ "name": "alice's 2" })).await);
    for credential in [alice.access_token.as_str(), alices_key.as_str()] {
        assert_problem(delete_as(&app, credential, &format!("/v1/api-keys/{bobs_id}")).await, 404).await;
    }
    assert_eq!(app.get_as(&key_of(&bobs), "/v1/me").await.status(), 200);
    assert_eq!(list(&app, &bob.access_token).await[0]["revoked"], false);
    app.stop().await;
}

#[tokio::test]
async fn invalid_requests_list_every_failing_field() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let bad = json!({ "name": "", "scopes": ["api", "root"], "expires_in_days": 0 });
    let body = assert_problem(post(&app, Some(&user.access_token), "/v1/api-keys", &bad).await, 422).await;
    let fields: Vec<&str> =
        body["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["name", "scopes", "expires_in_days"], "{body}");
    let empty = json!({ "name": "x", "scopes": [] });
    assert_problem(post(&app, Some(&user.access_token), "/v1/api-keys", &empty).await, 422).await;
    assert_unauthorized(post(&app, None, "/v1/api-keys", &json!({ "name": "x" })).await, None).await;
    app.stop().await;
}

/// Names are shown to people (the dashboard, the audit log): characters that do not print,
/// such as a right-to-left override that makes `gpj.exe` read as `exe.jpg`, a byte order mark
/// or a zero-width space, are refused; so are they in emails, where they would make a second
/// account look like the first.
#[tokio::test]
async fn names_and_emails_with_invisible_or_bidi_characters_are_refused() {
    let app = TestApp::spawn_with(&[("AUTH_REGISTRATION", "open")], axum::Router::new()).await;
    let user = app.user("user").await;
    for name in ["report\u{202E}gpj.exe", "\u{FEFF}worker", "zero\u{200B}width", "iso\u{2066}late", "line\u{2028}sep"] {
        let body = json!({ "name": name });
        let problem = assert_problem(post(&app, Some(&user.access_token), "/v1/api-keys", &body).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "name", "{name:?}: {problem}");
    }
    assert!(list(&app, &user.access_token).await.is_empty(), "nothing was stored");
    let created = create_api_key(&app, &user.access_token, json!({ "name": "café ☕ 日本語 – ok" })).await;
    assert_eq!(created["name"], "café ☕ 日本語 – ok");

    for email in ["ad\u{200B}min@example.com", "\u{FEFF}eve@example.com", "eve@exam\u{202E}ple.com"] {
        let body = json!({ "email": email, "password": crate::common::PASSWORD });
        let problem = assert_problem(post(&app, None, "/v1/auth/register", &body).await, 422).await;
        assert_eq!(problem["errors"][0]["field"], "email", "{email:?}: {problem}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_admin_scope_needs_an_admin_and_admin_routes_need_the_scope() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;

    let asked = json!({ "name": "escalate", "scopes": ["api", "admin"] });
    let body = assert_problem(post(&app, Some(&user.access_token), "/v1/api-keys", &asked).await, 422).await;
    assert!(body["errors"].to_string().contains("admin needs an admin account"), "{body}");
    assert!(list(&app, &user.access_token).await.is_empty());

    let plain = key_of(&create_api_key(&app, &admin.access_token, json!({ "name": "plain" })).await);
    let scoped = key_of(&create_api_key(&app, &admin.access_token, asked.clone()).await);
    let users_key = key_of(&create_api_key(&app, &user.access_token, json!({ "name": "u" })).await);

    for path in ["/v1/admin/users", "/v1/admin/audit", "/status"] {
        assert_problem(app.get_as(&plain, path).await, 403).await;
        assert_problem(app.get_as(&users_key, path).await, 403).await;
        assert_eq!(app.get_as(&scoped, path).await.status(), 200, "{path}");
    }
    // A key cannot mint a key with more scopes than its own.
    assert_problem(post(&app, Some(&plain), "/v1/api-keys", &asked).await, 403).await;
    assert_eq!(post(&app, Some(&scoped), "/v1/api-keys", &json!({ "name": "child" })).await.status(), 201);

    // The audit row names the key as the actor.
    let rows = audit(&app, &admin.access_token, "action=api_key.created").await;
    let keys_by_key: Vec<&Value> = rows.iter().filter(|r| r["actor_type"] == "api_key").collect();
    assert_eq!(keys_by_key.len(), 1, "{rows:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_owners_keys_stop_working() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let key = key_of(&create_api_key(&app, &user.access_token, json!({ "name": "k" })).await);
    assert_eq!(app.get_as(&key, "/v1/me").await.status(), 200);
    let path = format!("/v1/admin/users/{}/disable", user.id);
    assert_eq!(post(&app, Some(&admin.access_token), &path, &json!({})).await.status(), 200);
    assert_unauthorized(app.get_as(&key, "/v1/me").await, Some("invalid_token")).await;
    app.stop().await;
}

/// `GET /v1/api-keys` pages by cursor like the other lists, newest first, so that no key
/// is ever out of reach (it used to stop at 500 without saying so). Keys created in the same
/// millisecond are neither repeated nor skipped across a page boundary.
#[tokio::test]
async fn keys_are_listed_page_by_page_newest_first_however_many_there_are() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let other = app.user("user").await;
    let other_key = create_api_key(&app, &other.access_token, json!({ "name": "theirs" })).await;
    // 520 keys; every 4 share a creation time.
    execute(
        &app,
        &format!(
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 520) \
             INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at) \
             SELECT 'key-' || n, '{}', 'seeded ' || n, 'pfx-' || n, 'hash-' || n, 'api', 1700000000000 + n / 4 FROM s",
            user.id
        ),
    )
    .await;

    let first: Value = app.get_as(&user.access_token, "/v1/api-keys").await.json().await.expect("json");
    assert_eq!(first["api_keys"].as_array().map(Vec::len), Some(50), "50 by default");
    assert!(first["next_cursor"].is_string(), "{}", first["next_cursor"]);

    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut path = "/v1/api-keys?limit=200".to_owned();
    loop {
        let response = app.get_as(&user.access_token, &path).await;
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().await.expect("json");
        let keys = page["api_keys"].as_array().expect("api_keys");
        assert!(keys.len() <= 200);
        seen.extend(keys.iter().map(|k| {
            let created_at = atom::wire::parse_rfc3339(k["created_at"].as_str().expect("created_at")).expect("time");
            (created_at, k["id"].as_str().expect("id").to_owned())
        }));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/api-keys?limit=200&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 520, "every key, once");
    let mut ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 520, "no key twice");
    assert!(!ids.contains(&other_key["id"].as_str().expect("id")), "only the caller's keys");
    let out_of_order = seen.windows(2).position(|w| w[0] <= w[1]);
    assert_eq!(out_of_order.map(|i| &seen[i..i + 2]), None, "newest first, then by id, descending");

    for bad in ["limit=0", "limit=201", "cursor=garbage", "cursor=12.", "cursor=-5.key-1"] {
        let problem = assert_problem(app.get_as(&user.access_token, &format!("/v1/api-keys?{bad}")).await, 422).await;
        let field = bad.split('=').next().expect("name");
        assert_eq!(problem["errors"][0]["field"], field, "{bad}: {problem}");
    }
    app.stop().await;
}

/// A key without the `api` scope reaches only what its other scopes are for: it cannot manage
/// the account it belongs to.
#[tokio::test]
async fn a_key_without_the_api_scope_reaches_only_the_routes_of_its_scopes() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let proxy_only = key_of(
        &create_api_key(&app, &user.access_token, json!({ "name": "agent", "scopes": ["connections:use"] })).await,
    );
    let agent_only =
        key_of(&create_api_key(&app, &user.access_token, json!({ "name": "worker", "scopes": ["agent"] })).await);
    let admin_only =
        key_of(&create_api_key(&app, &admin.access_token, json!({ "name": "ops", "scopes": ["admin"] })).await);

    // Who it acts for, any key may ask.
    for key in [&proxy_only, &agent_only, &admin_only] {
        assert_eq!(app.get_as(key, "/v1/me").await.status(), 200);
    }
    // What each scope is for.
    assert_eq!(app.get_as(&proxy_only, "/v1/connections").await.status(), 200);
    assert_eq!(app.get_as(&agent_only, "/v1/conversations").await.status(), 200);
    assert_eq!(app.get_as(&admin_only, "/v1/admin/users").await.status(), 200);
    // Managing the account, or anything else, is not.
    for (key, what) in [(&proxy_only, "connections:use"), (&agent_only, "agent"), (&admin_only, "admin")] {
        let problem = assert_problem(app.get_as(key, "/v1/api-keys").await, 403).await;
        assert!(problem["detail"].as_str().expect("detail").contains("api scope"), "{problem}");
        let minted = post(&app, Some(key.as_str()), "/v1/api-keys", &json!({ "name": "more" })).await;
        assert_eq!(minted.status(), 403, "a {what} key cannot mint keys");
        let deleted = delete_as(&app, key, "/v1/me").await;
        assert_eq!(deleted.status(), 403, "a {what} key cannot delete the account");
    }
    let started = post(&app, Some(agent_only.as_str()), "/v1/conversations", &json!({ "title": "x" })).await;
    assert_eq!(started.status(), 403, "an agent key reads, it does not start conversations over HTTP");
    assert_eq!(app.get_as(&proxy_only, "/v1/admin/users").await.status(), 403);
    assert_eq!(fetch_strings(&app, "SELECT name FROM api_keys ORDER BY name").await, ["agent", "ops", "worker"]);
    app.stop().await;
}
