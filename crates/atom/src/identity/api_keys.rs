//! API keys for machine clients (the agent workers): `atom_sk_<prefix>_<secret>`, shown once
//! at creation, stored as SHA-256, found by their prefix (through the cache, which a
//! revocation invalidates), compared in constant time, acting as their owner within their
//! scopes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::secret_hash;
use crate::cache::{Cache, Namespace};
use crate::error::{ApiError, FieldError};
use crate::http::{Validate, has_unprintable};
use crate::storage::api_keys::{self as sql, ApiKeyRow};
use crate::storage::{Db, now_ms};
use crate::wire::rfc3339;

pub const API_KEY_PREFIX: &str = "atom_sk_";
/// Scopes a key may carry. `api` is the ordinary API as its owner; `admin` additionally
/// allows admin routes when the owner is an admin; `connections:use` lets the key use its
/// owner's connections (their tokens, the proxy), optionally only those of some providers;
/// `agent` lets the key's connections act as an agent in their owner's conversations (the
/// `agent:*` Socket.io events, messages marked as the agent's: see
/// [`crate::conversations::agent`]).
pub const SCOPES: &[&str] = &["api", "admin", CONNECTIONS_USE, AGENT_SCOPE];
/// The scope that lets a key use its owner's connections.
pub const CONNECTIONS_USE: &str = "connections:use";
/// The most providers one key may be limited to.
const MAX_PROVIDERS: usize = 100;
/// The scope of agent workers' keys.
pub const AGENT_SCOPE: &str = "agent";

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// 1 to 100 printable characters: no control, format (bidirectional, zero-width, byte
    /// order mark) or separator characters.
    pub name: String,
    /// Default `["api"]`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Days until the key stops working, 1 to 3650; none means no expiry.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// With the `connections:use` scope: the provider ids (e.g. `["slack", "github"]`) whose
    /// connections the key may use; none means every provider.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
}

/// Whether `s` has the shape of a provider id (`[a-z0-9_-]`, 1 to 64 characters).
fn is_provider_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Validate for CreateApiKey {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || has_unprintable(name) {
            errors.push(FieldError::new("name", "must be 1 to 100 printable characters"));
        }
        if let Some(scopes) = &self.scopes
            && (scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())))
        {
            errors.push(FieldError::new("scopes", format!("must be a non-empty list of {}", SCOPES.join(", "))));
        }
        if let Some(providers) = &self.providers {
            let scoped = self.scopes.as_ref().is_some_and(|s| s.iter().any(|s| s == CONNECTIONS_USE));
            if !scoped {
                errors.push(FieldError::new("providers", "applies only to a key with the connections:use scope"));
            } else if providers.is_empty()
                || providers.len() > MAX_PROVIDERS
                || providers.iter().any(|p| !is_provider_id(p))
            {
                errors.push(FieldError::new("providers", "must be a list of 1 to 100 provider ids ([a-z0-9_-])"));
            }
        }
        if self.expires_in_days.is_some_and(|d| !(1..=3650).contains(&d)) {
            errors.push(FieldError::new("expires_in_days", "must be between 1 and 3650"));
        }
        errors
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The non-secret start of the key, to recognise it by.
    pub prefix: String,
    pub scopes: Vec<String>,
    /// The providers a `connections:use` key is limited to; absent for every provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub providers: Option<Vec<String>>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

impl From<&ApiKeyRow> for ApiKeyView {
    fn from(k: &ApiKeyRow) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: format!("{API_KEY_PREFIX}{}", k.prefix),
            scopes: k.scopes.split_whitespace().map(str::to_owned).collect(),
            providers: k.providers.as_deref().map(|p| p.split_whitespace().map(str::to_owned).collect()),
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            expires_at: k.expires_at.map(rfc3339),
            revoked: k.revoked_at.is_some(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The whole key. It is shown only this once.
    pub key: String,
    #[serde(flatten)]
    pub api_key: ApiKeyView,
}

fn invalid_key() -> ApiError {
    ApiError::Unauthorized { error: "invalid_token", description: "The API key is invalid, expired or revoked." }
}

/// What authenticating a key needs of its row; cached under [`Namespace::API_KEY`] by the
/// key's prefix. It holds the SHA-256 of the key, as the database does, never the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub id: String,
    pub user_id: String,
    pub key_hash: String,
    /// Space-separated.
    pub scopes: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Space-separated provider ids a `connections:use` key is limited to. Defaulted, so
    /// that entries cached before the field existed still read.
    #[serde(default)]
    pub providers: Option<String>,
}

impl From<ApiKeyRow> for StoredKey {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            key_hash: row.key_hash,
            scopes: row.scopes,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            providers: row.providers,
        }
    }
}

/// How often a key's `last_used_at` is written at most.
const USE_RECORDED_EVERY: Duration = Duration::from_secs(60);

/// Records that keys were used at most once a minute per key and node, so a busy key costs
/// one UPDATE a minute rather than a statement on every request (a write lock on SQLite).
pub struct UseRecorder {
    recent: moka::sync::Cache<String, ()>,
}

impl std::fmt::Debug for UseRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UseRecorder").field("recent", &self.recent.entry_count()).finish()
    }
}

impl UseRecorder {
    pub fn new(max_keys: u64) -> Self {
        Self { recent: moka::sync::Cache::builder().max_capacity(max_keys).time_to_live(USE_RECORDED_EVERY).build() }
    }

    async fn record(&self, db: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
        if self.recent.contains_key(id) {
            return Ok(());
        }
        sql::touch(db, id, now).await?;
        self.recent.insert(id.to_owned(), ());
        Ok(())
    }
}

/// The stored key's public prefix in `presented`, if it has the shape of one of our keys.
fn prefix_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(API_KEY_PREFIX)?;
    let (prefix, _) = rest.split_once('_')?;
    (prefix.len() == 12 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && presented.len() <= 128).then_some(prefix)
}

/// Whether `presented` is the live key `key` at `now` (ms): its hash, compared in constant
/// time, and neither revoked nor expired.
fn accepts(key: &StoredKey, presented: &str, now: i64) -> bool {
    let matches: bool = secret_hash(presented).as_bytes().ct_eq(key.key_hash.as_bytes()).into();
    matches && key.revoked_at.is_none() && key.expires_at.is_none_or(|e| e > now)
}

/// [`verify`] without awaiting, when the key is cached in process and its use was recorded
/// recently; `None` means "call [`verify`]", not "refused".
pub fn verify_cached(cache: &Cache, key_use: &UseRecorder, presented: &str) -> Option<StoredKey> {
    let key = cache.peek::<StoredKey>(Namespace::API_KEY, prefix_of(presented)?)?;
    (accepts(&key, presented, now_ms()) && key_use.recent.contains_key(&key.id)).then_some(key)
}

/// Finds and checks the key `presented`, recording its use.
pub async fn verify(db: &Db, cache: &Cache, key_use: &UseRecorder, presented: &str) -> Result<StoredKey, ApiError> {
    let prefix = prefix_of(presented).ok_or_else(invalid_key)?;
    let load = || async { Ok::<_, sqlx::Error>(sql::by_prefix(db, prefix).await?.map(StoredKey::from)) };
    let key = cache.get_or_load(Namespace::API_KEY, prefix, None, load).await?.ok_or_else(invalid_key)?;
    let now = now_ms();
    if !accepts(&key, presented, now) {
        return Err(invalid_key());
    }
    key_use.record(db, &key.id, now).await?;
    Ok(key)
}
