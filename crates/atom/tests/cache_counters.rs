//! The cache's hit, miss and load counters, read as exact differences around the requests.
//!
//! In a test binary of its own: the counters live in the process-wide metrics registry, and
//! in the integration suite every other test's authenticated requests count there too, in
//! parallel, enough to satisfy any "at least ours" bound without a single hit of ours.

#[path = "it/common.rs"]
mod common;

use serde_json::Value;

use crate::common::TestApp;

/// The sum of a metric's samples whose labels include every one of `labels`.
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn cached_reads_are_counted_as_hits_and_misses() {
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
