//! Who may read `/metrics`: by default a loopback listener only; a bearer token when
//! `metrics.token` is set; only its own listener when `metrics.listen` is set. On the main
//! listener it is rate-limited like any anonymous route, and no fuzz of odd methods, paths
//! or statuses grows it beyond a fixed bound.

use axum::Router;
use reqwest::Method;
use tokio::sync::oneshot;

use crate::common::{TestApp, TestDb, assert_problem, test_config};

const TOKEN: &str = "a-metrics-token-0123456789";

#[tokio::test]
async fn a_listener_that_is_not_loopback_serves_metrics_only_with_the_token() {
    let app = TestApp::spawn_with(&[("LISTEN", "0.0.0.0:0")], Router::new()).await;
    assert_problem(app.get("/metrics").await, 404).await;
    assert_eq!(app.get("/health").await.status(), 200, "the rest is served");
    app.stop().await;

    let app = TestApp::spawn_with(&[("LISTEN", "0.0.0.0:0"), ("METRICS_TOKEN", TOKEN)], Router::new()).await;
    let url = app.url("/metrics");
    assert_problem(app.client.get(&url).send().await.expect("sent"), 401).await;
    for wrong in ["wrong", &TOKEN[1..], &format!("{TOKEN}x")] {
        let response = app.client.get(&url).bearer_auth(wrong).send().await.expect("sent");
        let body = assert_problem(response, 401).await;
        assert!(!body.to_string().contains(TOKEN), "the token is never echoed");
    }
    let response = app.client.get(&url).bearer_auth(TOKEN).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.expect("text").contains("http_requests_total"));
    app.stop().await;
}

#[tokio::test]
async fn with_its_own_listener_metrics_are_served_there_and_not_on_the_main_one() {
    let db = TestDb::new().await;
    let config = test_config(&db, &[("METRICS_LISTEN", "127.0.0.1:0")]);
    let app = atom::Application::build(config).await.expect("builds");
    let (main, metrics) = (app.local_addr(), app.metrics_addr().expect("a metrics listener"));
    assert_ne!(main, metrics);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let get = |addr: std::net::SocketAddr, path: &str| client.get(format!("http://{addr}{path}")).send();

    assert_problem(get(main, "/metrics").await.expect("sent"), 404).await;
    let response = get(metrics, "/metrics").await.expect("sent");
    assert_eq!(response.status(), 200, "no auth on the metrics listener");
    assert!(response.text().await.expect("text").contains("http_requests_total"));
    assert_eq!(get(metrics, "/health").await.expect("sent").status(), 404, "only /metrics there");
    assert_eq!(get(metrics, "/v1/me").await.expect("sent").status(), 404);

    let _ = stop.send(());
    server.await.expect("task").expect("clean shutdown");
    assert!(get(metrics, "/metrics").await.is_err(), "the metrics listener closes at shutdown");
}

#[tokio::test]
async fn metrics_are_rate_limited_like_other_anonymous_routes_but_health_is_not() {
    let limits = [("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "1"), ("RATE_LIMIT_ANONYMOUS_BURST", "3")];
    let app = TestApp::spawn_with(&limits, Router::new()).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.get("/metrics").await.status().as_u16());
    }
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    // A bearer header does not take it out of the anonymous budget.
    let response = app.client.get(app.url("/metrics")).bearer_auth("anything").send().await.expect("sent");
    assert_problem(response, 429).await;
    for _ in 0..6 {
        assert_eq!(app.get("/health").await.status(), 200, "probes are never limited");
        assert_eq!(app.get("/ready").await.status(), 200);
    }
    app.stop().await;
}

/// The request series in `/metrics` and the size of the text of the application's own
/// families (`http_*`). The exporter's families (`db_*`) are process-wide, so other tests
/// running in parallel add series to them; they are bounded by the registered query names.
async fn request_series(app: &TestApp) -> (usize, usize) {
    let text = app.get("/metrics").await.text().await.expect("text");
    let own: usize = text.lines().filter(|l| l.starts_with("http_")).map(|l| l.len() + 1).sum();
    (text.lines().filter(|l| l.starts_with("http_requests_total{")).count(), own)
}

/// Odd methods, paths, bodies and headers, each with fresh random parts.
async fn fuzz(app: &TestApp) {
    let random = || uuid::Uuid::new_v4().simple().to_string();
    let methods = ["BREW", "PROPFIND", "M-SEARCH", "TRACE", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let paths = ["/{r}", "/v1/{r}", "/v1/api-keys/{r}", "/v1/admin/users/{r}/disable", "/health/{r}", "/metrics/{r}"];
    for (i, method) in methods.iter().enumerate() {
        let method = Method::from_bytes(
            format!("{method}{}", if i < 3 { random()[..4].to_owned() } else { String::new() })
                .to_uppercase()
                .as_bytes(),
        )
        .expect("method");
        for path in paths {
            let url = app.url(&path.replace("{r}", &random()));
            let _ = app.client.request(method.clone(), &url).send().await;
            let _ = app.client.request(method.clone(), &url).bearer_auth(random()).body("{").send().await;
        }
    }
    // Bodies and headers that make other statuses on real routes.
    let login = app.url("/v1/auth/login");
    let _ = app.client.post(&login).body("not json").send().await;
    let _ = app.client.post(&login).header("content-type", "application/json").body("{").send().await;
    let _ = app.client.post(&login).json(&serde_json::json!({ random(): 1 })).send().await;
    let _ = app.client.post(&login).header("content-type", "application/json").body(vec![b' '; 2 << 20]).send().await;
    let _ = app.client.get(app.url(&format!("/v1/me?{}={}", random(), random()))).send().await;
}

#[tokio::test]
async fn a_fuzz_of_odd_methods_paths_and_statuses_does_not_grow_metrics_beyond_a_bound() {
    let app = TestApp::spawn_with(&[("RATE_LIMIT_ENABLED", "false")], Router::new()).await;
    fuzz(&app).await;
    // Once so that the scrape's own series exists, then the baseline.
    request_series(&app).await;
    let (series, size) = request_series(&app).await;
    for round in 0..3 {
        fuzz(&app).await;
        let (again, grown) = request_series(&app).await;
        assert_eq!(again, series, "round {round}: fresh random methods and paths made no new series");
        // Counts and sums take a digit more here and there; no series are added.
        assert!(grown < size + size / 10, "round {round}: {size} -> {grown} bytes");
    }
    assert!(size < 160 * 1024, "the application's series in /metrics are {size} bytes");
    let text = app.get("/metrics").await.text().await.expect("text");
    assert!(text.contains(r#"method="other""#), "odd methods share one label");
    for line in text.lines().filter(|l| l.starts_with("http_requests_total{")) {
        assert!(!line.contains("BREW") && !line.contains("PROPFIND"), "{line}");
    }
    app.stop().await;
}
