//! Persistence and rotation of the JWT signing keys, and `GET /.well-known/jwks.json`.
//!
//! Private keys are stored envelope-encrypted under the master key, bound to their row
//! (`signing_keys.private_key`, row = kid, owner = "system"). The newest live key signs;
//! older live keys still verify. A superseded key is retired once every token it signed
//! has expired (its successor is older than the access-token lifetime plus a margin).
//!
//! The JWKS is read from the database's public keys through the cache; a rotation
//! invalidates it, and so does a node that reloads a changed keyset, so a node publishes
//! every key it signs with no later than it starts signing with it.

use super::tokens::{SigningKey, TokenKeys};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::cache::{Cache, Namespace};
use crate::crypto::{Aad, CryptoError, MasterKeyring, from_base64, to_base64};
use crate::storage::signing_keys::{self as sql, SigningKeyRow};
use crate::storage::{Db, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("database error")]
    Storage(#[from] sqlx::Error),
    #[error(
        "the master key does not decrypt signing key {kid}: is ATOM_MASTER_KEY (or the key file) the one this database was created with?"
    )]
    Decrypt {
        kid: String,
        #[source]
        source: CryptoError,
    },
    #[error("signing key {kid} is corrupt")]
    Corrupt { kid: String },
    #[error("could not generate or encrypt a signing key")]
    Generate(#[source] Box<dyn std::error::Error + Send + Sync>),
}

const TABLE: &str = "signing_keys";
const COLUMN: &str = "private_key";
const OWNER: &str = "system";
/// The one key of [`Namespace::JWKS`].
pub const JWKS_KEY: &str = "current";

fn decrypt(row: &SigningKeyRow, keyring: &MasterKeyring) -> Result<SigningKey, SigningError> {
    let stored = from_base64(&row.private_key).map_err(|_| SigningError::Corrupt { kid: row.kid.clone() })?;
    let seed = keyring
        .decrypt(&Aad::new(TABLE, COLUMN, &row.kid, OWNER), &stored)
        .map_err(|source| SigningError::Decrypt { kid: row.kid.clone(), source })?;
    let key = SigningKey::from_bytes(&seed).map_err(|_| SigningError::Corrupt { kid: row.kid.clone() })?;
    if key.kid() != row.kid {
        return Err(SigningError::Corrupt { kid: row.kid.clone() });
    }
    Ok(key)
}

/// The live keys as a keyset: newest signs, the others verify. `None` when there is none.
pub async fn load(db: &Db, keyring: &MasterKeyring) -> Result<Option<TokenKeys>, SigningError> {
    let rows = sql::live(db).await?;
    let Some((newest, older)) = rows.split_first() else { return Ok(None) };
    let current = decrypt(newest, keyring)?;
    let mut previous = Vec::with_capacity(older.len());
    for row in older {
        previous.push(decrypt(row, keyring)?.public_key().clone());
    }
    Ok(Some(TokenKeys::new(current).with_previous(previous)))
}

pub async fn load_or_create(db: &Db, keyring: &MasterKeyring, cache: &Cache) -> Result<TokenKeys, SigningError> {
    if let Some(keys) = load(db, keyring).await? {
        return Ok(keys);
    }
    rotate(db, keyring, cache, 0, &RequestContext::default()).await?;
    load(db, keyring).await?.ok_or_else(|| SigningError::Generate("the new signing key was not stored".into()))
}

/// Adds a new signing key, which becomes current, and retires keys whose every token has
/// expired (superseded more than `access_ttl_secs` + 2 minutes ago), and invalidates the
/// cached JWKS. Returns the new kid.
pub async fn rotate(
    db: &Db,
    keyring: &MasterKeyring,
    cache: &Cache,
    access_ttl_secs: u64,
    context: &RequestContext,
) -> Result<String, SigningError> {
    let key = SigningKey::generate().map_err(|e| SigningError::Generate(Box::new(e)))?;
    let kid = key.kid().to_owned();
    let stored = keyring
        .encrypt(&Aad::new(TABLE, COLUMN, &kid, OWNER), key.to_bytes().as_ref())
        .map_err(|e| SigningError::Generate(Box::new(e)))?;
    let now = now_ms();
    let live = sql::live(db).await?;
    let row = SigningKeyRow {
        kid: kid.clone(),
        algorithm: "EdDSA".to_owned(),
        private_key: to_base64(&stored),
        public_jwk: key.public_jwk().to_string(),
        created_at: now,
        retired_at: None,
    };
    let mut tx = db.begin().await?;
    sql::insert(&mut tx, &row).await?;
    // Key i (newest first) was superseded when key i-1 was created.
    let margin_ms = i64::try_from(access_ttl_secs).unwrap_or(i64::MAX / 2_000).saturating_add(120) * 1000;
    let mut retired = Vec::new();
    for pair in live.windows(2) {
        let (successor, older) = (&pair[0], &pair[1]);
        if now - successor.created_at > margin_ms {
            retired.push(older.kid.clone());
        }
    }
    for kid in &retired {
        sql::retire(&mut tx, kid, now).await?;
    }
    audit::record(
        &mut tx,
        AuditEvent::new(Actor::System, "keys.signing_rotated", Outcome::Success, context)
            .target(kid.clone())
            .details(serde_json::json!({ "retired": retired })),
    )
    .await?;
    tx.commit().await?;
    cache.invalidate(Namespace::JWKS, JWKS_KEY).await;
    Ok(kid)
}

/// The JWKS of the live keys as stored; `None` when there is none yet.
pub(crate) async fn load_jwks(db: &Db) -> Result<Option<serde_json::Value>, SigningError> {
    let stored = sql::live_public_jwks(db).await?;
    if stored.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::with_capacity(stored.len());
    for (kid, jwk) in stored {
        keys.push(serde_json::from_str::<serde_json::Value>(&jwk).map_err(|_| SigningError::Corrupt { kid })?);
    }
    Ok(Some(serde_json::json!({ "keys": keys })))
}
