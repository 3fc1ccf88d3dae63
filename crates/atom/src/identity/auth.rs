//! Authentication of every protected request: `Authorization: Bearer <token>`, where the
//! token is an access JWT or an API key (`atom_sk_…`). The result is a [`Principal`] in the
//! request's scope ([`crate::request`]); handlers take it as an extractor.
//!
//! Invariant: the protected router is wrapped in [`AuthLayer`] as a whole (see
//! `identity::router`), so a new route is protected unless it is added to the public list
//! on purpose.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::api_keys::API_KEY_PREFIX;
use crate::app::AppState;
use crate::audit::{Actor, RequestContext};
use crate::edge::{Allowance, Caller, Verdict};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn parse(role: &str) -> Self {
        if role == "admin" { Self::Admin } else { Self::User }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access JWT, with its verified claims (its `jti`, `exp` and scopes).
    AccessToken {
        claims: std::sync::Arc<super::tokens::AccessClaims>,
    },
    ApiKey {
        key_id: String,
        scopes: Vec<String>,
    },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::AccessToken { .. } => Actor::User(self.user_id.clone()),
            Credential::ApiKey { key_id, .. } => {
                Actor::ApiKey { key_id: key_id.clone(), user_id: self.user_id.clone() }
            }
        }
    }

    /// Admin routes need the admin role, and from an API key also its `admin` scope.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        let scoped = match &self.credential {
            Credential::AccessToken { .. } => true,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "admin"),
        };
        if self.role == Role::Admin && scoped {
            Ok(())
        } else {
            Err(ApiError::Forbidden("This needs the admin role.".to_owned()))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    /// From the request scope, where [`AuthLayer`] put it.
    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, ApiError> {
        crate::request::principal().ok_or(ApiError::Unauthorized { error: "", description: "Authentication required." })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext
where
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    /// The client's address as the rate limits see it: behind a configured proxy, the
    /// forwarded client, not the proxy.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let client_addr = app.edge.client_ip(&parts.headers).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        let request_id = crate::request::request_id();
        Ok(Self { client_addr, user_agent, request_id })
    }
}

/// The bearer token in an `Authorization` header value: `None` without one.
fn bearer(value: Option<&HeaderValue>) -> Result<Option<&str>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let malformed =
        || ApiError::Unauthorized { error: "invalid_request", description: "Malformed Authorization header." };
    // Text, checked a word at a time. A token with other than base64url characters in it is
    // refused by its verification.
    let value = std::str::from_utf8(value.as_bytes()).ok();
    let (scheme, token) = value.and_then(|v| v.split_at_checked(7)).ok_or_else(malformed)?;
    let token = token.trim_ascii();
    if !scheme.eq_ignore_ascii_case("bearer ") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// The token of a `Bearer` header as bytes, unchecked: enough to look it up among the
/// credentials already verified, which were checked in full when first seen. Anything else
/// is for [`bearer`].
fn bearer_bytes(value: Option<&HeaderValue>) -> Option<&[u8]> {
    let (scheme, token) = value?.as_bytes().split_at_checked(7)?;
    Some(token.trim_ascii()).filter(|t| scheme.eq_ignore_ascii_case(b"bearer ") && !t.is_empty())
}

/// Verifies a credential, an access JWT or an API key (`atom_sk_…`), and the account behind
/// it (a disabled account is refused). The one check behind every way in: HTTP requests
/// ([`AuthLayer`]) and Socket.io connections ([`crate::realtime`]).
pub async fn verify_credential(identity: &super::Identity, credential: &str) -> Result<Principal, ApiError> {
    if credential.starts_with(API_KEY_PREFIX) {
        // Boxed: an API key's check may go to the database, a large future.
        Box::pin(identity.authenticate_api_key(credential)).await
    } else {
        identity.authenticate_access_token(credential).await
    }
}

/// Authenticates every request to the routes it wraps, then applies the per-principal rate
/// limit. A hand-written service rather than `from_fn`, for the reasons in
/// [`crate::http::middleware`].
#[derive(Debug, Clone)]
pub struct AuthLayer(pub AppState);

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate { state: self.0.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct Authenticate<S> {
    state: AppState,
    inner: S,
}

impl<S> Service<Request> for Authenticate<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AuthFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    /// The common case, a known credential of an enabled account on the local rate limiter,
    /// is decided here without awaiting, and the future is the route's own. Anything else (a
    /// first sight of a token, a refusal, Redis) takes the boxed way.
    fn call(&mut self, req: Request) -> Self::Future {
        // The service that was polled ready serves this request; a clone stays for the next.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let state = &self.state;
        let cached =
            bearer_bytes(req.headers().get(AUTHORIZATION)).and_then(|token| state.identity.authenticate_cached(token));
        let Some(principal) = cached else {
            return AuthFuture::Slow { future: Box::pin(authenticate(state.clone(), inner, req)) };
        };
        match limit_now(state, &principal) {
            Verdict::Done(Ok(allowance)) => {
                crate::request::authenticated(principal);
                AuthFuture::Route { future: inner.call(req), allowance }
            }
            Verdict::Done(Err(denied)) => {
                crate::request::authenticated(principal);
                AuthFuture::Answered { response: Some(denied) }
            }
            verdict => AuthFuture::Slow { future: Box::pin(limit(state.clone(), inner, req, principal, verdict)) },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Authenticate`]: the route's own, stamped with the rate-limit headers;
    /// an answer already made; or the boxed full path.
    #[project = AuthProjection]
    pub enum AuthFuture<F> {
        Route { #[pin] future: F, allowance: Option<Allowance> },
        Answered { response: Option<Response> },
        Slow { future: BoxFuture<'static, Result<Response, Infallible>> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for AuthFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthProjection::Route { future, allowance } => {
                let Ok(mut response) = ready!(future.poll(cx));
                if let Some(allowance) = allowance.take() {
                    allowance.stamp(&mut response);
                }
                Poll::Ready(Ok(response))
            }
            // Polled again after it answered: a bug of the caller's, answered without a panic.
            AuthProjection::Answered { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())))
            }
            AuthProjection::Slow { future } => future.as_mut().poll(cx),
        }
    }
}

/// Authenticates the request the full way, or answers 401 with a `WWW-Authenticate`
/// challenge.
///
/// Failed attempts count against the client address's anonymous rate limit, so that
/// requests with made-up credentials cannot go around it.
async fn authenticate<S>(state: AppState, inner: S, req: Request) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let state = &state;
    // A cheap clone (the header's bytes are shared), so that no borrow of the request, which
    // is not Sync, lives across an await.
    let header = req.headers().get(AUTHORIZATION).cloned();
    let outcome = match bearer(header.as_ref()) {
        Ok(Some(token)) => verify_credential(&state.identity, token).await,
        Ok(None) => Err(ApiError::Unauthorized { error: "", description: "Authentication required." }),
        Err(e) => Err(e),
    };
    let principal = match outcome {
        Ok(principal) => principal,
        Err(e) => {
            let ip = state.edge.client_ip(req.headers());
            let denied = Box::pin(crate::edge::count_failed_authentication(state, ip)).await;
            return Ok(denied.unwrap_or(e).into_response());
        }
    };
    let verdict = limit_now(state, &principal);
    limit(state.clone(), inner, req, principal, verdict).await
}

/// The per-principal rate limit as far as it goes without awaiting (see
/// [`crate::edge::enforce_now`]); nothing to do when rate limiting is off.
fn limit_now(state: &AppState, principal: &Principal) -> Verdict {
    if state.edge.enabled() {
        crate::edge::enforce_now(state, crate::edge::API, &crate::edge::principal_key(principal))
    } else {
        Verdict::Done(Ok(None))
    }
}

/// Finishes the per-principal rate limit from what [`crate::edge::enforce_now`] decided,
/// then serves the request.
async fn limit<S>(
    state: AppState,
    mut inner: S,
    req: Request,
    principal: Principal,
    verdict: Verdict,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let limited = match verdict {
        Verdict::Done(limited) => limited,
        // Redis, or a denial to count: the key again, on this rare path.
        verdict => {
            let caller = Caller { ip: state.edge.client_ip(req.headers()) };
            let key = crate::edge::principal_key(&principal);
            crate::edge::enforce_from(&state, crate::edge::API, key, caller, verdict).await
        }
    };
    crate::request::authenticated(principal);
    match limited {
        Ok(allowance) => {
            let Ok(mut response) = inner.call(req).await;
            if let Some(allowance) = allowance {
                allowance.stamp(&mut response);
            }
            Ok(response)
        }
        Err(denied) => Ok(denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_and_refuses_any_other_shape() {
        let token = |v: &[u8]| {
            let value = HeaderValue::from_bytes(v).expect("a header value");
            bearer(Some(&value)).ok().map(|t| t.map(str::to_owned))
        };
        assert_eq!(bearer(None).ok(), Some(None), "no header: no token, not an error");
        for (value, expected) in [
            (&b"Bearer abc.def.ghi"[..], "abc.def.ghi"),
            (b"bearer abc", "abc"),
            (b"BEARER   abc  ", "abc"),
            (b"Bearer atom_sk_123", "atom_sk_123"),
        ] {
            assert_eq!(token(value), Some(Some(expected.to_owned())), "{}", String::from_utf8_lossy(value));
        }
        for value in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Bearertoken",
            b"Bearer\tabc",
            b"Basic abc",
            b"Bearer \xe9t\xe9",
        ] {
            assert!(token(value).is_none(), "{}", String::from_utf8_lossy(value));
        }
        // The fast path's reading takes the same token, and from a refused shape nothing, or
        // bytes that no verified credential can equal.
        for (value, expected) in [(&b"Bearer abc.def.ghi"[..], &b"abc.def.ghi"[..]), (b"BEARER   abc  ", b"abc")] {
            let header = HeaderValue::from_bytes(value).expect("a header value");
            assert_eq!(bearer_bytes(Some(&header)), Some(expected));
        }
        for value in [&b"Bearer"[..], b"Bearer    ", b"Bearertoken", b"Basic abc"] {
            assert!(bearer_bytes(Some(&HeaderValue::from_bytes(value).expect("a header value"))).is_none());
        }
    }
}
