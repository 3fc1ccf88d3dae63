//! Input validation over HTTP: every malformed body or query gets a precise problem, with
//! `errors: [{field, message}]` naming each failing field.

use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};

async fn post_raw(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    app.client.post(app.url(path)).header("content-type", content_type).body(body).send().await.expect("sent")
}

fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn malformed_bodies_get_precise_problems() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT_BYTES", "4096")], axum::Router::new()).await;
    let login = |body: Value| post_raw(&app, "/v1/auth/login", "application/json", body.to_string().into_bytes());

    let body = assert_problem(login(json!({"email": "a@b.co", "password": "x", "admin": true})).await, 422).await;
    assert_eq!(error_fields(&body), ["admin"]);
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("unknown field `admin`")), "{body}");

    let body = assert_problem(login(json!({"email": 7, "password": "x"})).await, 422).await;
    assert_eq!(error_fields(&body), ["email"]);

    let body = assert_problem(login(json!({"email": "a\u{0}@b.co", "password": "p\u{1b}w"})).await, 422).await;
    assert_eq!(error_fields(&body), ["email", "password"], "every failing field at once");

    assert_problem(post_raw(&app, "/v1/auth/login", "application/json", b"{\"email\":".to_vec()).await, 400).await;
    assert_problem(post_raw(&app, "/v1/auth/login", "application/json", b"{\"email\":\"\xff\"}".to_vec()).await, 400)
        .await;
    assert_problem(post_raw(&app, "/v1/auth/login", "text/plain", b"{}".to_vec()).await, 415).await;
    let deep = format!("{{\"email\":{}1{}}}", "[".repeat(64), "]".repeat(64));
    assert_problem(post_raw(&app, "/v1/auth/login", "application/json", deep.into_bytes()).await, 400).await;
    let huge = json!({"email": "x".repeat(8192), "password": "x"}).to_string().into_bytes();
    assert_problem(post_raw(&app, "/v1/auth/login", "application/json", huge).await, 413).await;
    app.stop().await;
}

#[tokio::test]
async fn semantic_rules_report_all_fields_and_queries_are_validated() {
    let app = TestApp::spawn().await;
    let user = app.user("admin").await;
    let response = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&user.access_token)
        .json(&json!({"name": "", "scopes": ["root"], "expires_in_days": 0}))
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 422).await;
    assert_eq!(error_fields(&body), ["name", "scopes", "expires_in_days"]);

    let body = assert_problem(app.get_as(&user.access_token, "/v1/admin/audit?limit=abc").await, 422).await;
    assert_eq!(error_fields(&body), ["limit"]);
    let body = assert_problem(app.get_as(&user.access_token, "/v1/admin/audit?limit=100000").await, 422).await;
    assert_eq!(error_fields(&body), ["limit"], "page size is capped");
    let body = assert_problem(app.get_as(&user.access_token, "/v1/admin/users?evil=1").await, 422).await;
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("unknown field")), "{body}");
    app.stop().await;
}
