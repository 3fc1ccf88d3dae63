//! No N+1: a list request issues a bounded number of queries whatever the page size.
//!
//! In a test binary of its own: it reads the request log through a scoped `tracing`
//! subscriber, and the integration suite's other tests, running in parallel in one process,
//! disturb `tracing`'s process-wide call-site state enough to lose lines now and then.

#[path = "it/binary.rs"]
mod binary;
#[path = "it/common.rs"]
mod common;
#[path = "it/proxy.rs"]
mod proxy;

use atom::audit::{Actor, AuditEvent, Outcome, RequestContext};
use atom::storage::users::{self, UserRow};
use serde_json::Value;

use crate::common::{CapturedLogs, TestApp};

/// Queries a list request may issue besides the listing itself: authentication refills its
/// caches now and then (account status every 30 s, signing keys every 60 s), and an API key
/// is looked up and, once a minute, touched.
const MAX_QUERIES_PER_LIST: u64 = 3;

/// Lists fill full pages, and each request issues the same small number of queries at
/// page size 5 as at 50: the rows are fetched by one query, never one per row.
#[tokio::test]
async fn list_endpoints_issue_a_bounded_number_of_queries_whatever_the_page_size() {
    let (logs, _guard) = CapturedLogs::install();
    let app = TestApp::spawn().await;
    let admin = app.user("admin").await;
    let db = &app.state.db;

    // 30 API keys over HTTP (each also writes an audit row); 30 accounts and 30 more audit
    // rows directly, since creating them is not what is measured.
    let mut api_key = String::new();
    for i in 0..30 {
        let created: Value = app
            .client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&admin.access_token)
            .json(&serde_json::json!({ "name": format!("key {i}") }))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("json");
        api_key = created["key"].as_str().expect("key").to_owned();
    }
    let mut tx = db.begin().await.expect("begin");
    for i in 0..30 {
        let user = UserRow {
            id: format!("n1-user-{i}"),
            email: format!("n1-{i:02}@example.com"),
            password_hash: "unused".to_owned(),
            role: "user".to_owned(),
            created_at: 0,
            updated_at: 0,
            password_changed_at: 0,
            disabled_at: None,
        };
        users::insert(&mut tx, &user).await.expect("user stored");
    }
    tx.commit().await.expect("commit");
    for _ in 0..30 {
        let event = AuditEvent::new(Actor::System, "test.seeded", Outcome::Success, &RequestContext::default());
        atom::audit::record_alone(db, event).await.expect("audit row");
    }
    // Fills authentication's caches, so that the lists below start from the steady state.
    assert_eq!(app.get_as(&admin.access_token, "/v1/me").await.status(), 200);

    let cases: [(&str, &str, &str, usize); 7] = [
        ("/v1/api-keys", "api_keys", "token", 30),
        ("/v1/api-keys", "api_keys", "api_key", 30),
        ("/v1/admin/users?limit=5", "users", "token", 5),
        ("/v1/admin/users?limit=50", "users", "token", 31),
        ("/v1/admin/audit?limit=5", "entries", "token", 5),
        ("/v1/admin/audit?limit=50", "entries", "token", 50),
        ("/v1/admin/audit?limit=50&action=test.seeded", "entries", "token", 30),
    ];
    let mut counts = Vec::new();
    let mut by_path = std::collections::HashMap::new();
    for (path, field, credential, rows) in cases {
        let bearer = if credential == "api_key" { &api_key } else { &admin.access_token };
        let response = app.get_as(bearer, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let request_id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
        let body: Value = response.json().await.expect("json");
        let listed = body[field].as_array().map_or(0, Vec::len);
        assert!(listed >= rows, "{path} lists at least {rows} rows, got {listed}");
        let queries = logs
            .lines()
            .into_iter()
            .find(|l| l["fields"]["message"] == "request" && l["fields"]["request_id"] == request_id.as_str())
            .and_then(|l| l["fields"]["db_queries"].as_u64())
            .unwrap_or_else(|| panic!("request line of {path} with db_queries:\n{}", logs.text()));
        counts.push(format!("{path} ({credential}, {listed} rows): {queries}"));
        by_path.insert(path, queries);
        assert!((1..=MAX_QUERIES_PER_LIST).contains(&queries), "{path} issued {queries} queries for {listed} rows");
    }
    // Seen by `cargo test -- --nocapture`: the numbers behind the bound.
    println!("queries per list request:\n  {}", counts.join("\n  "));
    // Back to back, with authentication's caches warm, a page of 50 costs what a page of 5 does.
    for list in ["/v1/admin/users", "/v1/admin/audit"] {
        let (small, large) =
            (by_path[format!("{list}?limit=5").as_str()], by_path[format!("{list}?limit=50").as_str()]);
        assert_eq!(small, large, "{list}: {small} queries for 5 rows, {large} for 50");
    }
    app.stop().await;
}
