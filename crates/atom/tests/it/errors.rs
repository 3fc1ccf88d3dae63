//! Every error response is problem+json with the request id, whoever produced it; internal
//! details never reach the client; a panicking handler does not take the server down.

use std::time::Duration;

use atom::{ApiError, AppState};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::common::{TestApp, assert_problem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Deserialize, Serialize)]
struct Echo {
    name: String,
    count: u32,
}

/// Routes the tests mount themselves, with the full middleware stack around them.
pub fn test_routes() -> Router<AppState> {
    Router::new()
        .route("/test/echo", post(|Json(body): Json<Echo>| async move { Json(body) }))
        .route("/test/panic", get(panicking))
        .route(
            "/test/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done"
            }),
        )
        .route(
            "/test/sql-error",
            get(|State(state): State<AppState>| async move {
                let result = match &state.db {
                    atom::Db::Sqlite(pool) => {
                        sqlx::query("SELECT secret_column FROM no_such_table").execute(pool).await.map(drop)
                    }
                    atom::Db::Postgres(pool, ..) => {
                        sqlx::query("SELECT secret_column FROM no_such_table").execute(pool).await.map(drop)
                    }
                };
                result.map(|_| "unreachable").map_err(ApiError::from)
            }),
        )
        .route(
            "/test/db",
            get(|State(state): State<AppState>| async move { state.db.instance_id().await.map_err(ApiError::from) }),
        )
}

async fn panicking() -> &'static str {
    panic!("deliberate test panic")
}

#[tokio::test]
async fn unknown_path_is_a_404_problem() {
    let app = TestApp::spawn().await;
    let body = assert_problem(app.get("/v1/nothing/here").await, 404).await;
    assert_eq!(body["type"], "urn:atom:problem:not-found");
    app.stop().await;
}

#[tokio::test]
async fn wrong_method_is_a_405_problem_that_keeps_allow() {
    let app = TestApp::spawn().await;
    let response = app.client.delete(app.url("/health")).send().await.expect("sent");
    let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(allow.contains("GET"), "Allow header kept: {allow:?}");
    assert_problem(response, 405).await;
    app.stop().await;
}

#[tokio::test]
async fn json_rejections_are_problems() {
    let app = TestApp::spawn_with(&[], test_routes()).await;
    let url = app.url("/test/echo");

    let no_type = app.client.post(&url).body(r#"{"name":"a","count":1}"#).send().await.expect("sent");
    assert_problem(no_type, 415).await;

    let syntax =
        app.client.post(&url).header("content-type", "application/json").body("{not json").send().await.expect("sent");
    assert_problem(syntax, 400).await;

    let wrong_type =
        app.client.post(&url).json(&serde_json::json!({"name": "a", "count": "x"})).send().await.expect("sent");
    let body = assert_problem(wrong_type, 422).await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("count")), "names the field: {body}");

    let ok = app.client.post(&url).json(&serde_json::json!({"name": "a", "count": 2})).send().await.expect("sent");
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_problems_with_and_without_content_length() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT_BYTES", "4096")], test_routes()).await;
    let big = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(8192));

    let sized = app.client.post(app.url("/test/echo")).header("content-type", "application/json").body(big.clone());
    assert_problem(sized.send().await.expect("sent"), 413).await;

    // Chunked, so no Content-Length announces the size: the limit applies while reading.
    let mut raw = String::from(
        "POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for chunk in big.as_bytes().chunks(1000) {
        raw.push_str(&format!("{:x}\r\n{}\r\n", chunk.len(), String::from_utf8_lossy(chunk)));
    }
    raw.push_str("0\r\n\r\n");
    let response = crate::common::raw_http(app.addr, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.to_ascii_lowercase().contains("content-type: application/problem+json"), "{response}");

    // Far over the limit: the server answers before the body is in and closes; it reads and
    // drops the rest meanwhile (a lingering close), so the client sees the answer, not a reset.
    // A client that writes its whole body before reading (as many do), over a raw socket.
    for (head, status) in [
        ("POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n", "413"),
        ("GET /health HTTP/1.1\r\nHost: t\r\n", "200"),
    ] {
        let size = 8 * 1024 * 1024;
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
        let request = format!("{head}Content-Length: {size}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("head");
        stream.write_all(&vec![b'x'; size]).await.expect("the whole body is taken, not reset");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .expect("answered")
            .expect("the answer arrives, not a reset");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{head}: {response}");
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_400_problems_with_a_request_id() {
    let app = TestApp::spawn_with(&[], test_routes()).await;
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nA header without a colon\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: t\r\n\r\n",
    ] {
        let case = String::from_utf8_lossy(raw);
        let response = crate::common::raw_http(app.addr, raw).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{case}: {response}"));
        assert!(head.starts_with("HTTP/1.1 400 "), "{case}: {head}");
        assert!(head.contains("\r\ncontent-type: application/problem+json\r\n"), "{case}: {head}");
        assert!(head.contains("\r\nx-content-type-options: nosniff\r\n"), "{case}: {head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{case}: {body}"));
        assert_eq!(problem["status"], 400, "{case}");
        assert_eq!(problem["type"], "urn:atom:problem:bad-request", "{case}");
        let id = problem["request_id"].as_str().unwrap_or_else(|| panic!("{case}: {problem}"));
        assert!(head.contains(&format!("\r\nx-request-id: {id}\r\n")), "{case}: {head}");
    }
    assert_eq!(app.get("/health").await.status(), 200, "the server goes on serving");
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_problem_and_the_server_goes_on() {
    atom::telemetry::install_panic_hook();
    let app = TestApp::spawn_with(&[], test_routes()).await;
    let body = assert_problem(app.get("/test/panic").await, 500).await;
    assert_eq!(body["detail"], "An internal error occurred.");
    assert!(!body.to_string().contains("deliberate"), "panic message stays in the log");
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn internal_errors_reveal_no_sql_or_cause() {
    let app = TestApp::spawn_with(&[], test_routes()).await;
    let body = assert_problem(app.get("/test/sql-error").await, 500).await;
    let text = body.to_string();
    for leak in ["no_such_table", "secret_column", "SELECT", "sqlx", "relation", "/work", ".rs"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_over_the_timeout_is_a_504_problem() {
    let app = TestApp::spawn_with(&[("HTTP_REQUEST_TIMEOUT_SECS", "1")], test_routes()).await;
    let started = std::time::Instant::now();
    let body = assert_problem(app.get("/test/slow").await, 504).await;
    assert!(started.elapsed() < Duration::from_millis(1450), "cut at the timeout, not at completion");
    assert_eq!(body["type"], "urn:atom:problem:timeout");
    app.stop().await;
}
