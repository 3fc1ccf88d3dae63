//! The stack every request passes through, built in [`super::with_middleware`] from
//! tower-http's layers and `from_fn` middlewares of ours. Outermost first:
//!
//! 1. [`drop_hostile_request_id`], then tower-http's `SetRequestId` (a new UUID unless the
//!    client sent a valid `X-Request-Id`) and `PropagateRequestId` (the id goes back out).
//! 2. The security headers (tower-http's `SetResponseHeader`, [`crate::edge::headers`]).
//! 3. [`observe`]: the request metrics and one log line per request; every response of status
//!    400 and above becomes `application/problem+json` carrying the request id, whoever
//!    produced it (a handler, axum's rejections, a layer below).
//! 4. tower-http's `CatchPanic`: a panicking handler answers a 500 problem.
//! 5. CORS, when origins are configured (tower-http).
//! 6. [`guard`]: the request head's size, NUL bytes in path and query parameters
//!    ([`super::reject_nul`]: a 400 before anything can reach SQL), load shedding and the
//!    per-address rate limit.
//!    Also the request body limit ([`limit_body`]: 413, at once when `Content-Length` says so).
//! 7. tower-http's `Timeout` (504), then the route; protected routes add authentication
//!    ([`crate::identity::auth`]).
//!
//! The stack is applied with one `Router::layer`, so it runs after routing: [`observe`]
//! reads the matched route template from the request.
//!
//! Invariant: the request log names the route template and the path (credential-shaped
//! segments redacted), never the query string or a header value, so credentials sent in
//! either cannot reach a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::edge::{self, Caller};
use crate::error::{PROBLEM_JSON, Problem};
use crate::http::metrics::RequestMetrics;
use crate::state::AppState;
pub use crate::wire::REQUEST_ID;

/// Whether a client's `X-Request-Id` may be kept: 1 to 128 characters of `[A-Za-z0-9._:-]`,
/// so that a hostile id cannot inject anything into logs or headers.
fn valid_request_id(value: &HeaderValue) -> bool {
    (1..=128).contains(&value.len())
        && value.as_bytes().iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Removes an `X-Request-Id` that may not be kept, so that `SetRequestId` makes a new one.
pub fn drop_hostile_request_id<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if req.headers().get(REQUEST_ID).is_some_and(|v| !valid_request_id(v)) {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// New request ids: a random UUID, 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        Some(RequestId::new(new_request_id()))
    }
}

/// A new request id: a random UUID, 32 lowercase hex digits.
fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The id of a request that passed `SetRequestId`.
pub fn request_id_of(headers: &HeaderMap) -> &str {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-")
}

/// Who a request was authenticated as, put on the response by the authentication layer for
/// the request's log line.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub String);

/// Metrics, the log line and problem+json for every request (step 3 of the stack).
pub async fn observe(State(metrics): State<Arc<RequestMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&metrics);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let request_id = request_id_of(req.headers()).to_owned();
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let (req, body_read) = track_body(req);

    let (response, queries) = crate::request::scope(request_id.clone(), next.run(req)).await;

    let mut response =
        if is_error(&response) { Box::pin(finalize_problem(response, &request_id)).await } else { response };
    // A body the handler did not read to its end leaves the connection unusable for another
    // request (hyper closes it after this response): say so, so that the client does not
    // send its next request on it.
    if http1 && body_read.is_some_and(|read| !read.load(Ordering::Acquire)) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let latency = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_ref().map(MatchedPath::as_str);
    metrics.record(&method, route, status, latency, queries);
    let user_id = response.extensions().get::<AuthenticatedUser>().map(|u| u.0.as_str());
    // A credential a client put in the path (`DELETE /v1/api-keys/atom_sk_…`) is not logged.
    let path = crate::telemetry::redact::redact_path(&path);
    tracing::info!(
        target: "atom::http",
        message = "request",
        method = method.as_str(),
        route = route.unwrap_or("-"),
        // Never the query. At most 256 bytes, cut at a character's edge.
        path = &path[..path.floor_char_boundary(256)],
        status,
        latency_ms = latency.as_micros() as u64 as f64 / 1000.0,
        db_queries = queries,
        request_id = request_id.as_str(),
        user_id,
    );
    response
}

/// Wraps a request's body, when it has one, so that its end is noticed.
fn track_body(req: Request) -> (Request, Option<Arc<AtomicBool>>) {
    if req.body().is_end_stream() {
        return (req, None);
    }
    let read = Arc::new(AtomicBool::new(false));
    let tracked = Arc::clone(&read);
    (req.map(|inner| Body::new(TrackedBody { inner, read: tracked })), Some(read))
}

/// A request body that notes when it has been read to its end.
struct TrackedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(poll, Poll::Ready(None)) {
            self.read.store(true, Ordering::Release);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts one request in flight until dropped (also when the request's future is dropped
/// mid-way: a client that went away).
struct InFlight<'a>(&'a RequestMetrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a RequestMetrics) -> Self {
        metrics.enter();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Rewrites an error response into problem+json with the request id: a [`Problem`] in the
/// response's extensions (from `ApiError`) is used as it is; axum's own rejections, 404s,
/// 405s and the 413s and 504s of tower-http's layers have short plain-text bodies, which
/// become the detail.
async fn finalize_problem(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let problem = if let Some(problem) = parts.extensions.remove::<Problem>() {
        problem
    } else if !is_problem_json(&parts.headers) {
        let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
        Problem::for_status(status, &String::from_utf8_lossy(&text))
    } else {
        return Response::from_parts(parts, body);
    };
    let problem = Problem { request_id: Some(request_id.to_owned()), ..problem };
    let fresh = problem.into_body_response();
    parts.status = fresh.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, fresh.into_body())
}

fn is_error(response: &Response) -> bool {
    (response.status().as_u16() >= 400 && response.extensions().get::<Upstream>().is_none())
        || response.extensions().get::<Problem>().is_some()
}

/// Marks a response as a provider's answer passed through by the proxy: its error statuses
/// and bodies are the provider's, and are not rewritten into problem+json.
#[derive(Debug, Clone, Copy)]
pub struct Upstream;

/// The request body limit, as tower-http's `RequestBodyLimit` applies it (a too-large
/// `Content-Length` answered at once, before any byte is read; the body cut at the limit
/// otherwise), with one exception: the proxy's bodies stream through to the provider, so
/// its route has `connectors.proxy_max_body_bytes`, which the proxy counts itself.
fn limit_body(state: &AppState, req: Request) -> Result<Request, StatusCode> {
    let proxied = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| crate::connectors::agent_routes::is_proxy_route(p.as_str()));
    let limit =
        if proxied { state.config.connectors.proxy_max_body_bytes } else { state.config.http.body_limit_bytes as u64 };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    if proxied {
        return Ok(req);
    }
    let limit = state.config.http.body_limit_bytes;
    Ok(req.map(|body| Body::new(http_body_util::Limited::new(body, limit))))
}

fn is_problem_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// The response for a handler that panicked (tower-http's `CatchPanic`; the panic hook in
/// [`crate::telemetry`] has logged the message and location).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.").into_response()
}

/// The request head's size, NUL bytes in path and query, load shedding and the per-address
/// rate limit (step 6 of the stack). Inside CORS, so that a browser can read the 429s and 503s it produces.
///
/// `/v1/auth/*` and requests without credentials are limited per client address here;
/// requests with credentials per principal, after authentication.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(refused) = head_too_large(&req, state.config.http.max_header_bytes) {
        return refused;
    }
    let req = match limit_body(&state, req) {
        Ok(req) => req,
        Err(refused) => return refused.into_response(),
    };
    if let Some(refused) = super::reject_nul::refusal(&req) {
        return refused;
    }
    let edge = &state.edge;
    // Health, readiness and metrics are never shed or limited.
    if edge::exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(_in_flight) = edge.enter() else {
        return edge::overloaded();
    };
    let Some(policy) = edge::address_policy(edge, &req) else {
        return next.run(req).await;
    };
    let Some(ip) = edge.client_ip(req.headers(), req.extensions()) else {
        return next.run(req).await;
    };
    let caller = Caller { ip: Some(ip), request_id: Some(request_id_of(req.headers()).to_owned()) };
    // Boxed, like every large future on a rare or slow path: a middleware's future is moved
    // into a box of its own by `from_fn` on every request, and its size is that of its
    // largest await (here the shared limiter's Redis call and a ban's audit write).
    match Box::pin(edge::enforce(edge, &state.db, policy, edge::address_key(ip), caller)).await {
        Ok(allowance) => {
            let mut response = next.run(req).await;
            if let Some(allowance) = allowance {
                allowance.stamp(&mut response);
            }
            response
        }
        Err(denied) => denied,
    }
}

/// 414 for a URI over `max` bytes, 431 for a head over `max` bytes in all: hyper's read
/// buffer is twice `max` ([`super::server`]), so that these get a problem; hyper refuses
/// larger heads itself.
fn head_too_large(req: &Request, max: usize) -> Option<Response> {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > max {
        return Some(Problem::for_status(StatusCode::URI_TOO_LONG, "The request URI is too long.").into_response());
    }
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    (uri + headers > max).then(|| {
        Problem::for_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "The request's headers are too large.")
            .into_response()
    })
}
