//! Redis stalling or dying under a running server, on a redis-server of the test's own (so
//! that it can be put to sleep and killed): requests keep answering, correctly and without
//! waiting on Redis, from the local rate limiter and the database, and Redis is used again
//! once it answers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{TestApp, TestUser, free_port};
use crate::identity_support::post;

/// A redis-server on a free port with a data directory of its own and no persistence;
/// killed on drop.
struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    async fn start() -> Self {
        let mut server = Self { port: free_port().await, dir: tempfile::tempdir().expect("dir"), child: None };
        server.restart().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port) and waits until it answers.
    async fn restart(&mut self) {
        let dir: PathBuf = self.dir.path().to_owned();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is required by this test");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.connect().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(conn)
    }

    async fn exists(&self, key: &str) -> bool {
        let mut conn = self.connect().await.expect("redis answers");
        redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await.expect("EXISTS") == 1
    }

    async fn delete(&self, key: &str) {
        let mut conn = self.connect().await.expect("redis answers");
        redis::cmd("DEL").arg(key).query_async::<()>(&mut conn).await.expect("DEL");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /v1/me` as `user`: answered 200 with the user's own id, within `bound`.
async fn me_answers(app: &TestApp, user: &TestUser, bound: Duration) {
    let started = Instant::now();
    let response = app.get_as(&user.access_token, "/v1/me").await;
    let took = started.elapsed();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["id"], user.id.as_str());
    assert!(took < bound, "/v1/me took {took:?}");
}

/// Asserts that `user`'s token is refused: 401, or 429 once the address's budget for failed
/// authentications is spent; never the 200 a stale cached account status would give.
async fn refused(app: &TestApp, user: &TestUser) {
    let status = app.get_as(&user.access_token, "/v1/me").await.status().as_u16();
    assert!(status == 401 || status == 429, "a disabled account's token is refused: {status}");
}

/// Polls `/v1/me` until `key` appears in Redis: the node uses Redis again.
async fn wait_until_redis_is_used(app: &TestApp, user: &TestUser, redis: &RedisServer, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        me_answers(app, user, Duration::from_secs(5)).await;
        if redis.exists(key).await {
            return;
        }
        assert!(Instant::now() < deadline, "{key} did not appear in Redis");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stalled_or_dead_redis_does_not_stall_requests_and_is_used_again_when_back() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let extra = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_CALL_TIMEOUT_MS", "50"),
        // A small per-address budget for unauthenticated requests, to see it enforced.
        ("RATE_LIMIT_ANONYMOUS_BURST", "3"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"),
        // Long-lived rate-limit keys (one request a second), to look for them in Redis.
        ("RATE_LIMIT_API_PER_MINUTE", "60"),
    ];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let prefix = format!("atom-test-{}", app.db.key_space);
    let (user, other, admin) = (app.user("user").await, app.user("user").await, app.user("admin").await);
    let rate_key = format!("{prefix}:rl:api:user:{}", user.id);
    let other_status = format!("{prefix}:cache:user:{}", other.id);
    me_answers(&app, &user, Duration::from_secs(5)).await;
    me_answers(&app, &other, Duration::from_secs(5)).await;
    assert!(redis.exists(&rate_key).await, "rate limits are shared through Redis");
    assert!(redis.exists(&other_status).await, "account status is cached in Redis");

    // Redis stalls for 10 s: requests are answered without waiting for it.
    let mut probe = redis.connect().await.expect("redis answers");
    let sleeper = {
        let mut conn = redis.connect().await.expect("redis answers");
        tokio::spawn(async move { redis::cmd("DEBUG").arg("SLEEP").arg(10).query_async::<()>(&mut conn).await })
    };
    let stalled_at = Instant::now();
    while tokio::time::timeout(Duration::from_millis(100), redis::cmd("PING").query_async::<String>(&mut probe))
        .await
        .is_ok()
    {
        assert!(stalled_at.elapsed() < Duration::from_secs(8), "Redis did not go to sleep");
    }
    for _ in 0..5 {
        me_answers(&app, &user, Duration::from_secs(2)).await;
    }
    // Disabling an account while Redis stalls: its cached status in Redis is stale from now
    // on, and must never be served.
    let disable = format!("/v1/admin/users/{}/disable", other.id);
    assert_eq!(post(&app, Some(&admin.access_token), &disable, &serde_json::json!({})).await.status(), 200);
    refused(&app, &other).await;
    // The per-address limit still holds, decided by this node alone.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        statuses.push(app.get("/v1/no-such-route").await.status().as_u16());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(
        statuses,
        [404, 404, 429, 429, 429],
        "the anonymous burst of 3 (one spent by the 401), enforced locally"
    );
    assert!(stalled_at.elapsed() < Duration::from_secs(10), "all answered before Redis woke up");
    let text = app.state.metrics.render();
    assert!(text.contains("redis_breaker_open") && text.contains("redis_calls_skipped_total"), "{text}");

    // Redis wakes up: the queued invalidation is sent before the node reads from it again.
    // The client gives up on DEBUG SLEEP's answer before it comes: wait for Redis itself.
    let _ = sleeper.await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis.connect().await.is_err() {
        assert!(Instant::now() < deadline, "Redis did not wake up");
    }
    redis.delete(&rate_key).await;
    wait_until_redis_is_used(&app, &user, &redis, &rate_key).await;
    let other_generation = format!("{prefix}:cache-gen:user:{}", other.id);
    assert!(redis.exists(&other_generation).await, "the invalidation reached Redis");
    refused(&app, &other).await;

    // Redis dies: requests keep answering from the local limiter and the database.
    redis.kill();
    for _ in 0..10 {
        me_answers(&app, &user, Duration::from_secs(2)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    refused(&app, &other).await;

    // It comes back, empty: the node uses it again.
    redis.restart().await;
    wait_until_redis_is_used(&app, &user, &redis, &rate_key).await;
    app.stop().await;
}
