//! Database monitoring on the suite's backend: per-query metrics and pool gauges, the
//! slow-query log (names, never parameters), the database section of `/status`, and a
//! bounded number of queries per list request whatever the page size (no N+1).

use std::time::Duration;

use serde_json::Value;

use crate::common::{TestApp, TestDb, atom_command, free_port, pairs, wait_until_healthy};

#[tokio::test]
async fn query_metrics_name_each_query_and_never_its_parameters() {
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    assert_eq!(app.get_as(&admin.access_token, "/v1/me").await.status(), 200);
    let text = app.get("/metrics").await.text().await.expect("text");
    let backend = app.state.db.kind();
    for expected in [
        r#"db_queries_total{query="users.by_email"}"#.to_owned(),
        r#"db_query_duration_seconds_bucket{query="users.by_email",le="0.001"}"#.to_owned(),
        r#"db_query_duration_seconds_count{query="refresh_tokens.insert"}"#.to_owned(),
        format!(r#"db_pool_acquire_seconds_bucket{{backend="{backend}",le="0.01"}}"#),
        format!(r#"db_transaction_begin_seconds_count{{backend="{backend}"}}"#),
        format!(r#"db_pool_size{{backend="{backend}"}}"#),
        format!(r#"db_pool_connections{{backend="{backend}",state="idle"}}"#),
        format!(r#"db_pool_connections{{backend="{backend}",state="in_use"}}"#),
        r#"http_request_db_queries_bucket{method="GET",route="/v1/me",le="1"}"#.to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} in /metrics:\n{text}");
    }
    assert!(!text.contains(&admin.email), "an email (a query parameter) reached /metrics");
    app.stop().await;
}

#[tokio::test]
async fn status_shows_schema_version_pending_migrations_and_slow_query_threshold() {
    let app = TestApp::spawn_with(&[("DATABASE_SLOW_QUERY_MS", "125")], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let body: Value = app.get_as(&admin.access_token, "/status").await.json().await.expect("json");
    let database = &body["database"];
    let latest = app.state.db.migrator().iter().map(|m| m.version).max().expect("migrations");
    assert_eq!(database["schema_version"], latest, "{database}");
    assert_eq!(database["latest_migration"], latest, "{database}");
    assert_eq!(database["pending_migrations"], 0, "{database}");
    assert_eq!(database["slow_query_ms"], 125, "{database}");
    assert!(database["pool"]["max_size"].is_u64(), "{database}");
    app.stop().await;
}

/// The real binary with every query over the threshold (0 ms): each is logged by name with
/// its time and request id, and no email, password or token reaches any line.
#[tokio::test]
async fn slow_queries_are_logged_by_name_without_parameters() {
    let db = TestDb::new().await;
    let port = free_port().await;
    let mut env = db.pairs();
    env.extend(pairs(&[
        ("LISTEN", &format!("127.0.0.1:{port}")),
        ("LOG_FORMAT", "json"),
        ("LOG", "warn,atom::http=info"),
        ("DATABASE_SLOW_QUERY_MS", "0"),
        ("AUTH_REGISTRATION", "open"),
    ]));
    let child = atom_command(&env).arg("serve").spawn().expect("atom starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&format!("{base}/health"), Duration::from_secs(30)).await;

    let email = format!("slowlog-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "sekrit-PASSWORD-horse-battery";
    let client = reqwest::Client::new();
    let credentials = serde_json::json!({ "email": email, "password": password });
    let registered = client.post(format!("{base}/v1/auth/register")).json(&credentials).send().await.expect("sent");
    assert_eq!(registered.status(), 201);
    let login = client.post(format!("{base}/v1/auth/login")).json(&credentials).send().await.expect("sent");
    assert_eq!(login.status(), 200);
    let login_id = login.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    let tokens: Value = login.json().await.expect("json");
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh token").to_owned();

    let pid = child.id().expect("pid").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("exits after SIGTERM")
        .expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for secret in [email.as_str(), password, refresh_token.as_str()] {
        assert!(!stdout.contains(secret), "{secret} reached the log:\n{stdout}");
    }
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let slow: Vec<&Value> = lines.iter().filter(|l| l["message"] == "slow query").collect();
    let by_email = slow
        .iter()
        .find(|l| l["query"] == "users.by_email" && l["request_id"] == login_id.as_str())
        .unwrap_or_else(|| panic!("the login's account lookup is logged with its request id:\n{stdout}"));
    assert!(by_email["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{by_email}");
    assert_eq!(by_email["threshold_ms"], 0);
    assert_eq!(by_email["level"], "WARN");
    assert!(slow.iter().any(|l| l["query"] == "refresh_tokens.insert"), "queries in transactions too:\n{stdout}");
    let login_line = lines.iter().find(|l| l["message"] == "request" && l["request_id"] == login_id.as_str());
    let login_queries = login_line.and_then(|l| l["db_queries"].as_u64()).expect("the request line counts queries");
    let logged = slow.iter().filter(|l| l["request_id"] == login_id.as_str()).count();
    assert_eq!(login_queries, logged as u64, "every query of the login was logged as slow:\n{stdout}");
}
