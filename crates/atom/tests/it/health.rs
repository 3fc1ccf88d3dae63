//! `/health`, `/ready`, `/status`, `/metrics` and request ids on the suite's backend.

use serde_json::Value;

use crate::common::TestApp;

#[tokio::test]
async fn health_answers_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.expect("json"), serde_json::json!({"status": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn ready_reports_each_dependency_with_its_latency() {
    let app = TestApp::spawn().await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert!(body["checks"]["database"]["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{body}");
    let redis_configured = std::env::var("ATOM_TEST_REDIS_URL").is_ok();
    assert_eq!(body["checks"]["redis"]["status"].as_str(), redis_configured.then_some("ok"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn status_reports_version_backends_pool_and_limits_to_admins_only() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT_BYTES", "4096")], axum::Router::new()).await;
    crate::common::assert_problem(app.get("/status").await, 401).await;
    let user = app.user("user").await;
    crate::common::assert_problem(app.get_as(&user.access_token, "/status").await, 403).await;
    let admin = app.user("admin").await;
    let body: Value = app.get_as(&admin.access_token, "/status").await.json().await.expect("json");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["git_commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(body["instance_id"].as_str().map(str::len), Some(32), "{body}");
    assert!(body["uptime_secs"].is_u64());
    let expected_db = if crate::common::backend_is_postgres() { "postgres" } else { "sqlite" };
    assert_eq!(body["backends"]["database"], expected_db);
    let pool = &body["database"]["pool"];
    assert_eq!(pool["max_size"], 4);
    let (size, idle, in_use) = (pool["size"].as_u64(), pool["idle"].as_u64(), pool["in_use"].as_u64());
    assert_eq!(size, idle.zip(in_use).map(|(i, u)| i + u), "size = idle + in use: {pool}");
    assert_eq!(body["limits"]["body_limit_bytes"], 4096);
    assert_eq!(body["limits"]["request_timeout_secs"], 30);
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_requests_latency_in_flight_pool_and_start_time() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.get("/health").await;
    }
    app.get("/no/such/path").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"].to_str().is_ok_and(|c| c.starts_with("text/plain")),
        "Prometheus text content type"
    );
    let text = response.text().await.expect("text");
    let value = |series: &str| {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).and_then(|n| n.parse::<f64>().ok())
    };
    // This application's requests exactly: the request metrics are the application's own.
    let health = r#"method="GET",route="/health",status="200""#;
    assert_eq!(value(&format!("http_requests_total{{{health}}}")), Some(3.0), "health counted:\n{text}");
    assert_eq!(value(&format!("http_request_duration_seconds_count{{{health}}}")), Some(3.0));
    assert_eq!(value(&format!("http_request_duration_seconds_bucket{{{health},le=\"+Inf\"}}")), Some(3.0));
    assert!(value(&format!("http_request_duration_seconds_sum{{{health}}}")).is_some_and(|s| s > 0.0 && s < 3.0));
    assert_eq!(value(r#"http_request_db_queries_count{method="GET",route="/health"}"#), Some(3.0));
    assert_eq!(value(r#"http_requests_total{method="GET",route="<unmatched>",status="404"}"#), Some(1.0));
    // The scrape itself is in flight while it renders.
    assert_eq!(value("http_requests_in_flight"), Some(1.0), "in-flight gauge");
    assert!(text.contains(r#"db_pool_connections{backend=""#), "pool gauges");
    assert!(text.contains("db_pool_max_connections"), "pool size gauge");
    assert!(text.contains("process_start_time_seconds"), "start time");
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_generated_kept_when_valid_and_replaced_when_hostile() {
    let app = TestApp::spawn().await;
    let generated = app.get("/health").await;
    let id = generated.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_eq!(id.len(), 32);
    let other = app.get("/health").await.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert_ne!(id, other, "each request gets its own id");

    let kept =
        app.client.get(app.url("/health")).header("x-request-id", "trace-abc.123:XYZ").send().await.expect("sent");
    assert_eq!(kept.headers()["x-request-id"], "trace-abc.123:XYZ");

    // Every value HTTP can carry but the id's alphabet excludes: a space, a tab, bytes beyond
    // ASCII, too long, markup, empty. Each one is sent (no value is skipped) and replaced.
    let too_long = "a".repeat(129);
    let hostile: [&[u8]; 6] = [b"a b", b"x\ty", "caf\u{e9}".as_bytes(), too_long.as_bytes(), b"<script>", b""];
    for bytes in hostile {
        let value = reqwest::header::HeaderValue::from_bytes(bytes).expect("a value a header can carry");
        let r = app.client.get(app.url("/health")).header("x-request-id", value).send().await.expect("sent");
        assert_eq!(r.status(), 200);
        let got = r.headers()["x-request-id"].as_bytes();
        assert_ne!(got, bytes, "hostile id {:?} echoed", String::from_utf8_lossy(bytes));
        assert!(got.len() == 32 && got.iter().all(u8::is_ascii_hexdigit), "replaced by a generated id");
    }
    // A control character is not even a legal header byte: the request head is refused with a
    // 400 before any layer runs, so it can reach neither a log line nor the response.
    let refused =
        crate::common::raw_http(app.addr, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: x\x7f\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 400"), "control character refused: {refused:?}");
    assert!(!refused.contains('\u{7f}'), "control character echoed: {refused:?}");
    app.stop().await;
}
