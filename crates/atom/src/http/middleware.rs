//! The stack every request passes through, outermost first:
//!
//! 1. [`Stack`]: request id (an incoming valid `X-Request-Id` is kept), the in-flight gauge,
//!    the request counter and latency histogram by method, route template and status, the
//!    number of database queries the request issued (`http_request_db_queries`, where an N+1
//!    shows), one log line per request; then, on the way out, every response of status 400
//!    and above becomes `application/problem+json` carrying the request id (whoever produced
//!    it), and the security headers are set.
//! 2. CORS, when origins are configured (`tower_http`).
//! 3. [`Guard`]: load shedding, the per-address rate limit, panic catching and the request
//!    timeout, around the router.
//! 4. Per route ([`RecordRoute`]): the matched route template goes into the response's
//!    extensions for the metrics and the log line of step 1.
//!
//! Why hand-written services and not `axum::middleware::from_fn`: each `from_fn` layer boxes
//! a future and a clone of everything inside it on every request, and `Router::layer` puts
//! the whole stack into every route, cloned per request. Here the stack wraps the router
//! once, with one boxed future in [`Stack`] and one in [`Guard`]; per route there is only
//! [`RecordRoute`], whose future is not boxed. `bench/http.sh` measures the difference.
//!
//! Invariant: the request log names the route template and the path, never the query string
//! or a header value, so credentials sent in either cannot reach a log line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use metrics::{Counter, Gauge, Histogram};
use tower::util::{BoxCloneSyncService, Either};
use tower::{Layer, Service, ServiceExt};

use crate::app::AppState;
use crate::edge::{self, Caller};
use crate::error::{PROBLEM_JSON, Problem};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, in request extensions for handlers and in the `X-Request-Id` header.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    /// Keeps a client's id when it is 1 to 128 characters of `[A-Za-z0-9._:-]`; otherwise
    /// makes a new one, so a hostile id cannot inject anything into logs or headers.
    fn from_request(req: &Request) -> Self {
        let incoming = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        });
        Self(match incoming {
            Some(id) => id.into(),
            None => uuid::Uuid::new_v4().simple().encode_lower(&mut uuid::Uuid::encode_buffer()).into(),
        })
    }
}

/// The authenticated user's id, which authentication puts into the response extensions so
/// that the request log line can name the user.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser(pub String);

/// The outermost service: observes every request and finishes every response.
#[derive(Debug, Clone)]
pub struct Stack {
    shared: Arc<StackShared>,
    inner: Inner,
}

/// With CORS, the `tower_http` service, boxed: its configuration would otherwise make every
/// request's future larger, CORS or not.
type Inner = Either<BoxCloneSyncService<Request, Response, Infallible>, Guard>;

#[derive(Debug)]
struct StackShared {
    hsts: bool,
    metrics: RequestMetrics,
}

impl Stack {
    /// Wraps `router`, which carries [`RecordRoute`] on its routes (see `http::with_middleware`).
    pub fn new(router: Router, state: &AppState) -> Self {
        let config = &state.config;
        let guard =
            Guard { state: state.clone(), router, timeout: Duration::from_secs(config.http.request_timeout_secs) };
        let inner = match edge::headers::cors(&config.http.cors_allowed_origins) {
            Some(cors) => Either::Left(BoxCloneSyncService::new(cors.layer(guard))),
            None => Either::Right(guard),
        };
        let hsts = config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
        Self { shared: Arc::new(StackShared { hsts, metrics: RequestMetrics::new() }), inner }
    }
}

impl Service<Request> for Stack {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(Arc::clone(&self.shared).handle(self.inner.clone(), req))
    }
}

impl StackShared {
    async fn handle(self: Arc<Self>, inner: Inner, mut req: Request) -> Result<Response, Infallible> {
        let started = Instant::now();
        let request_id = RequestId::from_request(&req);
        req.extensions_mut().insert(request_id.clone());
        let method = req.method().clone();
        // The path is copied for the log line only when that line will be written.
        let path = tracing::enabled!(target: "atom::http", tracing::Level::INFO)
            .then(|| req.uri().path().chars().take(256).collect::<String>());
        let in_flight = self.metrics.enter();

        let (outcome, db_queries) =
            crate::storage::monitor::count_queries(Arc::clone(&request_id.0), inner.oneshot(req)).await;
        let Ok(response) = outcome;

        let latency = started.elapsed();
        drop(in_flight);
        let mut response = if is_error(&response) {
            // Boxed: reading a body is a large future that successful responses need not carry.
            Box::pin(finalize_problem(response, &request_id)).await
        } else {
            response
        };
        let headers = response.headers_mut();
        edge::headers::stamp(headers, self.hsts);
        if let Ok(value) = HeaderValue::from_str(&request_id.0) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        let status = response.status().as_u16();
        let route = response.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        self.metrics.record(&method, route, status, latency, db_queries);
        if let Some(path) = path {
            let user_id = response.extensions().get::<AuthenticatedUser>().map(|u| u.0.as_str());
            tracing::info!(
                target: "atom::http",
                method = %method,
                route = route.unwrap_or("-"),
                path = %path,
                status,
                latency_ms = latency.as_secs_f64() * 1000.0,
                db_queries,
                request_id = %request_id.0,
                user_id,
                "request"
            );
        }
        Ok(response)
    }
}

/// Rewrites an error response into problem+json with the request id: a [`Problem`] in the
/// response's extensions (from `ApiError`) is used as it is; axum's own rejections, 404s and
/// 405s have short plain-text bodies, which become the detail.
async fn finalize_problem(response: Response, request_id: &RequestId) -> Response {
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
    let problem = Problem { request_id: Some(request_id.0.to_string()), ..problem };
    let fresh = problem.into_body_response();
    parts.status = fresh.status();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    Response::from_parts(parts, fresh.into_body())
}

fn is_error(response: &Response) -> bool {
    response.status().as_u16() >= 400 || response.extensions().get::<Problem>().is_some()
}

fn is_problem_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// Load shedding, the per-address rate limit, panic catching and the request timeout.
/// Inside CORS, so that a browser can read the 429s and 503s it produces.
#[derive(Debug, Clone)]
pub struct Guard {
    state: AppState,
    router: Router,
    timeout: Duration,
}

impl Service<Request> for Guard {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(self.clone().handle(req))
    }
}

impl Guard {
    async fn handle(self, req: Request) -> Result<Response, Infallible> {
        let state = &self.state;
        // Health, readiness and metrics are never shed or limited.
        let _in_flight = if edge::exempt(req.uri().path()) {
            None
        } else {
            match state.edge.enter() {
                Some(guard) => Some(guard),
                None => return Ok(edge::overloaded()),
            }
        };
        let allowance = match edge::address_policy(&state.edge, &req) {
            Some(policy) => {
                let caller = Caller {
                    ip: state.edge.client_ip(&req),
                    request_id: req.extensions().get::<RequestId>().map(|id| Arc::clone(&id.0)),
                };
                match Box::pin(edge::limit_by_address(state, policy, caller)).await {
                    Ok(allowance) => allowance,
                    Err(denied) => return Ok(denied),
                }
            }
            None => None,
        };
        let call = AssertUnwindSafe(self.router.clone().oneshot(req)).catch_unwind();
        let mut response = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(never))) => match never {},
            // The panic hook (telemetry) has logged the message and location.
            Ok(Err(_panic)) => panic_response(),
            Err(_elapsed) => Problem::for_status(StatusCode::GATEWAY_TIMEOUT, "").into_response(),
        };
        if let Some(allowance) = allowance {
            allowance.stamp(&mut response);
        }
        Ok(response)
    }
}

/// The response for a handler that panicked.
pub fn panic_response() -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.").into_response()
}

/// Per route: puts the matched route template into the response's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordRouteLayer;

impl<S> Layer<S> for RecordRouteLayer {
    type Service = RecordRoute<S>;

    fn layer(&self, inner: S) -> RecordRoute<S> {
        RecordRoute(inner)
    }
}

#[derive(Debug, Clone)]
pub struct RecordRoute<S>(S);

impl<S: Service<Request, Response = Response>> Service<Request> for RecordRoute<S> {
    type Response = Response;
    type Error = S::Error;
    type Future = RecordRouteFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        RecordRouteFuture { inner: self.0.call(req), route }
    }
}

pin_project_lite::pin_project! {
    pub struct RecordRouteFuture<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F: Future<Output = Result<Response, E>>, E> Future for RecordRouteFuture<F> {
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(route) = this.route.take() {
            response.extensions_mut().insert(route);
        }
        Poll::Ready(Ok(response))
    }
}

/// The request metrics, with their handles looked up once per method, route and status
/// rather than in the registry on every request.
#[derive(Debug)]
struct RequestMetrics {
    in_flight: Gauge,
    series: RwLock<HashMap<(&'static str, u16), RouteSeries>>,
}

/// The series of one method and status, by route template.
type RouteSeries = HashMap<Box<str>, Series>;

#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
    db_queries: Histogram,
}

/// Unmatched paths share one label so that scanners cannot blow up the series count.
const UNMATCHED: &str = "<unmatched>";

impl RequestMetrics {
    fn new() -> Self {
        Self { in_flight: metrics::gauge!("http_requests_in_flight"), series: RwLock::default() }
    }

    /// Counts one request in flight until the returned guard drops (also when the request
    /// future is dropped mid-way).
    fn enter(&self) -> InFlight<'_> {
        self.in_flight.increment(1.0);
        InFlight(&self.in_flight)
    }

    fn record(&self, method: &Method, route: Option<&str>, status: u16, latency: Duration, db_queries: u32) {
        let method = method_label(method);
        let route = route.unwrap_or(UNMATCHED);
        let record = |s: &Series| {
            s.requests.increment(1);
            s.duration.record(latency.as_secs_f64());
            s.db_queries.record(f64::from(db_queries));
        };
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = series.get(&(method, status)).and_then(|routes| routes.get(route)) {
            record(s);
            return;
        }
        drop(series);
        let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
        let s = Series {
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
            db_queries: metrics::histogram!("http_request_db_queries", &labels[..2]),
        };
        record(&s);
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series.entry((method, status)).or_default().entry(route.into()).or_insert(s);
    }
}

/// Methods outside the standard ones share one label, like unmatched paths.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
