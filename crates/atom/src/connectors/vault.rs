//! The vault: users' connections and their credentials, encrypted at rest.
//!
//! Credentials are one JSON document per connection, envelope-encrypted with the AAD bound to
//! (`connections`, `credentials`, connection id, user id): a value copied to another row or
//! another user does not decrypt. They leave this module only as [`Credentials`], whose
//! `Debug` shows no secret, and never through a route of this module: [`ConnectionView`] is
//! what the API shows.
//!
//! Invariants: every read or change made for a user names that user in its query, so an id
//! of someone else's connection finds nothing (a 404, never a 403 that would confirm it);
//! a change and its audit row commit together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroize;

use crate::crypto::{Aad, MasterKeyring, from_base64, to_base64};
use crate::storage::connections::{self as sql, ConnectionRow};
use crate::storage::{Db, Tx};
use crate::wire::rfc3339;

pub const TABLE: &str = "connections";
pub const COLUMN: &str = "credentials";

/// A connection's secrets. Never logged, never serialized into a response.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// An OAuth 1.0a access token's secret (the access token is `access_token`): with the
    /// consumer secret, it keys each request's HMAC-SHA1 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// A submitted credential's fields (an API key, a user name and password).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_token", &self.access_token.as_ref().map(|_| "[redacted]"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("token_secret", &self.token_secret.as_ref().map(|_| "[redacted]"))
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.access_token.zeroize();
        self.refresh_token.zeroize();
        self.token_secret.zeroize();
        for value in self.fields.values_mut() {
            value.zeroize();
        }
    }
}

impl Credentials {
    pub fn seal(
        &self,
        keyring: &MasterKeyring,
        connection_id: &str,
        user_id: &str,
    ) -> Result<String, crate::crypto::CryptoError> {
        let mut json = serde_json::to_vec(self).unwrap_or_default();
        let sealed = keyring.encrypt(&Aad::new(TABLE, COLUMN, connection_id, user_id), &json);
        json.zeroize();
        Ok(to_base64(&sealed?))
    }

    pub fn open(keyring: &MasterKeyring, row: &ConnectionRow) -> Result<Self, crate::crypto::CryptoError> {
        let stored = from_base64(&row.credentials)?;
        let plain = keyring.decrypt(&Aad::new(TABLE, COLUMN, &row.id, &row.user_id), &stored)?;
        serde_json::from_slice(&plain).map_err(|_| crate::crypto::CryptoError::Malformed("credentials are not JSON"))
    }
}

/// A connection as its owner sees it: no credential.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub provider: String,
    /// `oauth2`, `oauth1`, `api_key` or `basic`.
    pub auth_kind: String,
    /// Who the connection is at the provider (an email, a workspace name).
    pub label: String,
    /// `active`, or `needs_reauth` when the user must authorize again.
    pub status: String,
    pub scopes: Vec<String>,
    /// The connection parameters and the values kept from the flow (an instance URL).
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// When the access token expires; none for credentials that do not.
    pub expires_at: Option<String>,
    pub last_refresh_at: Option<String>,
    /// `code: description` of the last failure, scrubbed of anything credential-like.
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&ConnectionRow> for ConnectionView {
    fn from(row: &ConnectionRow) -> Self {
        Self {
            id: row.id.clone(),
            provider: row.provider.clone(),
            auth_kind: row.auth_kind.clone(),
            label: row.label.clone(),
            status: row.status.clone(),
            scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
            params: serde_json::from_str(&row.params).unwrap_or_else(|_| serde_json::json!({})),
            expires_at: row.expires_at.map(rfc3339),
            last_refresh_at: row.last_refresh_at.map(rfc3339),
            last_error: row.last_error.clone(),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// The user's connection `id`, or `None` when the user has no such connection.
pub async fn get_for_user(db: &Db, user_id: &str, id: &str) -> Result<Option<ConnectionRow>, sqlx::Error> {
    Ok(sql::by_id(db, id).await?.filter(|row| row.user_id == user_id))
}

/// The user's connections, newest first (a user has a handful; 500 is the cap shown).
pub async fn list_for_user(db: &Db, user_id: &str) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    sql::list_for_user(db, user_id, 500).await
}

/// What a finished flow brings, to store as a new connection or over the one of the same
/// provider account.
#[derive(Debug)]
pub struct Obtained {
    pub user_id: String,
    pub provider: String,
    pub auth_kind: &'static str,
    pub account_id: String,
    pub label: String,
    pub scopes: Vec<String>,
    pub params: serde_json::Value,
    pub credentials: Credentials,
    pub expires_at: Option<i64>,
}

/// Stores `obtained` inside `tx`: a new connection, or the same provider account's existing
/// one updated. The stored row and whether it was new.
pub async fn store(
    tx: &mut Tx,
    keyring: &MasterKeyring,
    obtained: &Obtained,
    now: i64,
) -> Result<(ConnectionRow, bool), crate::connectors::ConnectorError> {
    let existing = sql::by_account(tx, &obtained.user_id, &obtained.provider, &obtained.account_id).await?;
    let created = existing.is_none();
    let id = existing.as_ref().map_or_else(|| uuid::Uuid::new_v4().to_string(), |row| row.id.clone());
    let credentials = obtained.credentials.seal(keyring, &id, &obtained.user_id)?;
    let row = ConnectionRow {
        id,
        user_id: obtained.user_id.clone(),
        provider: obtained.provider.clone(),
        auth_kind: obtained.auth_kind.to_owned(),
        account_id: obtained.account_id.clone(),
        label: obtained.label.clone(),
        status: "active".to_owned(),
        scopes: obtained.scopes.join(" "),
        params: obtained.params.to_string(),
        credentials,
        expires_at: obtained.expires_at,
        last_refresh_at: existing.as_ref().and_then(|row| row.last_refresh_at),
        last_error: None,
        created_at: existing.as_ref().map_or(now, |row| row.created_at),
        updated_at: now,
    };
    if created {
        sql::insert_connection(tx, &row).await?;
    } else {
        sql::update_reconnected(tx, &row).await?;
    }
    Ok((row, created))
}
