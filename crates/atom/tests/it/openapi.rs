//! The OpenAPI document is generated from code; the committed copy must match it.
//! Run with `UPDATE_OPENAPI=1` to rewrite `docs/openapi.json` after changing the API.

use std::path::Path;

use crate::common::TestApp;

#[test]
fn committed_openapi_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = atom::http::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test it openapi` and commit it"
    );
}

/// Each parameter says where the route reads it: a path parameter names a `{segment}` of its
/// path, every other one is in the query (clients and the hostile-input tests rely on it).
#[test]
fn parameters_are_placed_where_the_routes_read_them() {
    let doc: serde_json::Value = serde_json::from_str(&atom::http::openapi::document()).expect("json");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().expect("name");
                let expected = if path.contains(&format!("{{{name}}}")) { "path" } else { "query" };
                assert_eq!(param["in"], expected, "{method} {path} parameter {name}");
            }
        }
    }
}

#[tokio::test]
async fn served_document_is_openapi_3_1_with_every_route() {
    let app = TestApp::spawn().await;
    let doc: serde_json::Value = app.get("/openapi.json").await.json().await.expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    for path in ["/health", "/ready", "/status", "/metrics"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} documented");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.stop().await;
}
