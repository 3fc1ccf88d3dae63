//! Refuses a request whose path or query, once percent-decoded, holds a NUL byte or is not
//! UTF-8, before any handler or SQL sees it.
//!
//! Why: PostgreSQL's text type cannot hold NUL (`invalid byte sequence for encoding "UTF8":
//! 0x00`), so `DELETE /v1/api-keys/%00` would fail inside the database as a 500, while
//! SQLite would quietly look the value up. Refusing it here answers the same 400 on both
//! backends and on every route, naming the path parameter or query parameter at fault.
//! Invalid UTF-8 is refused alike: extractors would otherwise refuse it (paths) or replace it
//! with U+FFFD (queries) and look up a value the client never sent. JSON bodies get the same
//! rule in [`super::extract`].

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::error::{FieldError, Problem};

const MESSAGE: &str = "must not contain NUL bytes and must be UTF-8 once percent-decoded";

/// The 400 for a request whose path or query is refused, if it is. Called by the stack's
/// guard ([`super::middleware::guard`]), after routing, so that the matched route template
/// names the path parameter at fault.
pub fn refusal(request: &Request) -> Option<Response> {
    let errors = refused_parts(
        request.uri().path(),
        request.uri().query(),
        request.extensions().get::<MatchedPath>().map(MatchedPath::as_str),
    );
    if errors.is_empty() {
        return None;
    }
    let mut problem = Problem::new(
        StatusCode::BAD_REQUEST,
        "bad-request",
        "The path or the query holds a NUL byte or bytes that are not UTF-8.",
    );
    problem.errors = errors;
    Some(problem.into_response())
}

/// Every path or query parameter of the request that is refused; empty when all are fine.
/// `route` is the matched template (`/v1/api-keys/{id}`), when a route matched.
pub fn refused_parts(path: &str, query: Option<&str>, route: Option<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    // A URI cannot carry a raw NUL or non-ASCII byte: only a percent escape can produce one.
    if path.contains('%') {
        let template: Vec<&str> = route.map(|r| r.split('/').collect()).unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            if decodes_cleanly(segment) {
                continue;
            }
            let field = match template.get(i) {
                Some(t) if template.len() == segments.len() && t.starts_with('{') && t.ends_with('}') => {
                    t.trim_start_matches('{').trim_end_matches('}').trim_start_matches('*')
                }
                _ => "path",
            };
            if !errors.iter().any(|e: &FieldError| e.field == field) {
                errors.push(FieldError::new(field, MESSAGE));
            }
        }
    }
    if let Some(query) = query.filter(|q| q.contains('%')) {
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let field = match percent_decode_str(key).decode_utf8() {
                Ok(name) if !name.contains('\0') && decodes_cleanly(value) => continue,
                Ok(name) if !name.contains('\0') && !name.is_empty() => name.into_owned(),
                _ => "query".to_owned(),
            };
            if !errors.iter().any(|e| e.field == field) {
                errors.push(FieldError::new(field, MESSAGE));
            }
        }
    }
    errors
}

fn decodes_cleanly(escaped: &str) -> bool {
    percent_decode_str(escaped).decode_utf8().is_ok_and(|s| !s.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(path: &str, query: Option<&str>, route: Option<&str>) -> Vec<String> {
        refused_parts(path, query, route).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn clean_paths_and_queries_pass() {
        assert!(fields("/v1/api-keys/0b7c", Some("limit=5&cursor=a%20b"), Some("/v1/api-keys/{id}")).is_empty());
        assert!(fields("/v1/users/%C3%A9t%C3%A9", Some("q=%E2%82%AC"), None).is_empty());
        assert!(fields("/health", None, Some("/health")).is_empty());
    }

    #[test]
    fn nul_and_invalid_utf8_name_the_path_parameter() {
        assert_eq!(fields("/v1/api-keys/%00", None, Some("/v1/api-keys/{id}")), ["id"]);
        assert_eq!(fields("/v1/admin/users/a%00b/disable", None, Some("/v1/admin/users/{id}/disable")), ["id"]);
        assert_eq!(fields("/v1/api-keys/%ff", None, Some("/v1/api-keys/{id}")), ["id"]);
        assert_eq!(fields("/v1/api-keys/%C3", None, Some("/v1/api-keys/{id}")), ["id"], "a cut sequence");
        assert_eq!(fields("/files/a/%00", None, Some("/files/{*rest}")), ["path"], "no one-to-one segment");
        assert_eq!(fields("/nowhere/%00", None, None), ["path"]);
    }

    #[test]
    fn nul_and_invalid_utf8_name_the_query_parameter() {
        assert_eq!(fields("/v1/admin/audit", Some("actor=%00&limit=5"), None), ["actor"]);
        assert_eq!(fields("/v1/admin/users", Some("cursor=%00garbage&limit=%ff"), None), ["cursor", "limit"]);
        assert_eq!(fields("/v1/admin/users", Some("cursor=%00&cursor=%00"), None), ["cursor"], "each once");
        assert_eq!(fields("/x", Some("a%00b=1"), None), ["query"], "a bad name is not repeated back");
        assert_eq!(fields("/x", Some("%ff"), None), ["query"]);
    }

    #[test]
    fn path_and_query_are_reported_together() {
        assert_eq!(fields("/v1/api-keys/%00", Some("x=%00"), Some("/v1/api-keys/{id}")), ["id", "x"]);
    }
}
