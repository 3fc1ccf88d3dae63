//! The agent's HTTP handlers, thin over [`super::access`] and [`super::proxy`]:
//!
//! - `GET /v1/connections/{id}/token`: the connection's fresh access token and kept values.
//! - `GET|HEAD|POST|PUT|PATCH|DELETE /v1/proxy/{connection_id}/{path}`: the call forwarded to
//!   the provider with the credential injected, the provider's answer streamed back;
//!   `/v1/proxy/{connection_id}` and `/v1/proxy/{connection_id}/` call the template's API base
//!   URL itself.
//!
//! Both are behind authentication (the protected router), for the connection's owner: a user
//! access token, or an API key with the `connections:use` scope.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::access::{self, ConnectionToken};
use super::error::ConnectorError;
use super::proxy::Call;
use crate::audit::RequestContext;
use crate::http::Json;
use crate::identity::Principal;
use crate::state::AppState;

/// The proxy's route: a path below the API base URL.
pub const PROXY_ROUTE: &str = "/v1/proxy/{connection_id}/{*path}";
/// The API base URL itself, with and without the slash (a catch-all matches no empty path).
pub const PROXY_BASE_ROUTES: [&str; 2] = ["/v1/proxy/{connection_id}", "/v1/proxy/{connection_id}/"];
const PROXY_PREFIX: &str = "/v1/proxy/";

/// Whether `route` (a matched route template) is one of the proxy's: the body limit of the
/// HTTP stack leaves their bodies to the proxy's own cap (`connectors.proxy_max_body_bytes`),
/// since they stream through.
pub fn is_proxy_route(route: &str) -> bool {
    route == PROXY_ROUTE || PROXY_BASE_ROUTES.contains(&route)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/connections/{id}/token", get(token))
        .route(PROXY_ROUTE, get(proxy).post(proxy).put(proxy).patch(proxy).delete(proxy))
        .route(
            PROXY_BASE_ROUTES[0],
            get(proxy_base).post(proxy_base).put(proxy_base).patch(proxy_base).delete(proxy_base),
        )
        .route(
            PROXY_BASE_ROUTES[1],
            get(proxy_base_slash)
                .post(proxy_base_slash)
                .put(proxy_base_slash)
                .patch(proxy_base_slash)
                .delete(proxy_base_slash),
        )
}

#[utoipa::path(get, path = "/v1/connections/{id}/token", tag = "connectors", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ConnectionToken, description = "The access token, refreshed first when due"),
        (status = 403, description = "An API key without connections:use, or limited to other providers"),
        (status = 404, description = "No such connection of the caller's"),
        (status = 409, description = "needs_reauth, or a credential that is not an access token"),
        (status = 502, description = "The refresh failed at the provider")))]
pub async fn token(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<ConnectionToken>, ConnectorError> {
    Ok(Json(access::token(&state.connectors, &principal, &id, &context).await?))
}

#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/proxy/{connection_id}/{path}", tag = "connectors",
    security(("bearer" = [])),
    params(("connection_id" = String, Path), ("path" = String, Path, description = "The provider API's path, below the template's base URL")),
    request_body(content = Vec<u8>, description = "Passed through to the provider as it streams", content_type = "*/*"),
    responses((status = "default", description = "The provider's answer: its status, headers (less hop-by-hop and cookies) and body"),
        (status = 400, description = "invalid_path: the path would leave the provider's base URL"),
        (status = 403, description = "An API key without connections:use, or limited to other providers"),
        (status = 404, description = "No such connection of the caller's"),
        (status = 409, description = "connection_needs_reauth, connection_invalid, not_configured"),
        (status = 413, description = "body_too_large"),
        (status = 429, description = "rate_limited, with Retry-After (a provider's own 429 passes through)"),
        (status = 502, description = "provider_unreachable, destination_refused"),
        (status = 504, description = "provider_timeout")))]
pub async fn proxy(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    request: Request,
) -> Response {
    forward(&state, &principal, &context, request).await
}

#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/proxy/{connection_id}", tag = "connectors",
    security(("bearer" = [])),
    params(("connection_id" = String, Path)),
    request_body(content = Vec<u8>, description = "Passed through to the provider as it streams", content_type = "*/*"),
    responses((status = "default", description = "The provider's answer to a call of its API base URL itself, as for /v1/proxy/{connection_id}/{path}")))]
pub async fn proxy_base(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    request: Request,
) -> Response {
    forward(&state, &principal, &context, request).await
}

#[utoipa::path(method(get, post, put, patch, delete), path = "/v1/proxy/{connection_id}/", tag = "connectors",
    security(("bearer" = [])),
    params(("connection_id" = String, Path)),
    request_body(content = Vec<u8>, description = "Passed through to the provider as it streams", content_type = "*/*"),
    responses((status = "default", description = "The provider's answer to a call of its API base URL itself, as for /v1/proxy/{connection_id}/{path}")))]
pub async fn proxy_base_slash(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    request: Request,
) -> Response {
    forward(&state, &principal, &context, request).await
}

/// The call as the proxy takes it: the connection id and the raw path below it, from the URI.
async fn forward(state: &AppState, principal: &Principal, context: &RequestContext, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The raw path, still percent-encoded: the proxy checks it before it reaches a URL.
    let rest = parts.uri.path().strip_prefix(PROXY_PREFIX).unwrap_or_default();
    let (connection_id, path) = rest.split_once('/').unwrap_or((rest, ""));
    let call = Call {
        method: parts.method,
        path: path.to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body: body.into_data_stream(),
    };
    match state.proxy.forward(principal, connection_id, call, context).await {
        Ok(forwarded) => {
            let status = forwarded.response.status();
            let mut response = Response::new(Body::from_stream(forwarded.response.bytes_stream()));
            *response.status_mut() = status;
            *response.headers_mut() = forwarded.headers;
            // The provider's own error statuses are its answer, not ours to rewrite.
            response.extensions_mut().insert(crate::http::middleware::Upstream);
            response
        }
        Err(e) => e.into_response(),
    }
}
