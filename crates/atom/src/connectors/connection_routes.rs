//! The vault's HTTP handlers: thin, they extract, call the domain, answer.
//!
//! - `PUT|GET|DELETE /v1/admin/providers/{provider}/app`: the instance's OAuth app (admin).
//! - `POST /v1/connections/authorize`: start an OAuth flow (2.0, or 1.0a for Trello); the
//!   authorization URL.
//! - `POST /v1/connections`: connect an API-key or basic-auth service by its credential.
//! - `GET /v1/connections/callback`: the provider's redirect (public: a browser carries no
//!   bearer token; the state is the credential).
//! - `GET /v1/connections`, `GET|DELETE /v1/connections/{id}`, `POST /v1/connections/{id}/refresh`:
//!   the user's own connections.
//!
//! No handler here returns a credential.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use utoipa::ToSchema;

use super::apps::{self, AppView, SetApp};
use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::flows::{self, AuthorizationStarted, CallbackQuery, StartAuthorization};
use super::oauth1_flow;
use super::submit::{self, SubmitCredential};
use super::template::AuthMode;
use super::vault::{self, ConnectionView};
use crate::audit::{self, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::http::{Json, Query, Validate};
use crate::identity::auth::Principal;
use crate::state::AppState;
use crate::storage::connections as sql;
use crate::storage::now_ms;

impl Validate for CallbackQuery {}

/// Any JSON body, parsed into its real type once the caller may see its rules.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct AnyJson(serde_json::Value);

impl Validate for AnyJson {}

/// The public route: the callback.
pub fn public_router() -> Router<AppState> {
    Router::new().route(apps::CALLBACK_PATH, get(callback))
}

/// The routes behind authentication.
pub fn protected_router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/providers/{provider}/app", put(set_app).get(get_app).delete(delete_app))
        .route("/v1/connections", get(list).post(submit))
        .route("/v1/connections/{id}", get(get_one).delete(disconnect))
        .route("/v1/connections/{id}/refresh", post(refresh))
        .route("/v1/connections/authorize", post(authorize))
}

/// A provider of the catalog (the admin API sets apps for every template, also those whose
/// flow is not run here yet).
fn known_provider(state: &AppState, provider: &str) -> Result<(), ConnectorError> {
    if state.catalog.get(provider).is_some() || state.connectors.provider(provider).is_ok() {
        return Ok(());
    }
    Err(ConnectError::new(ErrorCode::UnknownProvider, "no provider of this name in the catalog").into())
}

#[utoipa::path(put, path = "/v1/admin/providers/{provider}/app", tag = "connectors", security(("bearer" = [])),
    params(("provider" = String, Path)), request_body = SetApp,
    responses((status = 200, body = AppView), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such provider"), (status = 409, description = "Set in configuration")))]
pub async fn set_app(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(provider): Path<String>,
    Json(AnyJson(body)): Json<AnyJson>,
) -> Result<Json<AppView>, ConnectorError> {
    principal.require_admin()?;
    known_provider(&state, &provider)?;
    apps::ensure_not_configured(&state.config.connectors, &provider)?;
    // Parsed after the role and provider checks, so that a user learns nothing of its rules.
    let body: SetApp = crate::http::extract::parse(&serde_json::to_vec(&body).unwrap_or_default())?;
    let mut tx = state.db.begin().await?;
    apps::store(&mut tx, &state.connectors.keyring(), &provider, &body, now_ms()).await?;
    let event = AuditEvent::new(principal.actor(), "provider_app.set", Outcome::Success, &context)
        .target(provider.clone())
        .details(
            serde_json::json!({ "client_id": body.client_id.trim(), "webhook_secret": body.webhook_secret.is_some() }),
        );
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    let view = apps::view(&state.db, &state.config.connectors, state.config.public_url.as_deref(), &provider).await?;
    Ok(Json(view.ok_or(ApiError::NotFound)?))
}

#[utoipa::path(get, path = "/v1/admin/providers/{provider}/app", tag = "connectors", security(("bearer" = [])),
    params(("provider" = String, Path)),
    responses((status = 200, body = AppView), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such provider, or no app set")))]
pub async fn get_app(
    State(state): State<AppState>,
    principal: Principal,
    Path(provider): Path<String>,
) -> Result<Json<AppView>, ConnectorError> {
    principal.require_admin()?;
    known_provider(&state, &provider)?;
    let view = apps::view(&state.db, &state.config.connectors, state.config.public_url.as_deref(), &provider).await?;
    Ok(Json(view.ok_or(ApiError::NotFound)?))
}

#[utoipa::path(delete, path = "/v1/admin/providers/{provider}/app", tag = "connectors", security(("bearer" = [])),
    params(("provider" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such provider, or no app set"), (status = 409, description = "Set in configuration")))]
pub async fn delete_app(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(provider): Path<String>,
) -> Result<StatusCode, ConnectorError> {
    principal.require_admin()?;
    known_provider(&state, &provider)?;
    apps::ensure_not_configured(&state.config.connectors, &provider)?;
    let mut tx = state.db.begin().await?;
    if !sql::delete_app(&mut tx, &provider).await? {
        return Err(ApiError::NotFound.into());
    }
    crate::storage::webhooks::delete_secret(&mut tx, &provider).await?;
    let event = AuditEvent::new(principal.actor(), "provider_app.deleted", Outcome::Success, &context).target(provider);
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/connections/authorize", tag = "connectors", security(("bearer" = [])),
    request_body = StartAuthorization,
    responses((status = 201, body = AuthorizationStarted), (status = 404, description = "No such provider"),
        (status = 409, description = "No OAuth app or public URL configured, or not an OAuth provider"),
        (status = 422, description = "Invalid fields")))]
pub async fn authorize(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<StartAuthorization>,
) -> Result<(StatusCode, Json<AuthorizationStarted>), ConnectorError> {
    if let Some(template) = state.catalog.get(&body.provider)
        && template.auth_mode == AuthMode::Oauth1a
    {
        let started = oauth1_flow::start(&state.connectors, template, &principal.user_id, &body).await?;
        return Ok((StatusCode::CREATED, Json(started)));
    }
    if state.catalog.get(&body.provider).is_some() && state.connectors.provider(&body.provider).is_err() {
        return Err(ConnectError::new(
            ErrorCode::NotConfigured,
            "this provider's flow (connection parameters, discovery, OAuth 1.0a or client credentials) is not run by this server yet",
        )
        .into());
    }
    let started = flows::start(&state.connectors, &principal.user_id, &body).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

#[utoipa::path(post, path = "/v1/connections", tag = "connectors", security(("bearer" = [])),
    request_body = SubmitCredential,
    responses((status = 201, body = ConnectionView, description = "Connected"),
        (status = 200, body = ConnectionView, description = "The same provider account, connected again: updated"),
        (status = 404, description = "No such provider"),
        (status = 409, description = "Not an API-key or basic-auth provider (`wrong_auth_kind`)"),
        (status = 422, description = "A parameter or field does not match the template, or the provider refused the credential (`invalid_credentials`)"),
        (status = 502, description = "The provider's identity endpoint failed")))]
pub async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Json(body): Json<SubmitCredential>,
) -> Result<(StatusCode, Json<ConnectionView>), ConnectorError> {
    let template = state
        .catalog
        .get(&body.provider)
        .cloned()
        .ok_or_else(|| ConnectError::new(ErrorCode::UnknownProvider, "no provider of this name in the catalog"))?;
    let (row, created) = submit::submit(&state.connectors, &template, &principal.user_id, &body, &context).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ConnectionView::from(&row))))
}

/// The callback's answer when no return URL is configured.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackDone {
    pub connection: ConnectionView,
}

#[utoipa::path(get, path = "/v1/connections/callback", tag = "connectors", params(CallbackQuery),
    responses((status = 303, description = "To the return URL, with `connection_id` or `error` (a stable code)"),
        (status = 200, body = CallbackDone, description = "Connected (no return URL configured)"),
        (status = 400, description = "Unknown, replayed or expired state; wrong issuer")))]
pub async fn callback(
    State(state): State<AppState>,
    context: RequestContext,
    Query(mut query): Query<CallbackQuery>,
    RawQuery(raw): RawQuery,
) -> Response {
    query.extra = form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect();
    let outcome = flows::callback(&state.connectors, &query, &context).await;
    if let Some(return_to) = &outcome.return_to {
        let target = flows::redirect_target(return_to, outcome.provider.as_deref(), &outcome.result);
        return Redirect::to(&target).into_response();
    }
    match outcome.result {
        Ok(row) => Json(CallbackDone { connection: ConnectionView::from(&row) }).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionView>,
}

#[utoipa::path(get, path = "/v1/connections", tag = "connectors", security(("bearer" = [])),
    responses((status = 200, body = ConnectionList)))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<ConnectionList>, ApiError> {
    let rows = vault::list_for_user(&state.db, &principal.user_id).await?;
    Ok(Json(ConnectionList { connections: rows.iter().map(ConnectionView::from).collect() }))
}

#[utoipa::path(get, path = "/v1/connections/{id}", tag = "connectors", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = ConnectionView), (status = 404)))]
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let row = vault::get_for_user(&state.db, &principal.user_id, &id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(ConnectionView::from(&row)))
}

/// What a disconnect did at the provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnected {
    /// Whether the provider confirmed the revocation (or there was nothing to revoke there).
    pub revoked: bool,
    /// The revocation's failure, a stable code and a scrubbed description; the connection is
    /// deleted locally all the same.
    pub revocation_error: Option<String>,
}

#[utoipa::path(delete, path = "/v1/connections/{id}", tag = "connectors", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Disconnected), (status = 404)))]
pub async fn disconnect(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ConnectorError> {
    let failure = state.connectors.disconnect(principal.actor(), &principal.user_id, &id, &context).await?;
    Ok(Json(Disconnected { revoked: failure.is_none(), revocation_error: failure.as_ref().map(ConnectError::stored) }))
}

#[utoipa::path(post, path = "/v1/connections/{id}/refresh", tag = "connectors", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ConnectionView, description = "Refreshed when due; never the token"),
        (status = 404), (status = 409, description = "needs_reauth"), (status = 502, description = "Provider failure")))]
pub async fn refresh(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ConnectorError> {
    let row = state.connectors.refresh_for_user(&principal.user_id, &id).await?;
    Ok(Json(ConnectionView::from(&row)))
}

impl From<ErrorCode> for ConnectorError {
    fn from(code: ErrorCode) -> Self {
        Self::Connect(ConnectError::new(code, code.as_str()))
    }
}
