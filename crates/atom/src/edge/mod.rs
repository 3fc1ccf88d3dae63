//! Edge protection: security headers and CORS ([`headers`]), the client address (forwarded
//! headers trusted only from configured proxies), rate limits per route class
//! ([`ratelimit`]), bans for clients that keep hitting them, and load shedding.
//!
//! Route classes: `/v1/auth/*` is limited per client address (strict); authenticated routes
//! per user or API key (after authentication); everything else per client address.
//! `/health`, `/ready` and `/metrics` are never limited or shed, so that orchestrators can
//! always see the server. Every limited response carries the IETF `RateLimit-Policy` and
//! `RateLimit` headers; a 429 carries `Retry-After`.

pub mod headers;
pub mod ratelimit;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::config::Config;
use crate::error::{ApiError, Problem};
use crate::net::Cidr;
use crate::storage::Db;
use ratelimit::{Decision, Limiter, Policy};

pub const AUTH: &str = "auth";
pub const API: &str = "api";
pub const ANONYMOUS: &str = "anonymous";

/// Routes that are never limited or shed: what probes and load balancers call. `/metrics`
/// is not among them: on the main listener it is an anonymous route like any other.
pub fn exempt(path: &str) -> bool {
    matches!(path, "/health" | "/ready")
}

#[derive(Debug, Default)]
struct Strikes {
    denials: u32,
    window_start: Option<Instant>,
    banned_until: Option<Instant>,
}

/// The edge state shared by every request.
#[derive(Debug)]
pub struct Edge {
    pub limiter: Limiter,
    enabled: bool,
    trusted_proxies: Vec<Cidr>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    ban_threshold: u32,
    ban_window: Duration,
    ban_for: Duration,
    strikes: Mutex<HashMap<String, Strikes>>,
    /// When the last ban to end ends, in milliseconds since `started`: until a client is
    /// banned, and after every ban has run out, a request's key is not looked up.
    bans_end: AtomicU64,
    started: Instant,
    /// `RateLimit-Policy` per policy, made once.
    policy_headers: Vec<(&'static str, HeaderValue)>,
}

const RATELIMIT_POLICY: header::HeaderName = header::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

impl Edge {
    pub fn new(config: &Config, redis: Option<std::sync::Arc<crate::cache::Redis>>) -> Self {
        let rl = &config.rate_limit;
        let policy = |per_minute: u32, burst: u32| Policy { quota: per_minute, window_secs: 60, burst };
        let policies = HashMap::from([
            (AUTH, policy(rl.auth_per_minute, rl.auth_burst)),
            (API, policy(rl.api_per_minute, rl.api_burst)),
            (ANONYMOUS, policy(rl.anonymous_per_minute, rl.anonymous_burst)),
        ]);
        let policy_headers = policies
            .iter()
            .filter_map(|(name, p)| {
                let value = format!("\"{name}\";q={};w={}", p.quota, p.window_secs);
                Some((*name, HeaderValue::from_str(&value).ok()?))
            })
            .collect();
        Self {
            limiter: Limiter::new(policies, redis),
            enabled: rl.enabled,
            trusted_proxies: config.http.trusted_proxies.iter().filter_map(|c| Cidr::parse(c)).collect(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: config.http.max_in_flight,
            ban_threshold: rl.ban_threshold,
            ban_window: Duration::from_secs(rl.ban_window_secs),
            ban_for: Duration::from_secs(rl.ban_secs),
            strikes: Mutex::new(HashMap::new()),
            bans_end: AtomicU64::new(0),
            started: Instant::now(),
            policy_headers,
        }
    }

    /// The client's address of a request, given its headers and extensions: the peer of its
    /// connection (the [`ConnectInfo`](axum::extract::ConnectInfo) extension the server puts
    /// on every request), or the nearest untrusted address in `X-Forwarded-For` when the
    /// peer is a configured proxy. `None` for a request that came through no socket.
    pub fn client_ip(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<IpAddr> {
        let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?.0.ip();
        Some(self.client_behind(peer, headers))
    }

    /// The client behind `peer`, given the request's headers: `peer` itself unless it is a
    /// configured proxy.
    fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.iter().any(|c| c.contains(peer)) {
            return peer;
        }
        let forwarded = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("");
        let chain: Vec<IpAddr> = forwarded.split(',').filter_map(|a| a.trim().parse().ok()).collect();
        chain.into_iter().rev().find(|ip| !self.trusted_proxies.iter().any(|c| c.contains(*ip))).unwrap_or(peer)
    }

    fn allowance(&self, name: &'static str, decision: Decision) -> Allowance {
        let policy_header = self.policy_headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        Allowance { name, policy_header, decision }
    }

    /// Whether rate limits apply at all (`rate_limit.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Seconds of ban left for `key`, if banned.
    fn banned(&self, key: &str) -> Option<u64> {
        if self.millis(Instant::now()) >= self.bans_end.load(Ordering::Acquire) {
            return None;
        }
        let strikes = self.strikes.lock().ok()?;
        let until = strikes.get(key)?.banned_until?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(left.as_secs().max(1))
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a denial; returns true when it starts a ban.
    fn strike(&self, key: &str) -> bool {
        let Ok(mut strikes) = self.strikes.lock() else { return false };
        if strikes.len() > 100_000 {
            let now = Instant::now();
            strikes.retain(|_, s| s.banned_until.is_some_and(|u| u > now));
        }
        let s = strikes.entry(key.to_owned()).or_default();
        let now = Instant::now();
        if s.window_start.is_none_or(|w| now.duration_since(w) > self.ban_window) {
            s.window_start = Some(now);
            s.denials = 0;
        }
        s.denials += 1;
        if s.denials >= self.ban_threshold && s.banned_until.is_none_or(|u| u <= now) {
            s.banned_until = Some(now + self.ban_for);
            // Rounded up: `banned` looks the key up until the ban is over.
            self.bans_end.fetch_max(self.millis(now + self.ban_for).saturating_add(1), Ordering::AcqRel);
            s.denials = 0;
            return true;
        }
        false
    }
}

/// A request the limiter let through: the `RateLimit-Policy` and `RateLimit` headers its
/// response carries.
#[derive(Debug)]
pub struct Allowance {
    name: &'static str,
    policy_header: Option<HeaderValue>,
    decision: Decision,
}

impl Allowance {
    pub fn stamp(&self, response: &mut Response) {
        let h = response.headers_mut();
        let (name, decision) = (self.name, &self.decision);
        if let Some(v) = &self.policy_header {
            h.insert(RATELIMIT_POLICY, v.clone());
        }
        // From the `String` itself: its bytes become the value's, with no second copy.
        if let Ok(v) = HeaderValue::try_from(format!("\"{name}\";r={};t={}", decision.remaining, decision.reset_secs)) {
            h.insert(RATELIMIT, v);
        }
    }
}

fn too_many(retry_after_secs: u64, detail: &str) -> Response {
    ApiError::TooManyRequests { retry_after_secs: retry_after_secs.max(1), detail: detail.to_owned() }.into_response()
}

/// Who is asking, for the audit row of a ban.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

/// Applies policy `name` to `key`. `Ok(None)`: no such policy; `Ok(Some)`: allowed, stamp
/// the response; `Err`: the 429 to answer. A client that keeps being denied is banned, and
/// the ban audited.
pub async fn enforce(
    edge: &Edge,
    db: &Db,
    name: &'static str,
    key: String,
    caller: Caller,
) -> Result<Option<Allowance>, Response> {
    if let Some(left) = edge.banned(&key) {
        return Err(too_many(left, "This client is temporarily banned for exceeding rate limits."));
    }
    if edge.limiter.policy(name).is_none() {
        return Ok(None);
    }
    let decision = edge.limiter.check(name, &key).await;
    if decision.allowed {
        return Ok(Some(edge.allowance(name, decision)));
    }
    Err(deny(edge, db, name, &key, caller, decision).await)
}

/// The 429 for a counted denial; a client that keeps being denied is banned, and the ban
/// audited.
async fn deny(edge: &Edge, db: &Db, name: &'static str, key: &str, caller: Caller, decision: Decision) -> Response {
    metrics::counter!("rate_limit_denied_total", "policy" => name).increment(1);
    if edge.strike(key) {
        // Boxed: a rare path whose database write should not weigh on every request's future.
        Box::pin(audit_ban(edge, db, name, key, caller)).await;
    }
    let allowance = edge.allowance(name, decision);
    let mut response = too_many(allowance.decision.retry_after_secs, "Rate limit exceeded; slow down.");
    allowance.stamp(&mut response);
    response
}

async fn audit_ban(edge: &Edge, db: &Db, name: &'static str, key: &str, caller: Caller) {
    tracing::warn!(client = %key, policy = name, "client banned for repeatedly exceeding rate limits");
    let context = RequestContext {
        client_addr: caller.ip.map(|ip| ip.to_string()),
        user_agent: None,
        request_id: caller.request_id,
    };
    let event = AuditEvent::new(Actor::System, "edge.ban", Outcome::Denied, &context)
        .target(key.to_owned())
        .details(serde_json::json!({ "policy": name, "ban_secs": edge.ban_for.as_secs() }));
    if let Err(e) = audit::record_alone(db, event).await {
        tracing::error!(error = %e, "could not audit a ban");
    }
}

/// The per-address policy for a request: `/v1/auth/*` (strict) and unauthenticated requests.
/// Requests with credentials are limited per principal after authentication
/// ([`principal_key`]); `/health` and `/ready` never; nothing when rate limiting
/// is off.
pub fn address_policy(edge: &Edge, req: &Request) -> Option<&'static str> {
    let path = req.uri().path();
    if !edge.enabled || exempt(path) {
        None
    } else if path.starts_with("/v1/auth/") {
        Some(AUTH)
    } else if path == "/metrics" {
        // Its bearer token is no principal to limit by later.
        Some(ANONYMOUS)
    } else if req.headers().contains_key(header::AUTHORIZATION) {
        None
    } else {
        Some(ANONYMOUS)
    }
}

/// The rate-limit key of a client address.
pub fn address_key(ip: IpAddr) -> String {
    format!("addr:{ip}")
}

/// The rate-limit key of an authenticated caller: the API key, else the user.
pub fn principal_key(principal: &crate::identity::Principal) -> String {
    match &principal.credential {
        crate::identity::Credential::ApiKey { key_id, .. } => format!("key:{key_id}"),
        crate::identity::Credential::AccessToken { .. } => format!("user:{}", principal.user_id),
    }
}

/// The `auth` policy per account, for sign-in attempts from any address: one account cannot
/// be attacked faster by spreading the attempts over many addresses.
pub async fn limit_account(edge: &Edge, email: &str) -> Result<(), ApiError> {
    if !edge.enabled {
        return Ok(());
    }
    let decision = edge.limiter.check(AUTH, &format!("account:{email}")).await;
    if decision.allowed {
        return Ok(());
    }
    Err(ApiError::TooManyRequests {
        retry_after_secs: decision.retry_after_secs.max(1),
        detail: "Too many sign-in attempts for this account; slow down.".to_owned(),
    })
}

/// Counts a failed authentication against the address's anonymous budget; the 429 to send
/// instead of the 401 when the budget is spent.
pub async fn count_failed_authentication(edge: &Edge, ip: Option<IpAddr>) -> Option<ApiError> {
    if !edge.enabled {
        return None;
    }
    let key = address_key(ip?);
    let decision = edge.limiter.check(ANONYMOUS, &key).await;
    (!decision.allowed).then(|| ApiError::TooManyRequests {
        retry_after_secs: decision.retry_after_secs.max(1),
        detail: "Too many failed authentications from this address; slow down.".to_owned(),
    })
}

impl Edge {
    /// Admits one request into the work in flight, or `None` while more than `max_in_flight`
    /// are being served (answer [`overloaded`] then). Health, readiness and metrics do not
    /// enter, so they always answer.
    pub fn enter(&self) -> Option<InFlightGuard> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(Arc::clone(&self.in_flight));
        (before < self.max_in_flight).then_some(guard)
    }
}

/// The 503 with `Retry-After` for a request shed at capacity.
pub fn overloaded() -> Response {
    metrics::counter!("http_requests_shed_total").increment(1);
    let mut response =
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "The server is at capacity; retry shortly.")
            .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// One request in flight; leaves when dropped, however the request ends.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
