//! Accounts: the `Email` newtype, account creation (by the system, and by registration), and
//! the caller's own account (`/v1/me`, the password change). Sign-in is in
//! [`super::signin`], the admin's view of every account in [`super::admin`]. Request bodies
//! reject unknown fields; every failing field is reported at once.

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Principal, Role};
use super::{passwords, secret_hash};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::EventKind;
use crate::config::Registration;
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Validate};
use crate::state::AppState;
use crate::storage::users::{self as sql, UserRow};
use crate::storage::{Db, now_ms, sessions as session_sql};
use crate::wire::rfc3339;

/// An email address, trimmed and lower-cased, checked for a plausible shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = || FieldError::new("email", "must be an email address");
        if email.len() > 254 || email.chars().any(char::is_whitespace) || crate::http::has_unprintable(&email) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain.contains('.') {
            return Err(invalid());
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An account as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
    pub disabled: bool,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            role: Role::parse(&u.role),
            created_at: rfc3339(u.created_at),
            disabled: u.disabled_at.is_some(),
        }
    }
}

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

impl Validate for RegisterRequest {}
impl Validate for ChangePasswordRequest {}
impl Validate for PageQuery {}

/// The email, parsed, and every failing field of a new account's email and password.
fn check_fields(email: &str, password: &str) -> (Option<Email>, Vec<FieldError>) {
    let mut errors = Vec::new();
    let email = Email::parse(email).map_err(|e| errors.push(e)).ok();
    errors.extend(passwords::check_policy("password", password, email.as_ref().map_or("", Email::as_str)));
    (email, errors)
}

/// Creates an account with `role`, checking the email and the password policy.
async fn create_account(
    db: &Db,
    email: &str,
    password: SecretString,
    role: Role,
    invite: Option<&str>,
    actor: Actor,
    context: &RequestContext,
) -> Result<UserRow, ApiError> {
    use secrecy::ExposeSecret;
    let (email, errors) = check_fields(email, password.expose_secret());
    let Some(email) = email.filter(|_| errors.is_empty()) else { return Err(ApiError::Validation(errors)) };
    let password_hash = passwords::hash(password).await.map_err(ApiError::internal)?;
    let now = now_ms();
    let user = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.as_str().to_owned(),
        password_hash,
        role: role.as_str().to_owned(),
        created_at: now,
        updated_at: now,
        password_changed_at: now,
        disabled_at: None,
    };
    let invite_hash = invite.map(secret_hash);
    let mut tx = db.begin().await?;
    // The invite first: a code that does not admit this email gets the same answer whether
    // or not the email is registered, so a bogus code cannot probe for accounts. A failure
    // below drops the transaction, and the claim with it.
    if let Some(code_hash) = &invite_hash
        && !sql::claim_invite(&mut tx, code_hash, email.as_str(), now).await?
    {
        return Err(ApiError::Validation(vec![FieldError::new("invite_code", "is not valid for this email")]));
    }
    sql::insert(&mut tx, &user).await.map_err(|e| match ApiError::from(e) {
        ApiError::Conflict { .. } => {
            ApiError::Conflict { field: "email".to_owned(), message: "is already registered".to_owned() }
        }
        other => other,
    })?;
    if let Some(code_hash) = &invite_hash {
        sql::set_invite_user(&mut tx, code_hash, &user.id).await?;
    }
    let event = AuditEvent::new(actor, "account.created", Outcome::Success, context)
        .target(user.id.clone())
        .details(serde_json::json!({ "role": role.as_str(), "invited": invite.is_some() }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(user)
}

/// Why an account could not be created by the system (CLI, bootstrap, tests).
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    /// The email or password breaks a rule; the text names each field and rule.
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email exists")]
    Exists,
    #[error("the account could not be stored")]
    Storage(#[source] ApiError),
}

/// Creates an admin account (for `atom admin create` and the bootstrap admin).
pub async fn create_admin(db: &Db, email: &str, password: SecretString) -> Result<UserRow, CreateAccountError> {
    create_with_role(db, email, password, Role::Admin).await
}

/// Creates an account with `role` as the system (CLI, bootstrap, tests).
pub async fn create_with_role(
    db: &Db,
    email: &str,
    password: SecretString,
    role: Role,
) -> Result<UserRow, CreateAccountError> {
    create_account(db, email, password, role, None, Actor::System, &RequestContext::default()).await.map_err(
        |e| match e {
            ApiError::Validation(errors) => CreateAccountError::Invalid(
                errors.iter().map(|e| format!("{} {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
            ),
            ApiError::Conflict { .. } => CreateAccountError::Exists,
            other => CreateAccountError::Storage(other),
        },
    )
}

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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}
