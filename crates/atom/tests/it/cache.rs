//! The cache over real HTTP: writes that invalidate at once (disabled accounts, revoked keys,
//! rotated signing keys), two nodes sharing one Redis, and Redis cut (through a proxy, never
//! the shared server itself) during cached reads. Its hit and miss counters are checked in
//! `tests/process_metrics.rs`, a process of their own.

use std::time::{Duration, Instant};

use axum::Router;
use serde_json::Value;

use crate::common::{TcpProxy, TestApp, TestUser, redis_url, run_atom, socket_addr_of, via};

/// The sum of a metric's samples whose labels include every one of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn status_of(app: &TestApp, token: &str) -> u16 {
    app.get_as(token, "/v1/me").await.status().as_u16()
}

async fn set_disabled(app: &TestApp, admin: &TestUser, user: &TestUser, disable: bool) {
    let action = if disable { "disable" } else { "enable" };
    let response = app
        .client
        .post(app.url(&format!("/v1/admin/users/{}/{action}", user.id)))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{action}");
}

/// Creates an API key for `user`: (id, key).
async fn api_key(app: &TestApp, user: &TestUser) -> (String, String) {
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&serde_json::json!({ "name": "worker" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    (body["id"].as_str().expect("id").to_owned(), body["key"].as_str().expect("key").to_owned())
}

async fn revoke(app: &TestApp, user: &TestUser, id: &str) {
    let response =
        app.client.delete(app.url(&format!("/v1/api-keys/{id}"))).bearer_auth(&user.access_token).send().await;
    assert_eq!(response.expect("sent").status(), 204);
}

/// A second node on `first`'s database, sharing Redis `redis` and `first`'s key prefix.
async fn second_node(first: &TestApp, redis: &str, extra: &[(&str, &str)]) -> TestApp {
    let shared: Vec<(String, String)> = first.db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    let mut pairs: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.push(("REDIS_URL", redis));
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(&pairs, Router::new()).await
}

/// The entry `namespace:key` of `app` in Redis, read directly.
async fn in_redis(app: &TestApp, namespace: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis is required by this test");
    let name = format!("{}:cache:{namespace}:{key}", app.state.config.redis.key_prefix);
    redis::cmd("GET").arg(name).query_async(&mut conn).await.expect("GET")
}

#[tokio::test]
async fn disabling_an_account_rejects_its_token_at_once_and_enabling_lets_it_sign_in_again() {
    let app = TestApp::spawn().await;
    let (admin, user) = (app.user("admin").await, app.user("user").await);
    // The third is answered from the verified token's memo of the account's status.
    for _ in 0..3 {
        assert_eq!(status_of(&app, &user.access_token).await, 200, "cached as enabled");
    }
    set_disabled(&app, &admin, &user, true).await;
    assert_eq!(status_of(&app, &user.access_token).await, 401, "disabled at once");
    set_disabled(&app, &admin, &user, false).await;
    // The old token stays refused (tests/it/auth_revocation.rs); a new sign-in works at once.
    let again = app.login(&user.email, crate::common::PASSWORD).await;
    let token = again["access_token"].as_str().expect("access token");
    assert_eq!(status_of(&app, token).await, 200, "enabled at once");
    app.stop().await;
}

#[tokio::test]
async fn revoking_an_api_key_rejects_it_at_once() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let (id, key) = api_key(&app, &user).await;
    for _ in 0..2 {
        assert_eq!(status_of(&app, &key).await, 200, "cached as live");
    }
    revoke(&app, &user, &id).await;
    assert_eq!(status_of(&app, &key).await, 401, "revoked at once");
    app.stop().await;
}

#[tokio::test]
async fn two_nodes_sharing_redis_see_each_others_invalidations() {
    let redis = redis_url();
    let a = TestApp::spawn_with(&[("REDIS_URL", &redis)], Router::new()).await;
    let b = second_node(&a, &redis, &[]).await;
    let (admin, user) = (a.user("admin").await, a.user("user").await);

    let (id, key) = api_key(&a, &user).await;
    for node in [&b, &a, &b] {
        assert_eq!(status_of(node, &key).await, 200);
        assert_eq!(status_of(node, &user.access_token).await, 200);
    }
    assert!(in_redis(&a, "user", &user.id).await.is_some(), "one entry, shared");

    revoke(&a, &user, &id).await;
    assert_eq!(status_of(&b, &key).await, 401, "revoked on A: rejected by B at once");
    set_disabled(&b, &admin, &user, true).await;
    assert_eq!(status_of(&a, &user.access_token).await, 401, "disabled on B: rejected by A at once");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_signing_key_rotation_reaches_every_nodes_jwks_at_once() {
    let redis = redis_url();
    let a = TestApp::spawn_with(&[("REDIS_URL", &redis)], Router::new()).await;
    let b = second_node(&a, &redis, &[]).await;
    assert_eq!(kids(&a).await.len(), 1);
    assert_eq!(kids(&b).await, kids(&a).await, "cached");
    // Shared through Redis: the published keys are an entry there.
    let old_kid = kids(&a).await.remove(0);
    let cached = in_redis(&a, "jwks", "current").await.expect("the JWKS is cached in Redis");
    assert!(cached.contains(&old_kid), "{cached}");

    let mut env: Vec<(String, String)> = a.db.pairs().into_iter().filter(|(k, _)| k != "REDIS_URL").collect();
    env.push(("REDIS_URL".into(), redis.clone()));
    let (code, stdout, stderr) = run_atom(&env, &["keys", "rotate-signing"]).await;
    assert_eq!(code, 0, "{stderr}");
    let new_kid = stdout.split_whitespace().nth(3).expect("kid printed").to_owned();
    // The rotating process removed the shared entry; the nodes' next reads refill it.
    let after = in_redis(&a, "jwks", "current").await;
    assert!(after.as_ref().is_none_or(|entry| entry.contains(&new_kid)), "the stale entry is gone: {after:?}");
    for node in [&a, &b] {
        let published = kids(node).await;
        assert!(published.contains(&new_kid) && published.len() == 2, "{published:?} lacks {new_kid}");
    }
    let refilled = in_redis(&a, "jwks", "current").await.expect("refilled in Redis");
    assert!(refilled.contains(&new_kid) && refilled.contains(&old_kid), "{refilled}");
    a.stop().await;
    b.stop().await;
}

async fn kids(node: &TestApp) -> Vec<String> {
    let jwks: Value = node.get("/.well-known/jwks.json").await.json().await.expect("json");
    let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
    keys.iter().map(|k| k["kid"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Polls `check` every 50 ms until it holds, for at most `within`; the time it took.
async fn eventually(within: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn redis_cut_during_cached_reads_falls_back_then_serves_nothing_stale() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let through_proxy = via(&redis, proxy.addr);
    let app =
        TestApp::spawn_with(&[("REDIS_URL", &through_proxy), ("HTTP_READY_CHECK_TIMEOUT_MS", "1000")], Router::new())
            .await;
    let (admin, user, other) = (app.user("admin").await, app.user("user").await, app.user("user").await);
    for _ in 0..2 {
        assert_eq!(status_of(&app, &user.access_token).await, 200);
    }
    let stale = in_redis(&app, "user", &user.id).await.expect("cached in Redis");
    assert!(stale.contains(r#""disabled":false"#), "{stale}");

    proxy.set_down(true);
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(status_of(&app, &user.access_token).await, 200, "reads fall through to the database");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "no wait on a dead Redis per request: {:?}", started.elapsed());
    set_disabled(&app, &admin, &user, true).await;
    assert_eq!(status_of(&app, &user.access_token).await, 401, "the write is seen at once while Redis is down");
    assert_eq!(in_redis(&app, "user", &user.id).await, Some(stale.clone()), "Redis still holds the stale entry");

    proxy.set_down(false);
    // Every read from now on, while the queued invalidation waits to be sent and after, is
    // fresh; and the stale entry goes as soon as Redis answers (and is refilled fresh).
    eventually(Duration::from_secs(10), async || {
        assert_eq!(status_of(&app, &user.access_token).await, 401, "never the stale entry");
        in_redis(&app, "user", &user.id).await.as_ref() != Some(&stale)
    })
    .await;
    let atom::cache::Cache::Redis(cache) = &app.state.cache else { panic!("the Redis backend") };
    assert_eq!(cache.pending_invalidations(), 0, "the queued invalidation was sent");

    // Redis serves hits again.
    eventually(Duration::from_secs(10), async || {
        assert_eq!(status_of(&app, &other.access_token).await, 200);
        in_redis(&app, "user", &other.id).await.is_some()
    })
    .await;
    let hits = [("namespace", "user"), ("result", "hit")];
    let before = metric(&app, "cache_requests_total", &hits).await;
    assert_eq!(status_of(&app, &other.access_token).await, 200);
    assert!(metric(&app, "cache_requests_total", &hits).await > before, "a hit from Redis");
    app.stop().await;
}

#[tokio::test]
async fn a_write_that_cannot_reach_redis_is_stale_elsewhere_no_longer_than_the_ttl() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let through_proxy = via(&redis, proxy.addr);
    // Long enough for B to be seen serving the stale entry on a loaded machine.
    let ttl_secs = 5;
    let ttl = [("CACHE_TTL_SECS", "5"), ("HTTP_READY_CHECK_TIMEOUT_MS", "1000")];
    let a = TestApp::spawn_with(&[&[("REDIS_URL", through_proxy.as_str())], &ttl[..]].concat(), Router::new()).await;
    let b = second_node(&a, &redis, &ttl).await;
    let (admin, user) = (a.user("admin").await, a.user("user").await);
    assert_eq!(status_of(&b, &user.access_token).await, 200);
    let cached_at = Instant::now();
    let entry = in_redis(&a, "user", &user.id).await.expect("cached in Redis as enabled");
    assert!(entry.contains(r#""disabled":false"#), "{entry}");

    proxy.set_down(true);
    set_disabled(&a, &admin, &user, true).await;
    assert_eq!(status_of(&a, &user.access_token).await, 401, "on the writing node at once");
    // The invalidation could not reach Redis: B reads the shared entry, stale...
    let stale = status_of(&b, &user.access_token).await;
    assert!(cached_at.elapsed() < Duration::from_secs(ttl_secs), "checked within the TTL");
    assert_eq!(stale, 200, "B serves the shared entry the invalidation could not reach");
    assert_eq!(in_redis(&a, "user", &user.id).await, Some(entry), "Redis still holds it");
    // ...until it expires, and not much longer (a generous margin for a loaded machine).
    eventually(Duration::from_secs(ttl_secs + 10), async || status_of(&b, &user.access_token).await == 401).await;
    a.stop().await;
    b.stop().await;
}

/// The time to live left of the entry `namespace:key` of `app` in Redis, in milliseconds.
async fn ttl_in_redis(app: &TestApp, namespace: &str, key: &str) -> i64 {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("Redis is required by this test");
    let name = format!("{}:cache:{namespace}:{key}", app.state.config.redis.key_prefix);
    redis::cmd("PTTL").arg(name).query_async(&mut conn).await.expect("PTTL")
}

/// Where an invalidation cannot reach, a disabled account's token keeps working only as
/// long as its cached status lives: at most 30 s, even under a long `cache.ttl_secs`. Read
/// from the entry's own expiry in Redis, not by waiting 30 s (the in-process cache applies
/// the same asked-for TTL: `memory_entries_expire_after_the_configured_ttl_or_a_shorter_one_asked_for`
/// in src/cache/tests.rs).
#[tokio::test]
async fn an_account_status_is_cached_for_at_most_30_s_under_a_longer_ttl() {
    let redis = redis_url();
    let app = TestApp::spawn_with(&[("REDIS_URL", redis.as_str()), ("CACHE_TTL_SECS", "3600")], Router::new()).await;
    let user = app.user("user").await;
    let (_, key) = api_key(&app, &user).await;
    // The key's request caches both the key (by its prefix) and its owner's status.
    assert_eq!(status_of(&app, &key).await, 200);
    let prefix = key.split('_').nth(2).expect("atom_sk_<prefix>_<secret>");
    let key_ttl = ttl_in_redis(&app, "api_key", prefix).await;
    assert!(key_ttl > 30_000 && key_ttl <= 3_600_000, "the configured TTL applies to other entries: {key_ttl} ms");
    let status_ttl = ttl_in_redis(&app, "user", &user.id).await;
    assert!(status_ttl > 0 && status_ttl <= 30_000, "the account status expires within 30 s: {status_ttl} ms");
    app.stop().await;
}
