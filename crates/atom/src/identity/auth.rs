//! Authentication of every protected request: `Authorization: Bearer <token>`, where the
//! token is an access JWT or an API key (`atom_sk_…`). The result is a [`Principal`] in the
//! request extensions; handlers take it as an extractor.
//!
//! Invariant: the protected router is wrapped in [`AuthLayer`] as a whole (see
//! `identity::router`), so a new route is protected unless it is added to the public list
//! on purpose.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::HeaderValue;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::api_keys::API_KEY_PREFIX;
use crate::app::AppState;
use crate::audit::{Actor, RequestContext};
use crate::edge::Caller;
use crate::error::ApiError;
use crate::http::middleware::AuthenticatedUser;

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
    AccessToken { jti: String },
    ApiKey { key_id: String, scopes: Vec<String> },
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

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(ApiError::Unauthorized { error: "", description: "Authentication required." })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let client_addr =
            parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
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
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(Some(token.trim()))
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
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(authenticate(self.state.clone(), self.inner.clone(), req))
    }
}

/// Authenticates the request or answers 401 with a `WWW-Authenticate` challenge.
///
/// Failed attempts count against the client address's anonymous rate limit, so that
/// requests with made-up credentials cannot go around it.
async fn authenticate<S>(state: AppState, inner: S, mut req: Request) -> Result<Response, Infallible>
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
            let ip = state.edge.client_ip(&req);
            let denied = Box::pin(crate::edge::count_failed_authentication(state, ip)).await;
            return Ok(denied.unwrap_or(e).into_response());
        }
    };
    let caller = Caller { ip: state.edge.client_ip(&req) };
    let user = AuthenticatedUser(principal.user_id.clone());
    let mut response = match crate::edge::limit_by_principal(state, &principal, caller).await {
        Ok(allowance) => {
            req.extensions_mut().insert(principal);
            let Ok(mut response) = inner.oneshot(req).await;
            if let Some(allowance) = allowance {
                allowance.stamp(&mut response);
            }
            response
        }
        Err(denied) => denied,
    };
    response.extensions_mut().insert(user);
    Ok(response)
}
