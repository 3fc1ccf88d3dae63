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

    // Far over the limit, on any route: the server answers at once from `Content-Length`,
    // before the body is in, and closes; it reads and drops the rest meanwhile (a lingering
    // close), so the client sees the answer, not a reset. A client that writes its whole body
    // before reading (as many do), over a raw socket.
    for head in [
        "POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n",
        "GET /health HTTP/1.1\r\nHost: t\r\n",
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
        assert!(response.starts_with("HTTP/1.1 413 "), "{head}: {response}");
        assert!(response.contains("content-type: application/problem+json"), "{head}: {response}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_announced_body_over_the_limit_is_refused_at_once_on_an_authenticated_route() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT_BYTES", "4096")], test_routes()).await;
    let user = app.user("user").await;
    // The body never comes: the answer must not wait for it (nor for the request timeout).
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /v1/api-keys HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
        user.access_token
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
        .await
        .expect("answered before any body byte was sent")
        .expect("read");
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(response.contains(r#""type":"urn:atom:problem:payload-too-large""#), "{response}");
    app.stop().await;
}

#[tokio::test]
async fn a_body_left_unread_closes_the_connection_and_says_so() {
    let app = TestApp::spawn_with(&[], test_routes()).await;
    // A GET with a body, and a 401 answered before the body is read: hyper cannot reuse the
    // connection, so the answer says `Connection: close` and the client opens a new one.
    let requests = [
        "GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
        "POST /v1/api-keys HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n",
    ];
    for head in requests {
        // The head alone, so that the body is not in hyper's buffer when the answer is made.
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("head");
        let mut response = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response))
            .await
            .expect("answered")
            .expect("read");
        let response = String::from_utf8_lossy(&response[..n]).to_ascii_lowercase();
        assert!(response.contains("\r\nconnection: close\r\n"), "{head}: {response}");
    }
    // A client with a pool (reqwest) sends each next request on a connection that works.
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let unread = client.get(app.url("/health")).body("hello").send().await.expect("sent");
        assert_eq!(unread.status(), 200);
        let unauthorized = client.post(app.url("/v1/api-keys")).body("{}").send().await.expect("sent");
        assert_eq!(unauthorized.status(), 401);
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_400_and_a_closed_connection() {
    let app = TestApp::spawn_with(&[], test_routes()).await;
    // hyper answers these itself, before any service sees them: a bare 400, then it closes.
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nA header without a colon\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /health HTTP/9.9\r\nHost: t\r\n\r\n",
    ] {
        let case = String::from_utf8_lossy(raw);
        let response = crate::common::raw_http(app.addr, raw).await;
        assert!(response.starts_with("HTTP/1.1 400 "), "{case}: {response}");
        assert!(response.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{case}: {response}");
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
    // A handler that would run for two minutes: its 504 can only come from the timeout, and
    // the bound on the wait is generous, for a loaded machine.
    let endless = Router::new().route(
        "/test/endless",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            "done"
        }),
    );
    let app = TestApp::spawn_with(&[("HTTP_REQUEST_TIMEOUT_SECS", "1")], endless).await;
    let response = tokio::time::timeout(Duration::from_secs(30), app.get("/test/endless"))
        .await
        .expect("cut at the timeout, not at completion");
    let body = assert_problem(response, 504).await;
    assert_eq!(body["type"], "urn:atom:problem:timeout");
    app.stop().await;
}
