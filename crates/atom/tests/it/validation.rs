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

/// Every operation of the committed OpenAPI document, and every other method on its path,
/// given hostile input: malformed, mistyped, oversized and deeply nested bodies, the wrong
/// content type, hostile path ids and queries, forged and valid credentials. Each answer is
/// below 500 and, when an error, a problem+json carrying its request id.
#[tokio::test]
async fn hostile_input_on_every_route_gets_a_problem_and_never_a_5xx() {
    let app = TestApp::spawn_with(&[("RATE_LIMIT_ENABLED", "false")], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path).expect("docs/openapi.json")).expect("json");
    let paths: Vec<String> = spec["paths"].as_object().expect("paths").keys().cloned().collect();
    let nested = format!("{{\"email\":{}1{}}}", "[".repeat(4096), "]".repeat(4096));
    let long = format!("{{\"email\":\"{}@example.com\",\"password\":\"{}\"}}", "a".repeat(200_000), "p".repeat(10_000));
    let bodies: [(&str, &[u8]); 7] = [
        ("application/json", b"{"),
        ("application/json", b"{\"email\":\"a\\u0000@b.co\",\"name\":\"k\\u0000\",\"password\":\"p\\u0000w\"}"),
        ("application/json", b"{\"email\":1,\"password\":[],\"name\":{},\"role\":\"superuser\",\"scopes\":[1]}"),
        ("application/json", nested.as_bytes()),
        ("application/json", long.as_bytes()),
        ("application/json", b"\xff\xfe\x00{\"a\":\"\\ud800\"}"),
        ("text/plain", b"email=a@b.c"),
    ];
    let ids = ["x", "%2e%2e%2f%2e%2e%2fetc", "%00", "%ff", "-1", "%27%20OR%201%3D1%20--", "a%00b"];
    let queries = [
        "",
        "?limit=-1",
        "?limit=99999999999999999999",
        "?cursor=%00garbage",
        "?action=%ff&limit=a&limit=2",
        "?actor=%00",
        "?cursor=x%00",
    ];
    let forged = format!("Bearer {}x", admin.access_token);
    let auths = [None, Some(format!("Bearer {}", admin.access_token)), Some(forged), Some("Bearer ".to_owned())];
    let methods = [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE, reqwest::Method::PATCH];
    let mut answered = 0;
    for (i, path) in paths.iter().enumerate() {
        for (j, method) in methods.iter().enumerate() {
            for (k, auth) in auths.iter().enumerate() {
                // A spread of the combinations, every path, method and credential included.
                let (content_type, body) = bodies[(i + j + k) % bodies.len()];
                let id = ids[(i + 2 * j + k) % ids.len()];
                let query = queries[(i + j + 3 * k) % queries.len()];
                let url = app.url(&format!("{}{query}", path.replace("{id}", id)));
                let mut request = app.client.request(method.clone(), &url).header("content-type", content_type);
                if let Some(auth) = auth {
                    request = request.header("authorization", auth);
                }
                let response = request.body(body.to_vec()).send().await.expect("answered");
                let status = response.status().as_u16();
                let case = format!("{method} {url} ({content_type}, credential {k})");
                assert!(status < 500, "{case}: {status}");
                if status >= 400 {
                    let problem = assert_problem(response, status).await;
                    assert!(problem["request_id"].is_string(), "{case}: {problem}");
                }
                answered += 1;
            }
        }
    }
    assert!(answered >= 250, "{answered} requests");
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

fn operations(spec: &Value) -> Vec<(reqwest::Method, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            out.push((method, path.clone(), operation));
        }
    }
    out
}

/// A NUL byte, or bytes that are not UTF-8, in any path parameter or query parameter of any
/// route is refused with a 400 naming the parameter, before it reaches SQL (PostgreSQL's text
/// cannot hold NUL: it used to answer 500 there and 404 on SQLite); in any string of a JSON
/// body with a 422 naming the field. Run with an admin's credentials so that every handler
/// would otherwise be reached.
#[tokio::test]
async fn nul_bytes_in_paths_queries_and_bodies_are_refused_naming_the_parameter() {
    let app = TestApp::spawn_with(&[("RATE_LIMIT_ENABLED", "false")], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let spec_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(spec_path).expect("docs/openapi.json")).expect("json");
    let send = |method: reqwest::Method, path: String, body: Value| {
        let request = app.client.request(method, app.url(&path)).bearer_auth(&admin.access_token).json(&body);
        async move { request.send().await.expect("answered") }
    };
    let (mut paths_checked, mut queries_checked, mut bodies_checked) = (0, 0, 0);
    for (method, path, operation) in operations(&spec) {
        let params = operation["parameters"].as_array().cloned().unwrap_or_default();
        for param in &params {
            let name = param["name"].as_str().expect("name");
            let bad_values = ["%00", "a%00b", "%ff"];
            match param["in"].as_str() {
                Some("path") => {
                    for bad in bad_values {
                        let target = path.replace(&format!("{{{name}}}"), bad);
                        let case = format!("{method} {target}");
                        let body = assert_problem(send(method.clone(), target, json!({})).await, 400).await;
                        assert_eq!(error_fields(&body), [name], "{case}: {body}");
                        assert!(body["request_id"].is_string(), "{case}: {body}");
                        paths_checked += 1;
                    }
                }
                Some("query") => {
                    for bad in bad_values {
                        let target = format!("{path}?{name}={bad}");
                        let case = format!("{method} {target}");
                        let body = assert_problem(send(method.clone(), target, json!({})).await, 400).await;
                        assert_eq!(error_fields(&body), [name], "{case}: {body}");
                        queries_checked += 1;
                    }
                }
                _ => {}
            }
        }
        if operation.get("requestBody").is_some() && !path.contains('{') {
            let body = json!({
                "email": "a\u{0}@example.com", "password": "pass\u{0}word", "name": "key\u{0}",
                "refresh_token": "\u{0}", "current_password": "\u{0}", "new_password": "\u{0}",
                "invite_code": "\u{0}",
            });
            let case = format!("{method} {path}");
            let response = send(method.clone(), path.clone(), body).await;
            let problem = assert_problem(response, 422).await;
            let errors = problem["errors"].as_array().expect("errors");
            assert!(!errors.is_empty(), "{case}: {problem}");
            for error in errors {
                assert!(error["message"].as_str().is_some_and(|m| m.contains("NUL")), "{case}: {problem}");
            }
            bodies_checked += 1;
        }
    }
    assert!(
        paths_checked >= 9 && queries_checked >= 20 && bodies_checked >= 6,
        "{paths_checked} {queries_checked} {bodies_checked}"
    );
    // Nothing was changed on the way: the admin, and the built-in echo agent's account.
    let users = app.get_as(&admin.access_token, "/v1/admin/users").await.json::<Value>().await.expect("json");
    let people = users["users"].as_array().expect("users").iter().filter(|u| u["id"] != "echo-agent").count();
    assert_eq!(people, 1, "{users}");
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}

/// With the default `http.max_header_bytes` (32 KiB) a long URI fills the request head before
/// hyper could call it too long (its 414 is for URIs over 65,534 bytes): the client gets the
/// 431 problem, as the README says.
#[tokio::test]
async fn a_long_uri_gets_the_414_problem_under_the_default_head_limit() {
    let app = TestApp::spawn().await;
    // Over the 32 KiB default, within hyper's read buffer of twice that: the stack's problem.
    let request = format!("GET /v1/api-keys?cursor={} HTTP/1.1\r\nHost: atom\r\n\r\n", "a".repeat(40_000));
    let answer = crate::common::raw_http(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{}", answer.lines().next().unwrap_or_default());
    assert!(answer.contains(r#""type":"urn:atom:problem:uri-too-long""#), "{answer}");
    assert_eq!(app.get("/health").await.status(), 200);
    app.stop().await;
}
