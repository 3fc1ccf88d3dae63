//! Metrics of the process-wide registry read exactly: the cache's hit, miss and load
//! counters, the scheduled backups' failures and last success, failed and slow queries, the
//! password verifications of failed sign-ins, Socket.io refusals by reason and open
//! connections.
//!
//! In a test binary of its own: in the integration suite every other test's requests and
//! backups count in the same registry, in parallel, enough to satisfy any "at least ours"
//! bound without a single event of ours. Here the tests run one at a time.

#[path = "it/binary.rs"]
mod binary;
#[path = "it/common.rs"]
mod common;
#[path = "it/proxy.rs"]
mod proxy;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::TestApp;

/// Held by each test for its whole run: process-wide settings (the slow-query threshold) and
/// series must not be shared with a test running in parallel.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The sum of a metric's samples whose labels include every one of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("metrics text");
    value_in(&text, name, labels)
}

/// The sum of `name`'s samples with `labels` in one scrape's text.
fn value_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn cached_reads_are_counted_as_hits_and_misses() {
    let _alone = ALONE.lock().await;
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let status: Value = app.get_as(&admin.access_token, "/status").await.json().await.expect("json");
    let expected = if std::env::var("ATOM_TEST_REDIS_URL").is_ok() { "redis" } else { "memory" };
    assert_eq!(status["backends"]["cache"], expected, "{status}");

    let user = app.user("user").await;
    let hits = [("namespace", "user"), ("result", "hit")];
    let misses = [("namespace", "user"), ("result", "miss")];
    let loads = [("namespace", "user")];
    let before = (
        metric(&app, "cache_requests_total", &hits).await,
        metric(&app, "cache_requests_total", &misses).await,
        metric(&app, "cache_loads_total", &loads).await,
    );
    // The first read of the account's status (creating the key, with the access token)
    // misses and loads it. Then an API key, each of whose requests reads the status from the
    // cache (an access token reads it at most once a second; its verified entry remembers
    // the rest).
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&serde_json::json!({ "name": "worker" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let key = response.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_owned();
    for _ in 0..5 {
        assert_eq!(app.get_as(&key, "/v1/me").await.status(), 200);
    }
    let after = (
        metric(&app, "cache_requests_total", &hits).await,
        metric(&app, "cache_requests_total", &misses).await,
        metric(&app, "cache_loads_total", &loads).await,
    );
    assert_eq!(after.1 - before.1, 1.0, "the first read missed");
    assert_eq!(after.2 - before.2, 1.0, "and loaded the status once");
    assert_eq!(after.0 - before.0, 5.0, "the key's five requests hit");
    app.stop().await;
}

/// Polls `metric` of `app` until `done` holds for it, for at most 30 s; the value.
async fn metric_until(app: &TestApp, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(app, name, &[]).await;
        if done(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failing_scheduled_backup_is_counted_and_a_successful_one_timestamped() {
    let _alone = ALONE.lock().await;
    // A backup directory that cannot be created: a regular file stands in its way.
    let blocked = tempfile::NamedTempFile::new().expect("file");
    let blocked_dir = blocked.path().join("backups").display().to_string();
    let failing =
        TestApp::spawn_with(&[("BACKUP_DIR", &blocked_dir), ("BACKUP_INTERVAL_SECS", "1")], axum::Router::new()).await;
    let failures = metric_until(&failing, "backup_failures_total", |v| v >= 1.0).await;
    assert_eq!(metric(&failing, "backup_last_success_timestamp_seconds", &[]).await, 0.0, "no success yet");
    assert_eq!(failing.get("/health").await.status(), 200, "a failing backup does not stop the server");
    // It keeps trying, every interval.
    metric_until(&failing, "backup_failures_total", |v| v > failures).await;
    failing.stop().await;

    let dir = tempfile::tempdir().expect("dir");
    let started = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    let extra = [("BACKUP_DIR", dir.path().to_str().expect("utf-8")), ("BACKUP_INTERVAL_SECS", "1")];
    let working = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let stamp = metric_until(&working, "backup_last_success_timestamp_seconds", |v| v > 0.0).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(stamp >= started.floor() && stamp <= now, "{stamp} within [{started}, {now}]");
    assert!(!atom::backup::list_archives(dir.path()).expect("list").is_empty(), "the archive it timestamps");
    working.stop().await;
}

#[tokio::test]
async fn failed_and_slow_queries_are_counted_by_name() {
    let _alone = ALONE.lock().await;
    // The slow-query threshold is process-wide (hence ALONE); 0 counts every query as slow.
    let extra = [("AUTH_REGISTRATION", "open"), ("DATABASE_SLOW_QUERY_MS", "0")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let failed = [("query", "users.insert")];
    // Each triple from one scrape: the app's background workers (the webhook outbox, the
    // echo agent) run queries at any moment, and separate scrapes would split one of them.
    let counts = |text: String| {
        (
            value_in(&text, "db_query_errors_total", &failed),
            value_in(&text, "db_slow_queries_total", &[]),
            value_in(&text, "db_queries_total", &[]),
        )
    };
    let before = counts(app.get("/metrics").await.text().await.expect("metrics text"));
    let body = serde_json::json!({ "email": "twice@example.com", "password": crate::common::PASSWORD });
    let first = app.client.post(app.url("/v1/auth/register")).json(&body).send().await.expect("sent");
    assert_eq!(first.status(), 201);
    let second = app.client.post(app.url("/v1/auth/register")).json(&body).send().await.expect("sent");
    assert_eq!(second.status(), 409, "the second insert fails on the unique email");
    let after = counts(app.get("/metrics").await.text().await.expect("metrics text"));
    assert_eq!(after.0 - before.0, 1.0, "the failed insert is counted under its name");
    assert!(after.2 > before.2, "queries ran");
    assert_eq!(after.1 - before.1, after.2 - before.2, "at a 0 ms threshold every query is slow");
    app.stop().await;
}

#[tokio::test]
async fn invalidations_queued_while_redis_is_down_are_counted_capped_dropped_and_sent() {
    let _alone = ALONE.lock().await;
    let redis = crate::common::redis_url();
    let proxy = crate::common::TcpProxy::start(crate::common::socket_addr_of(&redis)).await;
    let through_proxy = crate::common::via(&redis, proxy.addr);
    // At most two invalidations wait for Redis; a third and fourth are dropped (their entries
    // expire by the TTL).
    let extra =
        [("REDIS_URL", through_proxy.as_str()), ("CACHE_MAX_ENTRIES", "2"), ("HTTP_READY_CHECK_TIMEOUT_MS", "1000")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let admin = app.user("admin").await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(app.user("user").await);
    }
    let before =
        (metric(&app, "cache_invalidations_dropped_total", &[]).await, metric(&app, "cache_errors_total", &[]).await);
    assert_eq!(metric(&app, "cache_invalidations_pending", &[]).await, 0.0);

    proxy.set_down(true);
    for user in &users {
        let url = app.url(&format!("/v1/admin/users/{}/disable", user.id));
        let response = app.client.post(url).bearer_auth(&admin.access_token).send().await.expect("sent");
        assert_eq!(response.status(), 200, "the write succeeds while Redis is down");
    }
    assert_eq!(metric(&app, "cache_invalidations_pending", &[]).await, 2.0, "queued up to the cap");
    // Whichever Redis call failed first (after it, the node backs off instead of waiting).
    assert!(metric(&app, "cache_errors_total", &[]).await > before.1, "the failure to reach Redis is counted");
    let dropped = metric(&app, "cache_invalidations_dropped_total", &[]).await - before.0;
    assert!(dropped >= 2.0, "the invalidations past the cap are dropped and counted: {dropped}");

    proxy.set_down(false);
    // The queue drains once Redis answers again (a request wakes it; so does its retry).
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&app, "cache_invalidations_pending", &[]).await != 0.0 {
        assert!(Instant::now() < deadline, "the queued invalidations were never sent");
        let _ = app.get_as(&admin.access_token, "/v1/me").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// One sign-in attempt; its status.
async fn login(app: &TestApp, email: &str, password: &str) -> u16 {
    let body = serde_json::json!({ "email": email, "password": password });
    let response = app.client.post(app.url("/v1/auth/login")).json(&body).send().await.expect("sent");
    response.status().as_u16()
}

#[tokio::test]
async fn every_failed_sign_in_runs_one_password_verification_whether_the_account_exists_or_not() {
    let _alone = ALONE.lock().await;
    // This test is about the work done, not the throttle: no slowdown or lock gets in the way.
    let extra = [("AUTH_LOCKOUT_THRESHOLD", "1000"), ("AUTH_LOCKOUT_ADDR_THRESHOLD", "1000")];
    let app = TestApp::spawn_with(&extra, axum::Router::new()).await;
    let user = app.user("user").await;
    let disabled = app.user("user").await;
    let admin = app.user("admin").await;
    let url = app.url(&format!("/v1/admin/users/{}/disable", disabled.id));
    let response = app.client.post(url).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_eq!(response.status(), 200);

    // The same argon2 verification for each, so none answers sooner (its timing is measured
    // by bench/login.sh; here, the work itself is counted).
    let long_email = format!("{}@example.com", "a".repeat(300));
    let cases = [
        ("an unknown email", "nobody@example.com", common::PASSWORD, 401),
        ("a wrong password", user.email.as_str(), "not the password", 401),
        ("a disabled account", disabled.email.as_str(), common::PASSWORD, 401),
        ("an email too long to be looked up", long_email.as_str(), common::PASSWORD, 401),
        ("the right password", user.email.as_str(), common::PASSWORD, 200),
    ];
    for (case, email, password, status) in cases {
        let before = metric(&app, "password_verifications_total", &[]).await;
        assert_eq!(login(&app, email, password).await, status, "{case}");
        let after = metric(&app, "password_verifications_total", &[]).await;
        assert_eq!(after - before, 1.0, "{case}: one password verification");
    }
    app.stop().await;
}

/// The socket.io-client peer (tests/peers/socketio-client.mjs), reduced to connecting and
/// closing; the integration suite's `Peer` (tests/it/realtime.rs) is the full driver.
struct SocketPeer {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SocketPeer {
    fn start() -> Self {
        use std::process::Stdio;
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers");
        assert!(dir.join("node_modules/socket.io-client").is_dir(), "socket.io-client is not installed in {dir:?}");
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("socketio-client.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("Node.js runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().expect("stdout")));
        Self { _child: child, stdin, stdout }
    }

    /// Sends `command` and returns the next event of its connection, within 30 s.
    async fn send(&mut self, command: Value) -> Value {
        use tokio::io::AsyncWriteExt;
        let id = command["id"].clone();
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.expect("command sent");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.stdout.next_line())
                .await
                .expect("an event within 30 s")
                .expect("peer output")
                .expect("the peer runs");
            let event: Value = serde_json::from_str(&line).expect("JSON event");
            if event["id"] == id {
                return event;
            }
        }
    }

    /// Connects `id` with `token` from `local_address`: `connected` or the refusal's message.
    async fn connect(&mut self, id: &str, app: &TestApp, token: &str, local_address: &str) -> String {
        let command = serde_json::json!({ "op": "connect", "id": id, "url": app.url(""), "transport": "websocket",
            "auth": { "token": token }, "local_address": local_address });
        let event = self.send(command).await;
        match event["event"].as_str() {
            Some("connected") => "connected".to_owned(),
            Some("connect_error") => event["message"].as_str().expect("message").to_owned(),
            _ => panic!("{id}: {event}"),
        }
    }

    async fn close(&mut self, id: &str) {
        let event = self.send(serde_json::json!({ "op": "close", "id": id })).await;
        assert_eq!(event["event"], "disconnect", "{id}: {event}");
    }
}

#[tokio::test]
async fn socket_io_refusals_are_counted_by_reason_and_open_connections_gauged() {
    let _alone = ALONE.lock().await;
    // PostgreSQL behind a proxy, whatever the suite's backend: `unavailable` needs a database
    // that can go away.
    let db = common::TestDb::postgres().await;
    let pg = db.pg.as_ref().expect("postgres");
    let proxy = common::TcpProxy::start(common::socket_addr_of(&pg.url)).await;
    let url = common::via(&pg.url, proxy.addr);
    let extra = [
        ("DATABASE_URL", url.as_str()),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "1"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "1"),
    ];
    let app = TestApp::spawn_on(db, &extra, axum::Router::new()).await;
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let refused = async |reason: &str| metric(&app, "realtime_connections_refused_total", &[("reason", reason)]).await;
    let reasons = ["address_cap", "user_cap", "unavailable", "unauthorized"];
    let mut before = Vec::new();
    for reason in reasons {
        before.push(refused(reason).await);
    }
    let open = metric(&app, "realtime_connections_open", &[]).await;

    let mut peer = SocketPeer::start();
    assert_eq!(peer.connect("a", &app, &a.access_token, "127.0.0.1").await, "connected");
    assert_eq!(metric(&app, "realtime_connections_open", &[]).await, open + 1.0, "one more open");
    // a's second connection, from another address: over the user cap.
    assert_eq!(peer.connect("a-again", &app, &a.access_token, "127.0.0.2").await, "too_many_connections");
    // b from a's address: over the address cap (checked first).
    assert_eq!(peer.connect("b", &app, &b.access_token, "127.0.0.1").await, "too_many_connections");
    // c's status is not cached yet: with PostgreSQL away it cannot be checked.
    proxy.set_down(true);
    assert_eq!(peer.connect("c", &app, &c.access_token, "127.0.0.3").await, "unavailable");
    proxy.set_down(false);

    let mut after = Vec::new();
    for reason in reasons {
        after.push(refused(reason).await);
    }
    let counted: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(counted, [1.0, 1.0, 1.0, 0.0], "refusals by reason {reasons:?}");
    assert_eq!(metric(&app, "realtime_connections_open", &[]).await, open + 1.0, "refusals hold no place");

    // A close gives the place back (once the server has seen it).
    peer.close("a").await;
    metric_until(&app, "realtime_connections_open", |v| v == open).await;
    app.stop().await;
}

#[tokio::test]
async fn cache_entries_counts_what_the_in_process_cache_holds() {
    let _alone = ALONE.lock().await;
    // The in-process cache whatever the suite's backend: `cache_entries` is its gauge.
    let db = common::TestDb::new().await;
    let mut config = common::test_config(&db, &[]);
    config.redis.url = None;
    let app = TestApp::spawn_config(db, config, axum::Router::new()).await;
    let users = [app.user("user").await, app.user("user").await, app.user("user").await];
    let before = metric(&app, "cache_entries", &[]).await;
    // Each account's first authenticated request caches its status: one entry each.
    for user in &users {
        assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 200);
    }
    assert_eq!(metric(&app, "cache_entries", &[]).await - before, 3.0, "one entry per account");
    // Read again, nothing new is held.
    for user in &users {
        assert_eq!(app.get_as(&user.access_token, "/v1/me").await.status(), 200);
    }
    assert_eq!(metric(&app, "cache_entries", &[]).await - before, 3.0, "hits add no entry");
    app.stop().await;
}
