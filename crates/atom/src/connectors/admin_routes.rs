//! The HTTP handlers of the admin view of every connection (admin role): thin, they check
//! the role, extract, call [`super::admin`], answer.
//!
//! - `GET /v1/admin/connections`: every connection, filtered (status, provider, owner,
//!   label) and paged by cursor.
//! - `GET /v1/admin/connections/stats`: counts per provider and status.
//! - `GET /v1/admin/connections/{id}/history`: its audited actions and webhooks.
//! - `POST /v1/admin/connections/{id}/refresh`: a forced refresh (audited).
//! - `DELETE /v1/admin/connections/{id}`: revocation at the provider and deletion (audited).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::admin::{self, AdminConnectionView, ConnectionHistory, ConnectionStats};
use super::connection_routes::Disconnected;
use super::error::{ConnectError, ConnectorError};
use crate::audit::RequestContext;
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Query, Validate};
use crate::identity::auth::Principal;
use crate::state::AppState;
use crate::storage::connection_admin::AdminFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/connections", get(list))
        .route("/v1/admin/connections/stats", get(stats))
        .route("/v1/admin/connections/{id}", delete(revoke))
        .route("/v1/admin/connections/{id}/history", get(history))
        .route("/v1/admin/connections/{id}/refresh", post(refresh))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminConnectionsQuery {
    /// `active` or `needs_reauth`.
    pub status: Option<String>,
    /// A provider id.
    pub provider: Option<String>,
    /// The owner's user id.
    pub owner: Option<String>,
    /// Part of the label, any case.
    pub label: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}

impl Validate for AdminConnectionsQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.status.as_deref().is_some_and(|s| !["active", "needs_reauth"].contains(&s)) {
            errors.push(FieldError::new("status", "must be active or needs_reauth"));
        }
        for (field, value) in [("provider", &self.provider), ("owner", &self.owner), ("label", &self.label)] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > 200) {
                errors.push(FieldError::new(field, "must be 1 to 200 characters"));
            }
        }
        if self.limit.is_some_and(|l| !(1..=200).contains(&l)) {
            errors.push(FieldError::new("limit", "must be between 1 and 200"));
        }
        if self.cursor.as_deref().is_some_and(|c| admin::parse_cursor(c).is_none()) {
            errors.push(FieldError::new("cursor", "is not a cursor from this API"));
        }
        errors
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminConnectionPage {
    pub connections: Vec<AdminConnectionView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/connections", tag = "admin", security(("bearer" = [])),
    params(AdminConnectionsQuery),
    responses((status = 200, body = AdminConnectionPage), (status = 403, description = "Not an admin"),
        (status = 422, description = "Invalid filter")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<AdminConnectionsQuery>, ApiError>,
) -> Result<Json<AdminConnectionPage>, ApiError> {
    principal.require_admin()?;
    // Parsed after the role check, so that a user learns nothing of the filters' rules.
    let Query(q) = query?;
    let filter = AdminFilter {
        status: q.status,
        provider: q.provider,
        owner: q.owner,
        label: q.label,
        before: q.cursor.as_deref().and_then(admin::parse_cursor),
        limit: i64::from(q.limit.unwrap_or(50)),
    };
    let (connections, next_cursor) = admin::list(&state.db, filter).await?;
    Ok(Json(AdminConnectionPage { connections, next_cursor }))
}

#[utoipa::path(get, path = "/v1/admin/connections/stats", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ConnectionStats), (status = 403, description = "Not an admin")))]
pub async fn stats(State(state): State<AppState>, principal: Principal) -> Result<Json<ConnectionStats>, ApiError> {
    principal.require_admin()?;
    Ok(Json(admin::stats(&state.db).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries of each kind, 1 to 500; default 100.
    pub limit: Option<u32>,
}

impl Validate for HistoryQuery {
    fn validate(&self) -> Vec<FieldError> {
        if self.limit.is_some_and(|l| !(1..=500).contains(&l)) {
            return vec![FieldError::new("limit", "must be between 1 and 500")];
        }
        Vec::new()
    }
}

#[utoipa::path(get, path = "/v1/admin/connections/{id}/history", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path), HistoryQuery),
    responses((status = 200, body = ConnectionHistory), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such connection")))]
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, ApiError>,
) -> Result<Json<ConnectionHistory>, ApiError> {
    principal.require_admin()?;
    let Query(q) = query?;
    Ok(Json(admin::history(&state.db, &id, i64::from(q.limit.unwrap_or(100))).await?))
}

#[utoipa::path(post, path = "/v1/admin/connections/{id}/refresh", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = AdminConnectionView, description = "Refreshed now; never the token"),
        (status = 403, description = "Not an admin"), (status = 404, description = "No such connection"),
        (status = 409, description = "needs_reauth, or nothing to refresh"), (status = 502, description = "Provider failure")))]
pub async fn refresh(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<AdminConnectionView>, ConnectorError> {
    principal.require_admin()?;
    Ok(Json(state.connectors.admin_refresh(principal.actor(), &id, &context).await?))
}

#[utoipa::path(delete, path = "/v1/admin/connections/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Disconnected), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such connection")))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ConnectorError> {
    principal.require_admin()?;
    let failure = state.connectors.admin_revoke(principal.actor(), &id, &context).await?;
    Ok(Json(Disconnected { revoked: failure.is_none(), revocation_error: failure.as_ref().map(ConnectError::stored) }))
}
