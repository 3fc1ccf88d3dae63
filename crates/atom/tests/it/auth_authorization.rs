//! Authorization: every route needs authentication except an explicit public list, checked by
//! walking the served OpenAPI document, so a new route without protection fails here; admin
//! routes refuse users with 403.

use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::identity_support::assert_unauthorized;

/// The only operations anyone may call without a credential.
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/v1/auth/register"),
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/refresh"),
    ("post", "/v1/auth/logout"),
];

/// Operations for admins only.
fn is_admin_route(path: &str, operation: &Value) -> bool {
    let tagged = operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "admin"));
    tagged || path.starts_with("/v1/admin/") || path == "/status"
}

/// Every `(method, path template, operation)` of the served document.
async fn operations(app: &TestApp) -> Vec<(String, String, Value)> {
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.push((method.clone(), path.clone(), operation.clone()));
            }
        }
    }
    assert!(operations.len() >= 15, "the document lists the API: {operations:?}");
    operations
}

/// The path with each `{param}` replaced by a fresh UUID.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
    let mut request = app.client.request(method.clone(), app.url(path));
    if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
        request = request.json(&json!({}));
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sent")
}

#[tokio::test]
async fn every_operation_is_protected_unless_it_is_on_the_public_list() {
    let app = TestApp::spawn().await;
    for (method, template, operation) in operations(&app).await {
        let secured = operation["security"].as_array().is_some_and(|s| !s.is_empty());
        if secured {
            assert!(
                !PUBLIC.contains(&(method.as_str(), template.as_str())),
                "{method} {template} is on the public list but documents a security requirement"
            );
            assert!(operation["security"].to_string().contains("bearer"), "{method} {template} names the scheme");
            let response = call(&app, &method, &concrete(&template), None).await;
            assert_eq!(response.status(), 401, "{method} {template} without a token");
            assert_unauthorized(response, None).await;
        } else {
            assert!(
                PUBLIC.contains(&(method.as_str(), template.as_str())),
                "{method} {template} has no security requirement and is not on the public list"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_public_routes_answer_without_a_token() {
    let app = TestApp::spawn().await;
    for (method, path) in PUBLIC {
        let response = call(&app, method, path, None).await;
        assert_ne!(response.status(), 401, "{method} {path}");
        assert!(response.headers().get("www-authenticate").is_none(), "{method} {path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_refuse_users_with_403_and_serve_admins() {
    let app = TestApp::spawn().await;
    let user = app.user("user").await;
    let admin = app.user("admin").await;
    let mut admin_routes = 0;
    for (method, template, operation) in operations(&app).await {
        if !is_admin_route(&template, &operation) {
            continue;
        }
        admin_routes += 1;
        let path = concrete(&template);
        let body = assert_problem(call(&app, &method, &path, Some(&user.access_token)).await, 403).await;
        assert_eq!(body["type"], "urn:atom:problem:forbidden", "{method} {template}");
        // The admin gets past the role check: success, or a 404 for the made-up id.
        let status = call(&app, &method, &path, Some(&admin.access_token)).await.status().as_u16();
        assert!(status < 300 || status == 404, "{method} {template} as admin: {status}");
    }
    assert!(admin_routes >= 6, "admin routes found: {admin_routes}");
    app.stop().await;
}
