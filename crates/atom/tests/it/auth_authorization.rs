//! Authorization: every route needs authentication except an explicit public list, checked by
//! walking the served OpenAPI document, which must list exactly the routes the router really
//! serves, so a new route without protection (or without an annotation) fails here; admin
//! routes refuse users with 403.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::common::{TestApp, TestDb, assert_problem, test_config};
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
    // The provider's redirect back to us: a browser carries no bearer token; the single-use
    // state it returns is the credential.
    ("get", "/v1/connections/callback"),
    // Providers' webhooks carry no bearer token; the signature over the body is the
    // credential, checked before anything is stored.
    ("post", "/v1/webhooks/{provider}"),
    ("post", "/v1/webhooks/{provider}/{connection_id}"),
];

/// Operations for admins only.
fn is_admin_route(path: &str, operation: &Value) -> bool {
    let tagged = operation["tags"].as_array().is_some_and(|tags| tags.iter().any(|t| t == "admin"));
    tagged || path.starts_with("/v1/admin/") || path == "/status"
}

/// Every `(method, path template, operation)` of the served document.
pub(crate) async fn operations(app: &TestApp) -> Vec<(String, String, Value)> {
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

/// Served but rightly absent from the document: the document itself, and Socket.io (one
/// service for every method, authenticated in its connect packet).
pub(crate) const SERVED_UNDOCUMENTED: &[(&str, &str)] = &[("get", "/openapi.json"), ("*", atom::realtime::PATH)];

/// The path templates of a router, read from its `Debug` (axum has no listing API; its
/// `Debug` names each path of its `path_router` as `RouteId(n): "/template"`, then those of
/// the `fallback_router`, which are axum's own).
fn path_templates(router_debug: &str) -> BTreeSet<String> {
    let start = router_debug.find("path_router:").expect("the router's Debug shows its path_router");
    let end = router_debug.find("fallback_router:").expect("the router's Debug shows its fallback_router");
    let paths = &router_debug[start..end];
    let mut templates = BTreeSet::new();
    for (_, rest) in paths.match_indices("RouteId(").map(|(i, _)| paths.split_at(i)) {
        let Some((_, after)) = rest.split_once("): \"") else { continue };
        if let Some((template, _)) = after.split_once('"') {
            // OpenAPI has no catch-all parameter: the document names axum's `{*path}` `{path}`.
            templates.insert(template.replace("{*", "{"));
        }
    }
    templates
}

/// The application spawned, and every `(method, template)` its router really serves: the
/// templates from the router, the methods each answers from the `Allow` header of the 405 it
/// gives an admin calling a method it does not serve. A route is found whether or not it is
/// annotated.
pub(crate) async fn spawn_with_served_routes() -> (TestApp, BTreeSet<(String, String)>) {
    let db = TestDb::new().await;
    let listed = atom::Application::build(test_config(&db, &[])).await.expect("application builds");
    let templates = path_templates(&format!("{:?}", listed.routes()));
    drop(listed);
    assert!(templates.contains("/health") && templates.contains("/v1/me"), "templates read: {templates:?}");
    // Every route is called without a token from one address: more calls than the anonymous
    // burst allows, which is not what these tests are about.
    let app = TestApp::spawn_on(db, &[("RATE_LIMIT_ANONYMOUS_BURST", "10000")], axum::Router::new()).await;
    let admin = app.user("admin").await;
    let mut served = BTreeSet::new();
    for template in templates {
        if template == atom::realtime::PATH {
            served.insert(("*".to_owned(), template));
            continue;
        }
        let unserved = reqwest::Method::from_bytes(b"PURGE").expect("method");
        // Signed in: behind authentication the 405 comes after the 401.
        let response = app
            .client
            .request(unserved, app.url(&concrete(&template)))
            .bearer_auth(&admin.access_token)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 405, "{template} answers an unserved method with 405");
        let allow = response.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let methods: Vec<&str> = allow.split(',').map(str::trim).filter(|m| !m.is_empty() && *m != "HEAD").collect();
        assert!(!methods.is_empty(), "{template} names its methods in Allow: {allow:?}");
        for method in methods {
            served.insert((method.to_ascii_lowercase(), template.clone()));
        }
    }
    (app, served)
}

#[tokio::test]
async fn every_served_route_is_protected_unless_it_is_on_the_public_list() {
    let (app, served) = spawn_with_served_routes().await;
    let documented: HashMap<(String, String), Value> = operations(&app)
        .await
        .into_iter()
        .map(|(method, template, operation)| ((method, template), operation))
        .collect();
    for (method, template) in served {
        let key = (method.as_str(), template.as_str());
        if key == ("*", atom::realtime::PATH) {
            // Socket.io authenticates in its connect packet: the realtime tests.
            continue;
        }
        let operation = documented.get(&(method.clone(), template.clone()));
        assert!(
            operation.is_some() || SERVED_UNDOCUMENTED.contains(&key),
            "{method} {template} is served without an OpenAPI annotation"
        );
        let secured = operation.is_some_and(|op| op["security"].as_array().is_some_and(|s| !s.is_empty()));
        if secured {
            assert!(
                !PUBLIC.contains(&key),
                "{method} {template} is on the public list but documents a security requirement"
            );
            let security = operation.map(|op| op["security"].to_string()).unwrap_or_default();
            assert!(security.contains("bearer"), "{method} {template} names the scheme");
            let response = call(&app, &method, &concrete(&template), None).await;
            assert_eq!(response.status(), 401, "{method} {template} without a token");
            assert_unauthorized(response, None).await;
        } else {
            assert!(
                PUBLIC.contains(&key),
                "{method} {template} has no security requirement and is not on the public list"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_public_routes_answer_without_a_token() {
    let app = TestApp::spawn_with(&[("AUTH_REGISTRATION", "open")], axum::Router::new()).await;
    let user = app.user("user").await;
    let other_session = app.login(&user.email, crate::common::PASSWORD).await["refresh_token"].clone();
    let new_email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    // Each public operation with a well-formed request and no credential, and the status it
    // promises for one: a refusal or an error of any kind fails.
    let requests: [(&str, &str, Option<Value>, u16); 12] = [
        ("get", "/health", None, 200),
        ("get", "/ready", None, 200),
        ("get", "/metrics", None, 200),
        ("get", "/openapi.json", None, 200),
        ("get", "/.well-known/jwks.json", None, 200),
        ("post", "/v1/auth/register", Some(json!({"email": new_email, "password": crate::common::PASSWORD})), 201),
        ("post", "/v1/auth/login", Some(json!({"email": user.email, "password": crate::common::PASSWORD})), 200),
        ("post", "/v1/auth/refresh", Some(json!({"refresh_token": user.refresh_token})), 200),
        ("post", "/v1/auth/logout", Some(json!({"refresh_token": other_session})), 204),
        // A state never issued: refused as such, not as unauthenticated.
        ("get", "/v1/connections/callback?code=c&state=never-issued", None, 400),
        // No signing secret is set for Slack here: refused as such, not as unauthenticated.
        ("post", "/v1/webhooks/slack", Some(json!({"type": "event_callback"})), 409),
        ("post", "/v1/webhooks/slack/00000000-0000-0000-0000-000000000000", Some(json!({})), 409),
    ];
    let template = |path: &str| match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "v1", "webhooks", _] => "/v1/webhooks/{provider}".to_owned(),
        ["", "v1", "webhooks", _, _] => "/v1/webhooks/{provider}/{connection_id}".to_owned(),
        _ => path.to_owned(),
    };
    let sent: BTreeSet<(&str, String)> =
        requests.iter().map(|(m, p, _, _)| (*m, template(p.split('?').next().unwrap_or(p)))).collect();
    let public: BTreeSet<(&str, String)> = PUBLIC.iter().map(|(m, p)| (*m, (*p).to_owned())).collect();
    assert_eq!(sent, public, "every public operation is called");
    for (method, path, body, expected) in requests {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
        let mut request = app.client.request(method.clone(), app.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sent");
        assert!(response.headers().get("www-authenticate").is_none(), "{method} {path}");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{method} {path} without a token: {text}");
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
