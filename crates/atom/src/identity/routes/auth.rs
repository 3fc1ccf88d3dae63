//! Authentication as middleware: [`authenticate`] wraps every protected route, and the
//! [`RequestContext`] of audit rows is extracted from the request (client address as the
//! rate limits see it, user agent, request id).

use axum::extract::{FromRef, FromRequestParts, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::RequestContext;
use crate::edge::Caller;
use crate::error::ApiError;
use crate::http::middleware::AuthenticatedUser;
use crate::identity::auth::{Principal, bearer, verify_credential};
use crate::state::AppState;
use crate::wire::REQUEST_ID;

impl<S: Send + Sync> FromRequestParts<S> for RequestContext
where
    AppState: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    /// The client's address as the rate limits see it: behind a configured proxy, the
    /// forwarded client, not the proxy.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let client_addr = app.edge.client_ip(&parts.headers, &parts.extensions).map(|ip| ip.to_string());
        let user_agent = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        let request_id = parts.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self { client_addr, user_agent, request_id })
    }
}

/// Authenticates every request to the routes it wraps (a `route_layer` of `from_fn`
/// middleware), then applies the per-principal rate limit.
///
/// A refusal answers 401 with a `WWW-Authenticate` challenge; failed attempts count against
/// the client address's anonymous rate limit, so that requests with made-up credentials
/// cannot go around it.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // Boxed: the full check of a credential may reload keys or read the database.
    let principal = match Box::pin(principal_of(&state.identity, req.headers())).await {
        Ok(principal) => principal,
        Err(e) => {
            let ip = state.edge.client_ip(req.headers(), req.extensions());
            let denied = Box::pin(crate::edge::count_failed_authentication(&state.edge, ip)).await;
            return denied.unwrap_or(e).into_response();
        }
    };
    // A route_layer runs after routing, so the matched route's template is known; without
    // one (never, behind the router) the request reaches nothing.
    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("");
    if let Err(e) = principal.require_route(req.method(), route) {
        return e.into_response();
    }
    let user = AuthenticatedUser(principal.user_id.clone());
    let limited = if state.edge.enabled() {
        let caller = Caller {
            ip: state.edge.client_ip(req.headers(), req.extensions()),
            request_id: req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned),
        };
        let key = crate::edge::principal_key(&principal);
        Box::pin(crate::edge::enforce(&state.edge, &state.db, crate::edge::API, key, caller)).await
    } else {
        Ok(None)
    };
    let mut response = match limited {
        Ok(allowance) => {
            req.extensions_mut().insert(principal);
            let mut response = next.run(req).await;
            if let Some(allowance) = allowance {
                allowance.stamp(&mut response);
            }
            response
        }
        Err(denied) => denied,
    };
    response.extensions_mut().insert(user);
    response
}

/// The principal of the request's bearer credential: from the identity's caches when it was
/// seen lately, else checked in full.
async fn principal_of(identity: &crate::identity::Identity, headers: &HeaderMap) -> Result<Principal, ApiError> {
    match bearer(headers.get(AUTHORIZATION))? {
        Some(token) => match identity.authenticate_cached(token.as_bytes()) {
            Some(principal) => Ok(principal),
            None => verify_credential(identity, token).await,
        },
        None => Err(ApiError::Unauthorized { error: "", description: "Authentication required." }),
    }
}
