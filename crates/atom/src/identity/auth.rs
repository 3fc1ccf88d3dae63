//! Authentication of every protected request: `Authorization: Bearer <token>`, where the
//! token is an access JWT or an API key (`atom_sk_…`). The result is a [`Principal`] in the
//! request extensions; handlers take it as an extractor.
//!
//! Invariant: the protected router is wrapped in [`authenticate`] as a whole (see
//! `identity::router`), so a new route is protected unless it is added to the public list
//! on purpose.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::api_keys::API_KEY_PREFIX;
use crate::app::AppState;
use crate::audit::{Actor, RequestContext};
use crate::error::ApiError;
use crate::http::middleware::{AuthenticatedUser, RequestId};

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
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Self { client_addr, user_agent, request_id })
    }
}

/// The bearer token of a request: `None` without an `Authorization` header.
fn bearer(req: &Request) -> Result<Option<&str>, ApiError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else { return Ok(None) };
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
/// ([`authenticate`]) and Socket.io connections ([`crate::realtime`]).
pub async fn verify_credential(identity: &super::Identity, credential: &str) -> Result<Principal, ApiError> {
    if credential.starts_with(API_KEY_PREFIX) {
        identity.authenticate_api_key(credential).await
    } else {
        identity.authenticate_access_token(credential).await
    }
}

/// Authenticates the request or answers 401 with a `WWW-Authenticate` challenge.
///
/// Failed attempts count against the client address's anonymous rate limit, so that
/// requests with made-up credentials cannot go around it.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    // Owned, so that no borrow of the request (which is not Sync) lives across an await.
    let token = bearer(&req).map(|t| t.map(str::to_owned));
    let outcome = match token {
        Ok(Some(token)) => verify_credential(&state.identity, &token).await,
        Ok(None) => Err(ApiError::Unauthorized { error: "", description: "Authentication required." }),
        Err(e) => Err(e),
    };
    let principal = match outcome {
        Ok(principal) => principal,
        Err(e) => {
            let ip = state.edge.client_ip(&req);
            if let Some(denied) = crate::edge::count_failed_authentication(&state, ip).await {
                return Err(denied);
            }
            return Err(e);
        }
    };
    let user = AuthenticatedUser(principal.user_id.clone());
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(user);
    Ok(response)
}
