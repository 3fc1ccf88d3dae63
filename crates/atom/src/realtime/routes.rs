//! The admin's view of a user's live Socket.io connections, on every node, and closing them.
//! Every route needs the admin role (from an API key also its `admin` scope); a disconnect is
//! audited, and the audit row commits before any socket is closed, so a failure leaves
//! nothing closed without a record. The closed sockets get `session:closing` with code
//! `disconnected_by_admin`.
//!
//! The handle of this node's Socket.io server travels as a request extension
//! ([`Realtime`], added by `app::all_routes`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Connection, Realtime};
use crate::audit::{self, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::http::Json;
use crate::identity::Principal;
use crate::state::AppState;

/// The routes, for the protected router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/users/{id}/connections",
            axum::routing::get(admin_list_connections).delete(admin_disconnect_all),
        )
        .route("/v1/admin/users/{id}/connections/{socket_id}", axum::routing::delete(admin_disconnect_one))
}

/// A user's live connections.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub user_id: String,
    /// False when this node could not reach Redis: the list holds this node's connections
    /// only.
    pub complete: bool,
    pub connections: Vec<Connection>,
}

/// What a disconnect closed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnected {
    pub disconnected: usize,
    /// False when this node could not reach Redis: only its own connections were closed.
    pub complete: bool,
}

fn unavailable(e: super::AdapterFailed) -> ApiError {
    ApiError::Unavailable { what: "real-time adapter", source: Box::new(e) }
}

/// The user's connections, after checking the caller and that the user exists.
async fn live(
    state: &AppState,
    realtime: &Realtime,
    principal: &Principal,
    user_id: &str,
) -> Result<(Vec<Connection>, bool), ApiError> {
    principal.require_admin()?;
    if crate::storage::users::by_id(&state.db, user_id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let complete = realtime.reaches_every_node();
    let connections = realtime.connections(user_id).await.map_err(unavailable)?;
    Ok((connections, complete))
}

#[utoipa::path(get, path = "/v1/admin/users/{id}/connections", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ConnectionList), (status = 403, description = "Not an admin"), (status = 404)))]
pub async fn admin_list_connections(
    State(state): State<AppState>,
    Extension(realtime): Extension<Realtime>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConnectionList>, ApiError> {
    let (connections, complete) = live(&state, &realtime, &principal, &id).await?;
    Ok(Json(ConnectionList { user_id: id, complete, connections }))
}

/// Audits, then closes, `connections` of `user_id`.
async fn close(
    state: &AppState,
    realtime: &Realtime,
    principal: &Principal,
    context: &RequestContext,
    user_id: &str,
    connections: &[Connection],
) -> Result<(), ApiError> {
    let socket_ids: Vec<&str> = connections.iter().map(|c| c.socket_id.as_str()).collect();
    let mut tx = state.db.begin().await?;
    let event = AuditEvent::new(principal.actor(), "realtime.disconnected", Outcome::Success, context)
        .target(user_id.to_owned())
        .details(serde_json::json!({ "socket_ids": socket_ids }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    for connection in connections {
        realtime.disconnect(connection).await.map_err(unavailable)?;
    }
    Ok(())
}

#[utoipa::path(delete, path = "/v1/admin/users/{id}/connections", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Disconnected), (status = 403, description = "Not an admin"), (status = 404)))]
pub async fn admin_disconnect_all(
    State(state): State<AppState>,
    Extension(realtime): Extension<Realtime>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<Disconnected>, ApiError> {
    let (connections, complete) = live(&state, &realtime, &principal, &id).await?;
    if !connections.is_empty() {
        close(&state, &realtime, &principal, &context, &id, &connections).await?;
    }
    Ok(Json(Disconnected { disconnected: connections.len(), complete }))
}

#[utoipa::path(delete, path = "/v1/admin/users/{id}/connections/{socket_id}", tag = "admin",
    security(("bearer" = [])), params(("id" = String, Path), ("socket_id" = String, Path)),
    responses((status = 204, description = "Disconnected"), (status = 403, description = "Not an admin"),
        (status = 404, description = "No such user, or no such live connection of theirs")))]
pub async fn admin_disconnect_one(
    State(state): State<AppState>,
    Extension(realtime): Extension<Realtime>,
    principal: Principal,
    context: RequestContext,
    Path((id, socket_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (connections, _) = live(&state, &realtime, &principal, &id).await?;
    let connection = connections.into_iter().find(|c| c.socket_id == socket_id).ok_or(ApiError::NotFound)?;
    close(&state, &realtime, &principal, &context, &id, std::slice::from_ref(&connection)).await?;
    Ok(StatusCode::NO_CONTENT)
}
