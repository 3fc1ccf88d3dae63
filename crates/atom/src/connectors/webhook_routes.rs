//! The HTTP handlers of incoming webhooks: thin, they extract, call
//! [`super::webhooks`], answer.
//!
//! - `POST /v1/webhooks/{provider}` and `POST /v1/webhooks/{provider}/{connection_id}`:
//!   public on purpose (providers carry no bearer token; the signature is the credential).
//!   The raw body is read up to `connectors.webhook_max_body_bytes` and never parsed
//!   before it is verified.
//! - `GET /v1/webhooks/events`: the caller's received events, newest first, by cursor.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::webhook_schemes::{Rejection, RequestHeaders};
use super::webhooks::{Incoming, Received, WebhookError, WebhookEventView};
use crate::audit::RequestContext;
use crate::error::{ApiError, FieldError, Problem};
use crate::http::{Json, Query, Validate};
use crate::identity::auth::Principal;
use crate::state::AppState;
use crate::storage::webhooks as sql;

/// The public routes: providers call them.
pub fn public_router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks/{provider}", post(receive))
        .route("/v1/webhooks/{provider}/{connection_id}", post(receive_for_connection))
}

/// The routes behind authentication.
pub fn protected_router() -> Router<AppState> {
    Router::new().route("/v1/webhooks/events", get(list_events))
}

impl IntoResponse for WebhookError {
    /// A problem of type `urn:atom:problem:webhook-<code>`, with `code` as an extension.
    fn into_response(self) -> Response {
        if let Self::Api(e) = self {
            return e.into_response();
        }
        let (status, code) = match &self {
            Self::NotReceived => (StatusCode::NOT_FOUND, "not_received"),
            Self::NotConfigured => (StatusCode::CONFLICT, "not_configured"),
            Self::Rejected(Rejection::Malformed(_)) => (StatusCode::UNAUTHORIZED, "malformed"),
            Self::Rejected(Rejection::BadSignature) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            Self::Rejected(Rejection::Stale) => (StatusCode::UNAUTHORIZED, "stale"),
            Self::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Self::Api(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let detail = match &self {
            Self::Rejected(Rejection::Malformed(what)) => {
                format!("the webhook's {what} header is missing or unreadable")
            }
            Self::Rejected(Rejection::BadSignature) => "no signature matches this body".to_owned(),
            Self::Rejected(Rejection::Stale) => "the signed timestamp is outside the tolerance".to_owned(),
            other => other.to_string(),
        };
        let mut problem = Problem::new(status, &format!("webhook-{}", code.replace('_', "-")), detail);
        problem.extensions.insert("code".to_owned(), serde_json::Value::from(code));
        problem.into_response()
    }
}

/// What a provider is answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAccepted {
    /// `stored`, or `duplicate` when the event id was received before (nothing more is
    /// stored or published).
    pub status: String,
    /// The stored event's id (absent for a duplicate).
    pub id: Option<String>,
    /// The provider's id of the event.
    pub event_id: String,
    /// How many connections it was routed to; 0 means kept without an owner.
    pub owners: usize,
}

/// Slack's URL verification answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookChallenge {
    pub challenge: String,
}

async fn handle(
    state: &AppState,
    provider: &str,
    connection_id: Option<&str>,
    context: &RequestContext,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    let Some(template) = state.catalog.get(provider) else { return Err(WebhookError::NotReceived) };
    let Some(webhooks) = template.webhooks.as_ref() else { return Err(WebhookError::NotReceived) };
    let limit = state.config.connectors.webhook_max_body_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge.into());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge)?;
    let headers = RequestHeaders::new(
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned()))),
    );
    let incoming = Incoming { provider, connection_id, headers: &headers, body: &body };
    Ok(match state.connectors.receive_webhook(webhooks, &incoming, context).await? {
        Received::Challenge(challenge) => Json(WebhookChallenge { challenge }).into_response(),
        Received::Stored { id, event_id, owners } => {
            Json(WebhookAccepted { status: "stored".to_owned(), id: Some(id), event_id, owners }).into_response()
        }
        Received::Duplicate { event_id } => {
            Json(WebhookAccepted { status: "duplicate".to_owned(), id: None, event_id, owners: 0 }).into_response()
        }
    })
}

#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "webhooks",
    params(("provider" = String, Path)),
    request_body(content = String, content_type = "application/json",
        description = "The provider's body, verified byte for byte with the scheme its template names"),
    responses((status = 200, body = WebhookAccepted, description = "Stored before this answer (or a duplicate)"),
        (status = 401, description = "Bad, missing or stale signature; audited, nothing stored"),
        (status = 404, description = "The provider receives no webhooks here"),
        (status = 409, description = "No signing secret set for the provider"),
        (status = 413, description = "Body over connectors.webhook_max_body_bytes")))]
pub async fn receive(
    State(state): State<AppState>,
    context: RequestContext,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    handle(&state, &provider, None, &context, &headers, body).await
}

#[utoipa::path(post, path = "/v1/webhooks/{provider}/{connection_id}", tag = "webhooks",
    params(("provider" = String, Path), ("connection_id" = String, Path)),
    request_body(content = String, content_type = "application/json",
        description = "The provider's body, verified byte for byte with the scheme its template names"),
    responses((status = 200, body = WebhookAccepted, description = "Stored and routed to this connection (kept without an owner when it is not one of the provider's)"),
        (status = 401, description = "Bad, missing or stale signature; audited, nothing stored"),
        (status = 404, description = "The provider receives no webhooks here"),
        (status = 409, description = "No signing secret set for the provider"),
        (status = 413, description = "Body over connectors.webhook_max_body_bytes")))]
pub async fn receive_for_connection(
    State(state): State<AppState>,
    context: RequestContext,
    Path((provider, connection_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebhookError> {
    handle(&state, &provider, Some(&connection_id), &context, &headers, body).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}

impl Validate for EventsQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.limit.is_some_and(|l| !(1..=200).contains(&l)) {
            errors.push(FieldError::new("limit", "must be between 1 and 200"));
        }
        if self.cursor.as_deref().is_some_and(|c| c.parse::<i64>().map_or(true, |n| n <= 0)) {
            errors.push(FieldError::new("cursor", "is not a cursor from this API"));
        }
        errors
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventPage {
    pub events: Vec<WebhookEventView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks/events", tag = "webhooks", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = WebhookEventPage), (status = 422, description = "Invalid cursor or limit")))]
pub async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<EventsQuery>,
) -> Result<Json<WebhookEventPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    let before = query.cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(i64::MAX);
    let rows = sql::list_for_user(&state.db, &principal.user_id, before, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if more { rows.last().map(|r| r.seq.to_string()) } else { None };
    Ok(Json(WebhookEventPage { events: rows.iter().map(WebhookEventView::from).collect(), next_cursor }))
}
