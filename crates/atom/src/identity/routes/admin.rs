//! The admin's view of every account: the list, disabling, enabling and deleting an account,
//! and invites. Every route needs the admin role (and from an API key its `admin` scope); every
//! change is audited in its own transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::EventKind;
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Query, Validate};
use crate::identity::accounts::{Email, PageQuery, UserView};
use crate::identity::auth::Principal;
use crate::identity::{random_secret, secret_hash};
use crate::state::AppState;
use crate::storage::users::{self as sql, InviteRow};
use crate::storage::{now_ms, sessions as session_sql};
use crate::wire::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<UserView>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = UserPage), (status = 403, description = "Not an admin")))]
pub async fn admin_list_users(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<Json<UserPage>, ApiError> {
    principal.require_admin()?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new("limit", "must be between 1 and 200")]));
    }
    let rows = sql::list(&state.db, page.cursor.as_deref(), i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    let users: Vec<UserView> = rows.iter().take(limit as usize).map(UserView::from).collect();
    let next_cursor = if more { users.last().map(|u| u.email.clone()) } else { None };
    Ok(Json(UserPage { users, next_cursor }))
}

async fn set_disabled(
    state: &AppState,
    principal: &Principal,
    context: &RequestContext,
    id: &str,
    disable: bool,
) -> Result<Json<UserView>, ApiError> {
    principal.require_admin()?;
    if disable && id == principal.user_id {
        return Err(ApiError::BadRequest("An admin cannot disable their own account.".to_owned()));
    }
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    if sql::set_disabled(&mut tx, id, disable.then_some(now), now).await? == 0 {
        return Err(ApiError::NotFound);
    }
    let revoked = if disable { session_sql::revoke_user(&mut tx, id, now).await? } else { 0 };
    let action = if disable { "account.disabled" } else { "account.enabled" };
    let event = AuditEvent::new(principal.actor(), action, Outcome::Success, context)
        .target(id.to_owned())
        .details(serde_json::json!({ "revoked_sessions": revoked }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    if disable {
        state.identity.credentials_revoked(id, EventKind::AccountDisabled).await;
    } else {
        state.identity.forget_user_status(id).await;
    }
    let user = sql::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(UserView::from(&user)))
}

#[utoipa::path(post, path = "/v1/admin/users/{id}/disable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = UserView), (status = 404)))]
pub async fn admin_disable(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(&state, &principal, &context, &id, true).await
}

#[utoipa::path(post, path = "/v1/admin/users/{id}/enable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = UserView), (status = 404)))]
pub async fn admin_enable(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    set_disabled(&state, &principal, &context, &id, false).await
}

/// What deleting an account did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountDeleted {
    pub id: String,
    /// The account's connections, deleted with it.
    pub connections_deleted: usize,
    /// Of those, the ones whose provider could not revoke the grant (recorded in the audit log).
    pub connections_not_revoked: usize,
}

/// Deletes account `id` (the admin route and the user's own, once each checked who may):
/// every connection revoked at its provider first (best effort), then in one transaction the
/// connections deleted, the account's data erased and its row made a tombstone
/// ([`sql::delete_account`]), audited; then its live sockets and cached status are dropped
/// (the bus's `AccountDisabled`). A failure before the commit leaves everything stored as it was.
pub(super) async fn delete_account(
    state: &AppState,
    actor: Actor,
    context: &RequestContext,
    id: &str,
) -> Result<AccountDeleted, ApiError> {
    let user = sql::by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let revoked = state.connectors.revoke_all(id).await.map_err(api_error)?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    state.connectors.delete_revoked(&mut tx, id, &revoked, &actor, context).await.map_err(api_error)?;
    if sql::delete_account(&mut tx, id, now).await? == 0 {
        return Err(ApiError::NotFound);
    }
    let not_revoked = revoked.iter().filter(|(_, failure)| failure.is_some()).count();
    let event = AuditEvent::new(actor, "account.deleted", Outcome::Success, context).target(id.to_owned()).details(
        serde_json::json!({
            "role": user.role,
            "connections_deleted": revoked.len(),
            "connections_not_revoked": not_revoked,
        }),
    );
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    state.identity.credentials_revoked(id, EventKind::AccountDisabled).await;
    Ok(AccountDeleted { id: id.to_owned(), connections_deleted: revoked.len(), connections_not_revoked: not_revoked })
}

fn api_error(e: crate::connectors::ConnectorError) -> ApiError {
    match e {
        crate::connectors::ConnectorError::Api(e) => e,
        crate::connectors::ConnectorError::Connect(e) => ApiError::internal(e),
    }
}

#[utoipa::path(delete, path = "/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = AccountDeleted, description = "Deleted: connections revoked, data erased"),
        (status = 400, description = "An admin's own account"), (status = 403), (status = 404)))]
pub async fn admin_delete_user(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<AccountDeleted>, ApiError> {
    principal.require_admin()?;
    if id == principal.user_id {
        return Err(ApiError::BadRequest(
            "An admin deletes their own account at DELETE /v1/me, with their password.".to_owned(),
        ));
    }
    Ok(Json(delete_account(&state, principal.actor(), &context, &id).await?))
}

impl Validate for InviteRequest {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Restrict the invite to this email.
    #[serde(default)]
    pub email: Option<String>,
    /// 1 to 720 hours; default 72.
    #[serde(default)]
    pub ttl_hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteResponse {
    /// Shown once.
    pub invite_code: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/v1/admin/invites", tag = "admin", security(("bearer" = [])), request_body = InviteRequest,
    responses((status = 201, body = InviteResponse)))]
pub async fn admin_invite(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Json(body): Json<InviteRequest>,
) -> Result<(StatusCode, Json<InviteResponse>), ApiError> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let email = body.email.as_deref().map(Email::parse).transpose().map_err(|e| errors.push(e)).ok().flatten();
    let ttl_hours = body.ttl_hours.unwrap_or(72);
    if !(1..=720).contains(&ttl_hours) {
        errors.push(FieldError::new("ttl_hours", "must be between 1 and 720"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let code = format!("atom_inv_{}", random_secret());
    let now = now_ms();
    let invite = InviteRow {
        code_hash: secret_hash(&code),
        created_by: principal.user_id.clone(),
        email: email.map(|e| e.as_str().to_owned()),
        created_at: now,
        expires_at: now + i64::from(ttl_hours) * 3_600_000,
        used_at: None,
    };
    let mut tx = state.db.begin().await?;
    sql::insert_invite(&mut tx, &invite).await?;
    let event = AuditEvent::new(principal.actor(), "account.invite_created", Outcome::Success, &context)
        .details(serde_json::json!({ "email": invite.email, "ttl_hours": ttl_hours }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(InviteResponse { invite_code: code, expires_at: rfc3339(invite.expires_at) })))
}
