//! Accounts: the `Email` newtype, account creation (by the system, and by registration), and
//! the caller's own account (`/v1/me`, the password change). Sign-in is in
//! [`super::signin`], the admin's view of every account in [`super::admin`]. Request bodies
//! reject unknown fields; every failing field is reported at once.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Role;
use super::{passwords, secret_hash};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::{ApiError, FieldError};
use crate::http::Validate;
use crate::storage::users::{self as sql, UserRow};
use crate::storage::{Db, now_ms};
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

impl Validate for PageQuery {}

/// The email, parsed, and every failing field of a new account's email and password.
pub(crate) fn check_fields(email: &str, password: &str) -> (Option<Email>, Vec<FieldError>) {
    let mut errors = Vec::new();
    let email = Email::parse(email).map_err(|e| errors.push(e)).ok();
    errors.extend(passwords::check_policy("password", password, email.as_ref().map_or("", Email::as_str)));
    (email, errors)
}

/// Creates an account with `role`, checking the email and the password policy.
pub(crate) async fn create_account(
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}
