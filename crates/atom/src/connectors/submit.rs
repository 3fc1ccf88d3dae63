//! Connecting an API-key or basic-auth service (`POST /v1/connections`): the user submits
//! the template's fields (Telegram's bot token, Freshdesk's API key with its helpdesk domain
//! as a connection parameter); each is checked by its pattern, then proven against the
//! template's identity endpoint when it has one, and only then stored, encrypted, in the same
//! vault as OAuth tokens. A template whose lookup is a sign-in (Tableau's personal access
//! token) signs in first: the session token it answers is stored as the connection's access
//! token, expiring when the session is assumed to end, and [`super::refresh`] signs in again.
//!
//! Invariants: a refused credential stores nothing (the provider is asked before the
//! transaction opens); no submitted value is echoed in an error, a log line or an audit row
//! (errors name the field, never its value); the fields are kept in the encrypted
//! credentials, and the non-secret ones are also shown with the connection's parameters.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;
use zeroize::Zeroize;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::identity::{self, CallAuth};
use super::placeholders::Values;
use super::service::Connectors;
use super::template::{AuthMode, Template};
use super::vault::{self, Credentials, Obtained};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::{ApiError, FieldError};
use crate::http::{Validate, has_unprintable};
use crate::storage::connections::ConnectionRow;
use crate::storage::now_ms;

/// A credential submitted for an `api_key` or `basic` provider.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitCredential {
    /// The provider's template name.
    pub provider: String,
    /// The template's connection parameters (a helpdesk domain), name to value.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The template's fields (`fields` in `GET /v1/providers/{id}`), name to value. Secret
    /// ones are stored encrypted and never shown again.
    pub credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for SubmitCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitCredential")
            .field("provider", &self.provider)
            .field("params", &self.params)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for SubmitCredential {
    fn drop(&mut self) {
        for value in self.credentials.values_mut() {
            value.zeroize();
        }
    }
}

impl Validate for SubmitCredential {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let bad = |k: &String, v: &String| {
            k.is_empty() || k.len() > 64 || v.is_empty() || v.len() > 4096 || has_unprintable(k) || has_unprintable(v)
        };
        if self.params.len() > 20 || self.params.iter().any(|(k, v)| bad(k, v)) {
            errors.push(FieldError::new("params", "at most 20 entries of printable names and values"));
        }
        if self.credentials.is_empty() || self.credentials.len() > 20 || self.credentials.iter().any(|(k, v)| bad(k, v))
        {
            errors.push(FieldError::new("credentials", "1 to 20 entries of printable names and values"));
        }
        errors
    }
}

/// The checked values of a submission: the parameters and fields, by the template's patterns.
/// Errors name `params.<name>` or `credentials.<name>`, never a value.
pub fn check(t: &Template, request: &SubmitCredential) -> Result<Values, ApiError> {
    let mut errors = Vec::new();
    let mut values = match Values::from_params(t, &request.params) {
        Ok(values) => values,
        Err(e) => {
            errors.extend(e.into_iter().map(|e| FieldError::new(format!("params.{}", e.field), e.message)));
            Values::default()
        }
    };
    for name in request.credentials.keys() {
        if !t.fields.iter().any(|f| &f.name == name) {
            errors.push(FieldError::new(format!("credentials.{name}"), "is not a field of this provider"));
        }
    }
    for field in &t.fields {
        let path = format!("credentials.{}", field.name);
        match request.credentials.get(&field.name) {
            None => errors.push(FieldError::new(path, "is required")),
            Some(v) if !field.pattern.is_match(v) => {
                errors.push(FieldError::new(
                    path,
                    format!("does not have the form this provider issues ({})", field.label),
                ));
            }
            Some(v) if field.secret => values.insert_secret(&field.name, secrecy::SecretString::from(v.clone())),
            Some(v) => values.insert_trusted(&field.name, v.clone()),
        }
    }
    if errors.is_empty() { Ok(values) } else { Err(ApiError::Validation(errors)) }
}

/// Connects `user_id` to an API-key or basic-auth provider: checks, proves at the identity
/// endpoint, stores with its audit row. The stored connection and whether it is new.
pub async fn submit(
    connectors: &Connectors,
    t: &Template,
    user_id: &str,
    request: &SubmitCredential,
    context: &RequestContext,
) -> Result<(ConnectionRow, bool), ConnectorError> {
    let kind = match t.auth_mode {
        AuthMode::ApiKey => "api_key",
        AuthMode::Basic => "basic",
        _ => {
            return Err(ConnectError::new(
                ErrorCode::WrongAuthKind,
                format!("{} is connected through POST /v1/connections/authorize, not by submitting a credential", t.id),
            )
            .into());
        }
    };
    let mut values = check(t, request)?;
    // A sign-in (Tableau's) turns the credential into a session first: its refusal is the
    // credential's, and its values (the site id) are known before the identity call.
    let session = match t.lookup {
        Some(lookup) if lookup.signs_in() => Some(super::lookup::sign_in(connectors.http(), t, &values).await),
        _ => None,
    }
    .transpose();
    let proven = match session {
        Ok(session) => {
            if let Some(session) = &session {
                for (name, value) in &session.values {
                    values.insert_trusted(name, value.clone());
                }
                values.insert_secret("access_token", secrecy::SecretString::from(session.token.clone()));
            }
            identity::identify(connectors.http(), t, &values, CallAuth::Credential).await.map(|a| (a, session))
        }
        Err(e) => Err(e),
    };
    let (account, session) = match proven {
        Ok(proven) => proven,
        Err(e) => {
            let e = ConnectorError::from(e);
            super::flows::audit_failure(connectors, user_id, &t.id, &e, context).await;
            return Err(e);
        }
    };
    let mut params: serde_json::Map<String, serde_json::Value> =
        t.params.iter().filter_map(|p| Some((p.name.clone(), values.get(&p.name)?.into()))).collect();
    for field in t.fields.iter().filter(|f| !f.secret) {
        if let Some(v) = values.get(&field.name) {
            params.insert(field.name.clone(), v.into());
        }
    }
    let (account_id, label) = match account {
        Some(account) => (account.id, account.label),
        // Without an identity endpoint, one connection per provider and parameters.
        None => {
            let key = params.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>();
            (if key.is_empty() { "default".to_owned() } else { key.join("&") }, t.name.clone())
        }
    };
    let now = now_ms();
    // The sign-in's values are shown with the parameters (not secrets); its session token is
    // the connection's access token until it ends.
    if let Some(session) = &session {
        for (name, value) in &session.values {
            params.insert(name.clone(), value.as_str().into());
        }
    }
    let expires_at = session.as_ref().map(|s| now.saturating_add(s.lifetime_secs.saturating_mul(1000)));
    let obtained = Obtained {
        user_id: user_id.to_owned(),
        provider: t.id.clone(),
        auth_kind: kind,
        account_id,
        label,
        scopes: Vec::new(),
        params: serde_json::Value::Object(params),
        credentials: Credentials {
            fields: t
                .fields
                .iter()
                .filter_map(|f| Some((f.name.clone(), request.credentials.get(&f.name)?.clone())))
                .collect(),
            access_token: session.map(|s| s.token),
            refresh_token: None,
            token_type: None,
            token_secret: None,
        },
        expires_at,
    };
    let mut tx = connectors.db().begin().await?;
    let (row, created) = vault::store(&mut tx, &connectors.keyring(), &obtained, now).await?;
    let action = if created { "connection.created" } else { "connection.reauthorized" };
    let event = AuditEvent::new(Actor::User(user_id.to_owned()), action, Outcome::Success, context)
        .target(row.id.clone())
        .details(serde_json::json!({ "provider": row.provider, "auth_kind": kind }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok((row, created))
}
