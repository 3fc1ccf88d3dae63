//! The OpenAPI document is generated from code; the committed copy must match it.
//! Run with `UPDATE_OPENAPI=1` to rewrite `docs/openapi.json` after changing the API.

use std::collections::BTreeSet;
use std::path::Path;

use crate::auth_authorization::{SERVED_UNDOCUMENTED, operations, spawn_with_served_routes};

#[test]
fn committed_openapi_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = atom::http::openapi::document();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        return;
    }
    // Rewriting still fails this run: a run with UPDATE_OPENAPI set cannot pass on a stale copy.
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        panic!("docs/openapi.json was out of date and has been rewritten: review and commit it");
    }
    panic!("docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test it openapi` and commit it");
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
    let (app, served) = spawn_with_served_routes().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert_eq!(text, atom::http::openapi::document(), "the served document is the generated one");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert!(doc["components"]["schemas"]["Problem"].is_object());

    // Every route the router serves is documented, and every documented operation is served.
    let mut documented: BTreeSet<(String, String)> =
        operations(&app).await.into_iter().map(|(method, template, _)| (method, template)).collect();
    documented.extend(SERVED_UNDOCUMENTED.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())));
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in the OpenAPI document: {undocumented:?}");
    assert!(unserved.is_empty(), "documented but not served: {unserved:?}");
    app.stop().await;
}
