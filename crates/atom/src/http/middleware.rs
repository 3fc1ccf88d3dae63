//! The middleware every request passes through, outermost first:
//!
//! 1. [`observe`]: request id (an incoming valid `X-Request-Id` is kept), the in-flight
//!    gauge, the request counter and latency histogram by method, route template and status,
//!    the number of database queries the request issued (`http_request_db_queries`, where
//!    an N+1 shows), and one log line per request.
//! 2. [`finalize_problems`]: every response of status 400 and above leaves as
//!    `application/problem+json` carrying the request id, whoever produced it.
//! 3. Panic catching, the request timeout and the body limit (assembled in `http::mod`).
//!
//! Invariant: the request log names the route template and the path, never the query string
//! or a header value, so credentials sent in either cannot reach a log line.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{PROBLEM_JSON, Problem};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, in request extensions for handlers and in the `X-Request-Id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// Keeps a client's id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`; otherwise
    /// makes a new one, so a hostile id cannot inject anything into logs or headers.
    fn from_request(req: &Request) -> Self {
        let incoming = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        });
        Self(incoming.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned))
    }
}

/// The authenticated user's id, which authentication puts into the response extensions so
/// that the request log line can name the user.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub String);

/// Decrements the in-flight gauge even when the request future is dropped mid-way.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

pub async fn observe(mut req: Request, next: Next) -> Response {
    let request_id = RequestId::from_request(&req);
    req.extensions_mut().insert(request_id.clone());
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let path: String = req.uri().path().chars().take(256).collect();
    let _in_flight = InFlight::start();
    let started = Instant::now();

    let (mut response, db_queries) = crate::storage::monitor::count_queries(&request_id.0, next.run(req)).await;

    let latency = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&request_id.0) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let user_id = response.extensions().get::<AuthenticatedUser>().map(|u| u.0.clone());
    // Unmatched paths share one label so that scanners cannot blow up the series count.
    let route_label = route.clone().unwrap_or_else(|| "<unmatched>".to_owned());
    let labels = [("method", method.to_string()), ("route", route_label), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(latency.as_secs_f64());
    let [method_label, route_label, _] = labels;
    metrics::histogram!("http_request_db_queries", &[method_label, route_label]).record(f64::from(db_queries));
    tracing::info!(
        target: "atom::http",
        method = %method,
        route = route.as_deref().unwrap_or("-"),
        path = %path,
        status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        db_queries,
        request_id = %request_id.0,
        user_id = user_id.as_deref(),
        "request"
    );
    response
}

/// Rewrites error responses into problem+json with the request id.
pub async fn finalize_problems(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|id| id.0.clone());
    let response = next.run(req).await;
    let status = response.status();
    let (mut parts, body) = response.into_parts();

    let problem = if let Some(problem) = parts.extensions.remove::<Problem>() {
        problem
    } else if status.as_u16() >= 400 && !is_problem_json(&parts.headers) {
        // axum's own rejections, 404/405, timeouts: their bodies are short plain text.
        let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
        Problem::for_status(status, &String::from_utf8_lossy(&text))
    } else {
        return Response::from_parts(parts, body);
    };
    let problem = Problem { request_id, ..problem };
    let fresh = problem.into_body_response();
    parts.status = fresh.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, fresh.into_body())
}

fn is_problem_json(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// The response for a handler that panicked; the panic hook has logged the location.
pub fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let response: Response<Body> =
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.").into_response();
    response
}
