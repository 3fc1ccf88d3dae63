//! The caller's own account: registration, `/v1/me`, the password change and the account's
//! deletion.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::EventKind;
use crate::config::Registration;
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Validate};
use crate::identity::auth::{Principal, Role};
use crate::identity::passwords;
use crate::state::AppState;
use crate::storage::users::{self as sql};
use crate::storage::{now_ms, sessions as session_sql};

use crate::identity::accounts::{UserView, check_fields, create_account};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub invite_code: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    /// The account's current password, confirming the deletion.
    pub password: String,
}

impl Validate for DeleteAccountRequest {}
impl Validate for RegisterRequest {}
impl Validate for ChangePasswordRequest {}

#[utoipa::path(post, path = "/v1/auth/register", tag = "identity", request_body = RegisterRequest,
    responses((status = 201, body = UserView), (status = 403, description = "Registration is off"),
        (status = 409, description = "Email taken"), (status = 422, description = "Invalid fields")))]
pub async fn register(
    State(state): State<AppState>,
    context: RequestContext,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let invite = match state.identity.settings.registration {
        Registration::Off => return Err(ApiError::Forbidden("Registration is closed.".to_owned())),
        Registration::Open => None,
        Registration::Invite if body.invite_code.is_none() => {
            // Report the other fields too: every failing field in one answer.
            let mut errors = vec![FieldError::new("invite_code", "is required to register")];
            errors.extend(check_fields(&body.email, &body.password).1);
            return Err(ApiError::Validation(errors));
        }
        Registration::Invite => body.invite_code.as_deref(),
    };
    let user = create_account(
        &state.db,
        &body.email,
        SecretString::from(body.password),
        Role::User,
        invite,
        Actor::Anonymous,
        &context,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

#[utoipa::path(get, path = "/v1/me", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, description = "Not authenticated")))]
pub async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<UserView>, ApiError> {
    let user = sql::by_id(&state.db, &principal.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(UserView::from(&user)))
}

#[utoipa::path(post, path = "/v1/me/password", tag = "identity", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 204, description = "Changed; every session is signed out"),
        (status = 422, description = "Wrong current password or weak new one")))]
pub async fn change_password(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let user = sql::by_id(&state.db, &principal.user_id).await?.ok_or(ApiError::NotFound)?;
    let mut errors = passwords::check_policy("new_password", &body.new_password, &user.email);
    let current_ok = passwords::verify(Some(user.password_hash.clone()), SecretString::from(body.current_password))
        .await
        .map_err(ApiError::internal)?;
    if !current_ok {
        errors.insert(0, FieldError::new("current_password", "is not the current password"));
    }
    if !errors.is_empty() {
        audit::record_alone(
            &state.db,
            AuditEvent::new(principal.actor(), "account.password_changed", Outcome::Failure, &context)
                .target(user.id.clone()),
        )
        .await?;
        return Err(ApiError::Validation(errors));
    }
    let hash = passwords::hash(SecretString::from(body.new_password)).await.map_err(ApiError::internal)?;
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    sql::set_password(&mut tx, &user.id, &hash, now).await?;
    let revoked = session_sql::revoke_user(&mut tx, &user.id, now).await?;
    let event = AuditEvent::new(principal.actor(), "account.password_changed", Outcome::Success, &context)
        .target(user.id.clone())
        .details(serde_json::json!({ "revoked_sessions": revoked }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    state.identity.credentials_revoked(&user.id, EventKind::SessionsRevoked).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/v1/me", tag = "identity", security(("bearer" = [])),
    request_body = DeleteAccountRequest,
    responses((status = 200, body = super::admin::AccountDeleted,
            description = "Deleted: every connection revoked at its provider, the account's data erased, its sessions and sockets ended"),
        (status = 409, description = "The last admin"),
        (status = 422, description = "Wrong password")))]
pub async fn delete_me(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Json(body): Json<DeleteAccountRequest>,
) -> Result<Json<super::admin::AccountDeleted>, ApiError> {
    let user = sql::by_id(&state.db, &principal.user_id).await?.ok_or(ApiError::NotFound)?;
    let ok = passwords::verify(Some(user.password_hash.clone()), SecretString::from(body.password))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        audit::record_alone(
            &state.db,
            AuditEvent::new(principal.actor(), "account.deleted", Outcome::Failure, &context).target(user.id.clone()),
        )
        .await?;
        return Err(ApiError::Validation(vec![FieldError::new("password", "is not the current password")]));
    }
    if Role::parse(&user.role) == Role::Admin && sql::count_active_admins(&state.db).await? <= 1 {
        return Err(ApiError::Conflict {
            field: "role".to_owned(),
            message: "the last admin cannot delete their account; make another admin first".to_owned(),
        });
    }
    Ok(Json(super::admin::delete_account(&state, principal.actor(), &context, &user.id).await?))
}
