//! The instance's own OAuth app at each provider (client id, client secret, extra settings),
//! from configuration (`[connectors.apps.<provider>]`, the secret read from the environment
//! variable it names) or set by an admin through the API (the secret encrypted at rest, owner
//! `system`).
//!
//! One source per provider: an app in configuration is the operator's, and the API refuses to
//! change it. Invariant: no function here returns the secret to a caller outside the flows;
//! [`AppView`] says only that there is one.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::exchange::ClientApp;
use crate::config::ConnectorsConfig;
use crate::crypto::{Aad, MasterKeyring, from_base64, to_base64};
use crate::error::{ApiError, FieldError};
use crate::http::{Validate, has_unprintable};
use crate::storage::connections::{self as sql, AppRow};
use crate::storage::webhooks as webhooks_sql;
use crate::storage::{Db, Tx};
use crate::wire::rfc3339;

pub use super::{CALLBACK_PATH, callback_url};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetApp {
    /// 1 to 500 printable characters.
    pub client_id: String,
    /// 1 to 2000 characters; stored encrypted, never shown again.
    pub client_secret: String,
    /// Extra non-secret settings the provider's template reads (a tenant, a region).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The secret the provider signs its webhooks with (Slack's signing secret, a GitHub
    /// webhook secret, Stripe's or Standard Webhooks' `whsec_…`): 1 to 2000 characters, stored
    /// encrypted, never shown again. Setting the app without it removes a stored one.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl Validate for SetApp {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.client_id.trim().is_empty() || self.client_id.len() > 500 || has_unprintable(&self.client_id) {
            errors.push(FieldError::new("client_id", "must be 1 to 500 printable characters"));
        }
        if self.client_secret.is_empty()
            || self.client_secret.len() > 2000
            || self.client_secret.chars().any(char::is_control)
        {
            errors.push(FieldError::new("client_secret", "must be 1 to 2000 characters without control characters"));
        }
        if self.settings.len() > 20
            || self.settings.iter().any(|(k, v)| k.is_empty() || k.len() > 100 || v.len() > 1000 || has_unprintable(v))
        {
            errors.push(FieldError::new("settings", "at most 20 printable entries"));
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|w| w.is_empty() || w.len() > 2000 || w.chars().any(char::is_control))
        {
            errors.push(FieldError::new("webhook_secret", "must be 1 to 2000 characters without control characters"));
        }
        errors
    }
}

/// An app as the admin API shows it: never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppView {
    pub provider: String,
    pub client_id: String,
    pub settings: BTreeMap<String, String>,
    /// Always true: an app cannot be set without one. The secret itself is never shown.
    pub has_client_secret: bool,
    /// Whether a webhook signing secret is set (never the secret itself).
    pub has_webhook_secret: bool,
    /// `api` (set through this API) or `config` (from the configuration; read-only here).
    pub source: String,
    /// The redirect URI to register at the provider: `ATOM_PUBLIC_URL` + `/v1/connections/callback`.
    /// Absent while the public URL is not configured.
    pub callback_url: Option<String>,
    pub updated_at: Option<String>,
}

/// The resolved app a flow uses.
#[derive(Debug, Clone)]
pub struct App {
    pub client: ClientApp,
    pub settings: BTreeMap<String, String>,
}

fn aad(provider: &str) -> Aad<'_> {
    Aad::new("provider_apps", "client_secret", provider, "system")
}

/// The app for `provider`: configuration first, then the API's.
pub async fn resolve(
    db: &Db,
    keyring: &MasterKeyring,
    config: &ConnectorsConfig,
    provider: &str,
) -> Result<Option<App>, ApiError> {
    if let Some(app) = config.apps.get(provider) {
        // Read at each use, so that a secret rotated in the environment of a restarted
        // process is picked up; a variable that is unset is a configuration to finish.
        let secret = match &app.client_secret_env {
            Some(var) => match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => secret,
                _ => return Ok(None),
            },
            None => String::new(),
        };
        return Ok(Some(App {
            client: ClientApp { client_id: app.client_id.clone(), client_secret: SecretString::from(secret) },
            settings: app.settings.clone(),
        }));
    }
    let Some(row) = sql::app(db, provider).await? else { return Ok(None) };
    let stored = from_base64(&row.client_secret).map_err(ApiError::internal)?;
    let plain = keyring.decrypt(&aad(provider), &stored).map_err(ApiError::internal)?;
    let secret = Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(ApiError::internal)?);
    Ok(Some(App {
        client: ClientApp { client_id: row.client_id, client_secret: SecretString::from(secret.as_str()) },
        settings: serde_json::from_str(&row.settings).unwrap_or_default(),
    }))
}

/// The admin's view of `provider`'s app.
pub async fn view(
    db: &Db,
    config: &ConnectorsConfig,
    public_url: Option<&str>,
    provider: &str,
) -> Result<Option<AppView>, ApiError> {
    let callback_url = callback_url(public_url);
    if let Some(app) = config.apps.get(provider) {
        return Ok(Some(AppView {
            provider: provider.to_owned(),
            client_id: app.client_id.clone(),
            settings: app.settings.clone(),
            has_client_secret: app.client_secret_env.is_some(),
            has_webhook_secret: app.webhook_secret_env.is_some(),
            source: "config".to_owned(),
            callback_url,
            updated_at: None,
        }));
    }
    let has_webhook_secret = webhooks_sql::secret(db, provider).await?.is_some();
    Ok(sql::app(db, provider).await?.map(|row| AppView {
        provider: row.provider,
        client_id: row.client_id,
        settings: serde_json::from_str(&row.settings).unwrap_or_default(),
        has_client_secret: true,
        has_webhook_secret,
        source: "api".to_owned(),
        callback_url,
        updated_at: Some(rfc3339(row.updated_at)),
    }))
}

/// Refuses to change an app that configuration sets.
pub fn ensure_not_configured(config: &ConnectorsConfig, provider: &str) -> Result<(), ApiError> {
    if config.apps.contains_key(provider) {
        return Err(ApiError::Conflict {
            field: "provider".to_owned(),
            message: "this provider's app is set in the configuration ([connectors.apps]); change it there".to_owned(),
        });
    }
    Ok(())
}

/// Stores `app` for `provider` inside `tx`, the secret encrypted.
pub async fn store(
    tx: &mut Tx,
    keyring: &MasterKeyring,
    provider: &str,
    app: &SetApp,
    now: i64,
) -> Result<(), ApiError> {
    let sealed = keyring.encrypt(&aad(provider), app.client_secret.as_bytes()).map_err(ApiError::internal)?;
    let row = AppRow {
        provider: provider.to_owned(),
        client_id: app.client_id.trim().to_owned(),
        client_secret: to_base64(&sealed),
        settings: serde_json::to_string(&app.settings).unwrap_or_else(|_| "{}".to_owned()),
        created_at: now,
        updated_at: now,
    };
    sql::upsert_app(tx, &row).await?;
    match &app.webhook_secret {
        Some(secret) => {
            let sealed = keyring.encrypt(&webhook_aad(provider), secret.as_bytes()).map_err(ApiError::internal)?;
            webhooks_sql::upsert_secret(tx, provider, &to_base64(&sealed), now).await?;
        }
        None => webhooks_sql::delete_secret(tx, provider).await?,
    }
    Ok(())
}

fn webhook_aad(provider: &str) -> Aad<'_> {
    Aad::new("provider_webhook_secrets", "secret", provider, "system")
}

/// The secret `provider` signs its webhooks with: configuration first (the environment
/// variable `webhook_secret_env` names, read at each use), then the API's; `None` when
/// neither is set.
pub async fn webhook_secret(
    db: &Db,
    keyring: &MasterKeyring,
    config: &ConnectorsConfig,
    provider: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    if let Some(app) = config.apps.get(provider) {
        return Ok(app
            .webhook_secret_env
            .as_ref()
            .and_then(|var| std::env::var(var).ok())
            .filter(|secret| !secret.is_empty())
            .map(|secret| Zeroizing::new(secret.into_bytes())));
    }
    let Some(row) = webhooks_sql::secret(db, provider).await? else { return Ok(None) };
    let stored = from_base64(&row.secret).map_err(ApiError::internal)?;
    Ok(Some(keyring.decrypt(&webhook_aad(provider), &stored).map_err(ApiError::internal)?))
}
