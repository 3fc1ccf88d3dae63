//! The stack every request passes through, outermost first:
//!
//! 1. [`Stack`]: request id (an incoming valid `X-Request-Id` is kept), the request metrics
//!    ([`super::metrics`]), one log line per request; then, on the way out, every response of
//!    status 400 and above becomes `application/problem+json` carrying the request id
//!    (whoever produced it), and the security headers are set.
//! 2. CORS, when origins are configured (`tower_http`).
//! 3. [`Guard`]: load shedding, the per-address rate limit, panic catching and the request
//!    timeout, around the router (inside axum's body-limit marker).
//! 4. Per route ([`RecordRoute`]): the matched route template goes into the request's scope
//!    ([`crate::request`]) for the metrics and the log line of step 1.
//!
//! Why hand-written services and not `axum::middleware::from_fn`: each `from_fn` layer boxes
//! a future and a clone of everything inside it on every request, and `Router::layer` puts
//! the whole stack into every route, cloned per request. Here the stack wraps the router
//! once and its futures are written out ([`StackFuture`], [`GuardFuture`], [`RouteFuture`]),
//! held by value by hyper: no box per request, except on the CORS path and the rate-limited
//! path. Not `async fn`s: an `async fn` keeps a slot for every local it moves into an awaited
//! future, which made the request's future 2 984 bytes, boxed, instead of 736 held by value.
//! Per route there is only [`RecordRoute`], which adds no future of its own. Allocations per
//! request are the measure that counts here (`docs/benchmarks.md`): 21 for `/health`.
//!
//! Invariant: the request log names the route template and the path, never the query string
//! or a header value, so credentials sent in either cannot reach a log line.

use std::convert::Infallible;
use std::future::Future;
use std::future::Ready;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::future::CatchUnwind;
use futures_util::future::Either;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Layer, Service, ServiceExt};

use crate::app::AppState;
use crate::edge::{self, Caller, Verdict};
use crate::error::{PROBLEM_JSON, Problem};
use crate::http::metrics::RequestMetrics;
use crate::http::watchdog::Busy;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The request's id: a client's `X-Request-Id` when it is 1 to 128 characters of
/// `[A-Za-z0-9._:-]`, otherwise a new one, so that a hostile id cannot inject anything into
/// logs or headers. It lives in the request's scope ([`crate::request::request_id`]) and goes
/// back out in the response's `X-Request-Id`.
fn request_id(req: &Request) -> HeaderValue {
    let valid = |v: &&HeaderValue| {
        (1..=128).contains(&v.len())
            && v.as_bytes().iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    match req.headers().get(REQUEST_ID).filter(valid) {
        // A clone of the request's own bytes: no copy.
        Some(incoming) => incoming.clone(),
        None => new_request_id(),
    }
}

/// A new request id: a random UUID, 32 lowercase hex digits.
pub fn new_request_id() -> HeaderValue {
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buffer);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The router inside axum's body-limit marker, for requests that carry a body.
type LimitedRouter = <DefaultBodyLimit as Layer<Router>>::Service;

/// The future of a call to the router.
type RouterFuture = <Router as Service<Request>>::Future;

/// The outermost service: observes every request and finishes every response. A clone is
/// one reference count; everything else sits behind it.
#[derive(Debug, Clone)]
pub struct Stack(Arc<StackShared>);

#[derive(Debug)]
struct StackShared {
    headers: edge::headers::SecurityHeaders,
    metrics: Arc<RequestMetrics>,
    guard: Guard,
    /// CORS around `guard`, when origins are configured: the `tower_http` service, boxed,
    /// because its configuration would otherwise make every request's future larger.
    cors: Option<BoxCloneSyncService<Request, Response, Infallible>>,
}

impl Stack {
    /// Wraps `router`, which carries [`RecordRoute`] on its routes (see `http::with_middleware`).
    pub fn new(router: Router, state: &AppState) -> Self {
        let config = &state.config;
        let guard = Guard {
            state: state.clone(),
            limited: DefaultBodyLimit::max(config.http.body_limit_bytes).layer(router.clone()),
            router,
            timeout: Duration::from_secs(config.http.request_timeout_secs),
        };
        let cors = edge::headers::cors(&config.http.cors_allowed_origins)
            .map(|cors| BoxCloneSyncService::new(cors.layer(guard.clone())));
        let hsts = config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
        Self(Arc::new(StackShared {
            headers: edge::headers::SecurityHeaders::new(hsts),
            metrics: Arc::clone(&state.http_metrics),
            guard,
            cors,
        }))
    }

    /// The security headers every response of the stack carries.
    pub fn security_headers(&self) -> &edge::headers::SecurityHeaders {
        &self.0.headers
    }

    /// The future that answers `req`, which came through no socket.
    pub fn serve(&self, req: Request) -> StackFuture {
        self.serve_on(req, None, None)
    }

    /// [`Stack::serve`] for a request of a watched connection from `peer`: `busy` holds the
    /// connection's watch off until the response is ready, and learns of an upgrade. The peer
    /// goes into the request's scope ([`crate::request::peer`]), not into its extensions:
    /// most requests never ask for it, and an extension costs a hash-map insert each.
    pub fn serve_on(&self, req: Request, busy: Option<Busy>, peer: Option<SocketAddr>) -> StackFuture {
        let started = Instant::now();
        let request_id = request_id(&req);
        let method = req.method().clone();
        // Kept for the log line when info lines are written at all (a check of the maximum
        // level, not of the filter's directives): a reference to the request's bytes, not a
        // copy.
        let uri = tracing::level_enabled!(tracing::Level::INFO).then(|| req.uri().clone());
        let finish = Finish { stack: InFlight::enter(Arc::clone(&self.0)), started, method, uri, busy };
        let inner = match &self.0.cors {
            Some(cors) => Either::Left(cors.clone().oneshot(req)),
            None => Either::Right(self.0.guard.handle(req, peer)),
        };
        StackFuture { inner: crate::request::scope(request_id, peer, inner), finish: Some(finish) }
    }
}

impl Service<Request> for Stack {
    type Response = Response;
    type Error = Infallible;
    type Future = StackFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.serve(req)
    }
}

/// The service inside [`Stack`]: CORS around the guard, or the guard alone.
type Inner = Either<Oneshot<BoxCloneSyncService<Request, Response, Infallible>, Request>, GuardFuture>;

pin_project_lite::pin_project! {
    /// The future of one request. Written out, not an `async fn` or a boxed closure chain:
    /// it is not boxed (hyper holds it by value), and it holds only the inner future and what
    /// the finishing step needs, where an `async fn` kept a slot for every local it moved
    /// into an awaited future (2 984 bytes, boxed, against 736 bytes for this one).
    pub struct StackFuture {
        #[pin]
        inner: crate::request::Scoped<Inner>,
        finish: Option<Finish>,
    }
}

/// What the finishing step of a request needs besides the response.
struct Finish {
    stack: InFlight,
    started: Instant,
    method: Method,
    /// The request's URI, for the log line; `None` when info lines are off.
    uri: Option<Uri>,
    /// The connection's watch, held off until the response is ready.
    busy: Option<Busy>,
}

impl Future for StackFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (outcome, record) = ready!(this.inner.poll(cx));
        let Ok(response) = outcome;
        let Some(finish) = this.finish.take() else {
            // Polled again after it answered: a caller's bug, answered without a panic.
            return Poll::Ready(Ok(panic_response()));
        };
        Poll::Ready(Ok(finish.run(response, record)))
    }
}

impl Finish {
    /// Problem+json for errors, the security headers and the request id, then the metrics and
    /// the log line.
    fn run(self, response: Response, record: crate::request::Record) -> Response {
        let Self { stack: in_flight, started, method, uri, busy } = self;
        if let Some(busy) = busy
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            busy.upgraded();
        }
        let latency = started.elapsed();
        let stack = in_flight.stack();
        let request_id = record.request_id;
        let mut response =
            if is_error(&response) { finalize_problem(response, request_id.to_str().unwrap_or("-")) } else { response };
        let status = response.status().as_u16();
        let route = record.route.as_ref().map(MatchedPath::as_str);
        let db_queries = record.queries;
        stack.metrics.record(&method, route, status, latency, db_queries);
        if let Some(uri) = uri {
            let path = uri.path();
            tracing::info!(
                target: "atom::http",
                // A field, not a format string: a `str` is written as it is.
                message = "request",
                method = method.as_str(),
                route = route.unwrap_or("-"),
                // Never the query. At most 256 bytes, cut at a character's edge.
                path = &path[..path.floor_char_boundary(256)],
                status,
                // To the microsecond, which is also what keeps its text short.
                latency_ms = latency.as_micros() as u64 as f64 / 1000.0,
                db_queries,
                // Visible ASCII by construction (see `request_id`).
                request_id = std::str::from_utf8(request_id.as_bytes()).unwrap_or("-"),
                user_id = record.user_id.as_deref(),
            );
        }
        // The id is moved, not cloned: a clone of a freshly made one would allocate.
        stack.headers.stamp(response.headers_mut(), request_id);
        response
    }
}

/// Rewrites an error response into problem+json with the request id: a [`Problem`] in the
/// response's extensions (from `ApiError`) is used as it is; axum's own rejections, 404s and
/// 405s have short plain-text bodies, which become the detail.
///
/// Not `async`: those bodies are whole in memory, so one poll reads them; a body that is not
/// ready at once (a stream, which no error response here is) gives the status's standard
/// detail instead. Every request's future would otherwise carry this one's state.
fn finalize_problem(response: Response, request_id: &str) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let problem = if let Some(problem) = parts.extensions.remove::<Problem>() {
        problem
    } else if !is_problem_json(&parts.headers) {
        let text = axum::body::to_bytes(body, 16 * 1024).now_or_never().and_then(Result::ok).unwrap_or_default();
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
    /// The same router inside axum's body-limit marker: the request extension that marker
    /// adds is needed only where there is a body to read, and a fourth extension makes the
    /// request's extension map grow (an allocation and a rehash).
    limited: LimitedRouter,
    timeout: Duration,
}

impl Service<Request> for Guard {
    type Response = Response;
    type Error = Infallible;
    type Future = GuardFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Used only inside CORS, which calls it from within the request's scope; without CORS,
    /// [`Stack`] calls [`Guard::handle`] directly, before the scope is entered.
    fn call(&mut self, req: Request) -> Self::Future {
        self.handle(req, crate::request::peer())
    }
}

/// The guard's future: answered at once (shed, or denied by the local limiter), limited the
/// long way (boxed: Redis, or a denial to count towards a ban), or routed directly.
pub type GuardFuture =
    Either<Either<Ready<Result<Response, Infallible>>, BoxFuture<'static, Result<Response, Infallible>>>, RouteFuture>;

impl Guard {
    /// Sheds, limits per address (the client behind `peer`, the connection's address), then
    /// routes. Only a decision that needs Redis or a denial that counts towards a ban is boxed.
    fn handle(&self, req: Request, peer: Option<SocketAddr>) -> GuardFuture {
        let edge = &self.state.edge;
        // Health, readiness and metrics are never shed or limited.
        let in_flight = if edge::exempt(req.uri().path()) {
            None
        } else {
            match edge.enter() {
                Some(guard) => Some(guard),
                None => return Either::Left(Either::Left(std::future::ready(Ok(edge::overloaded())))),
            }
        };
        let Some((policy, ip)) =
            edge::address_policy(edge, &req).and_then(|p| Some((p, edge.client_behind(peer?.ip(), req.headers()))))
        else {
            return Either::Right(self.route(req, in_flight, None));
        };
        let key = edge::address_key(ip);
        match edge::enforce_now(&self.state, policy, &key) {
            Verdict::Done(Ok(allowance)) => Either::Right(self.route(req, in_flight, allowance)),
            Verdict::Done(Err(denied)) => Either::Left(Either::Left(std::future::ready(Ok(denied)))),
            verdict => {
                let guard = self.clone();
                Either::Left(Either::Right(Box::pin(async move {
                    let caller = Caller { ip: Some(ip) };
                    match edge::enforce_from(&guard.state, policy, key, caller, verdict).await {
                        Ok(allowance) => guard.route(req, in_flight, allowance).await,
                        Err(denied) => Ok(denied),
                    }
                })))
            }
        }
    }

    /// Calls the router with panic catching and the request timeout.
    fn route(
        &self,
        req: Request,
        in_flight: Option<edge::InFlightGuard>,
        allowance: Option<edge::Allowance>,
    ) -> RouteFuture {
        // Called directly, not through `oneshot`: axum's routers are always ready (their
        // `poll_ready` is `Ready(Ok(()))`), and a `Oneshot` would move the request through its
        // states first.
        let call = if axum::body::HttpBody::is_end_stream(req.body()) {
            Either::Left(self.router.clone().call(req))
        } else {
            Either::Right(self.limited.clone().call(req))
        };
        let call = AssertUnwindSafe(call).catch_unwind();
        RouteFuture { call, timeout: self.timeout, timer: None, in_flight, allowance }
    }
}

pin_project_lite::pin_project! {
    /// The router's call, with the request timeout; on the way out, the rate-limit headers
    /// of `allowance` go on the response. `in_flight` is held until the response is ready.
    ///
    /// The timer is made only when the call first has to wait: most requests (health, a
    /// cached lookup) answer in their first poll, and for them a `tokio::time::Timeout`
    /// would look up the runtime's timer and build and drop an entry for nothing. The
    /// deadline counts from that first wait, microseconds after the request reached the
    /// router; what runs before it is one poll's synchronous work, which no timer could cut
    /// short either.
    pub struct RouteFuture {
        #[pin]
        call: CatchUnwind<AssertUnwindSafe<Either<RouterFuture, <LimitedRouter as Service<Request>>::Future>>>,
        timeout: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        in_flight: Option<edge::InFlightGuard>,
        allowance: Option<edge::Allowance>,
    }
}

impl Future for RouteFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match this.call.poll(cx) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => {
                let timeout = *this.timeout;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                None
            }
        };
        drop(this.in_flight.take());
        let mut response = match outcome {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(never))) => match never {},
            // The panic hook (telemetry) has logged the message and location.
            Some(Err(_panic)) => panic_response(),
            None => Problem::for_status(StatusCode::GATEWAY_TIMEOUT, "").into_response(),
        };
        if let Some(allowance) = this.allowance.take() {
            allowance.stamp(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// The response for a handler that panicked.
pub fn panic_response() -> Response {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "An internal error occurred.").into_response()
}

/// Per route: notes the matched route template in the request's scope, for the metrics and
/// the log line of [`Stack`].
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
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(route) = req.extensions().get::<MatchedPath>() {
            crate::request::record_route(route.clone());
        }
        self.0.call(req)
    }
}

/// Counts one request in flight until dropped (also when the request's future is dropped
/// mid-way), and holds the stack for the request's finishing step.
struct InFlight(Arc<StackShared>);

impl InFlight {
    fn enter(stack: Arc<StackShared>) -> Self {
        stack.metrics.enter();
        Self(stack)
    }

    fn stack(&self) -> &StackShared {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.leave();
    }
}

#[cfg(test)]
mod tests {
    /// Every request carries one of these, by value inside hyper's connection: a change that
    /// makes it balloon again (see the module's documentation) should be a deliberate one.
    #[test]
    fn the_request_future_stays_small() {
        let size = std::mem::size_of::<super::StackFuture>();
        println!("StackFuture: {size} bytes");
        assert!(size <= 1024, "StackFuture is {size} bytes");
    }
}
