//! Sign-in routes: login, refresh (rotating the refresh token) and logout, each answering a
//! new session's tokens or ending one. The session logic itself is in [`crate::identity::sessions`].

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::http::{Json, Validate};
use crate::identity::accounts::UserView;
use crate::identity::{passwords, secret_hash, sessions, throttle};
use crate::state::AppState;
use crate::storage::now_ms;
use crate::storage::users::{self as sql, UserRow};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl Validate for LoginRequest {}
impl Validate for RefreshRequest {}

/// A new session: a short-lived access token and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub user: UserView,
}

async fn token_response(
    state: &AppState,
    user: &UserRow,
    session: sessions::Issued,
) -> Result<Json<TokenResponse>, ApiError> {
    let tokens = state.identity.tokens().await;
    let (access_token, claims) =
        tokens.issue_for_session(&user.id, &session.session_id, vec![user.role.clone()]).map_err(ApiError::internal)?;
    let refresh_token = session.refresh_token;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp.saturating_sub(claims.iat),
        refresh_token,
        refresh_expires_in: state.identity.settings.refresh_ttl_secs,
        user: UserView::from(user),
    }))
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "identity", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "Wrong email or password"),
        (status = 429, description = "Locked after repeated failures")))]
pub async fn login(
    State(state): State<AppState>,
    context: RequestContext,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let settings = &state.identity.settings;
    let email = body.email.trim().to_lowercase();
    let account_key = throttle::account_key(&email);
    let mut keys = vec![(account_key.clone(), settings.lockout_threshold)];
    if let Some(addr) = throttle::addr_key(&context) {
        keys.push((addr, settings.lockout_addr_threshold));
    }
    let key_names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    throttle::check(&state.db, &key_names, now_ms()).await?;
    crate::edge::limit_account(&state.edge, &email).await?;

    let user = if email.len() <= 254 { sql::by_email(&state.db, &email).await? } else { None };
    let password = SecretString::from(body.password);
    let verified = passwords::verify(user.as_ref().map(|u| u.password_hash.clone()), password)
        .await
        .map_err(ApiError::internal)?;
    let enabled = user.as_ref().is_some_and(|u| u.disabled_at.is_none());

    let mut tx = state.db.begin().await?;
    let Some(user) = user.filter(|_| verified && enabled) else {
        let failures = throttle::record_failure(&mut tx, settings, &keys, now_ms(), &context).await?;
        let event = AuditEvent::new(Actor::Anonymous, "auth.login", Outcome::Failure, &context)
            .details(serde_json::json!({ "account_key": secret_hash(&account_key)[..16] }));
        audit::record(&mut tx, event).await?;
        tx.commit().await?;
        tokio::time::sleep(throttle::slowdown(failures)).await;
        return Err(ApiError::Unauthorized { error: "", description: "Wrong email or password." });
    };
    throttle::clear(&mut tx, &account_key).await?;
    let session = sessions::issue(&mut tx, settings, &user.id, None, &context).await?;
    audit::record(&mut tx, AuditEvent::new(Actor::User(user.id.clone()), "auth.login", Outcome::Success, &context))
        .await?;
    tx.commit().await?;
    token_response(&state, &user, session).await
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "identity", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "Invalid, expired, revoked or reused")))]
pub async fn refresh(
    State(state): State<AppState>,
    context: RequestContext,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let rotated = sessions::rotate(&state.identity, &body.refresh_token, &context).await?;
    let user = sql::by_id(&state.db, &rotated.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or(ApiError::Unauthorized { error: "invalid_token", description: "The account is disabled." })?;
    token_response(&state, &user, rotated.issued).await
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "identity", request_body = RefreshRequest,
    responses((status = 204, description = "The session (refresh-token family) is revoked")))]
pub async fn logout(
    State(state): State<AppState>,
    context: RequestContext,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    sessions::revoke(&state.identity, &body.refresh_token, &context).await?;
    Ok(StatusCode::NO_CONTENT)
}
