//! Refresh tokens: opaque 256-bit secrets (`atom_rt_…`), stored as SHA-256, rotated on every
//! use, grouped in families (one family per sign-in).
//!
//! Reuse of a spent token revokes its whole family and is audited, because one of the two
//! holders is a thief. The exception is a grace window (`refresh_reuse_grace_secs`, default
//! 10 s): the same client (same address and user agent as the token was issued to) presenting
//! the same token again, as two tabs refreshing at once do, gets a fresh pair in the same
//! family instead, and nothing is revoked.
//!
//! A family is a session: its id is the `sid` of the access tokens issued with it, and
//! revoking it (logout, reuse) refuses those too, through [`super::Identity::credentials_revoked`]
//! after the commit.

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::EventKind;
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::storage::sessions::{self as sql, RefreshRow};
use crate::storage::{Tx, now_ms};

use super::{Identity, random_secret, secret_hash};

pub const REFRESH_PREFIX: &str = "atom_rt_";

/// A refresh token, shown to the client once, and its session (family) id.
#[derive(Debug)]
pub struct Issued {
    pub refresh_token: String,
    pub session_id: String,
}

/// A refresh token spent: whose, and its successor.
#[derive(Debug)]
pub struct Rotated {
    pub user_id: String,
    pub issued: Issued,
}

/// Stores a new refresh token for `user_id` in `family` (a new family when `None`).
pub async fn issue(
    tx: &mut Tx,
    settings: &AuthConfig,
    user_id: &str,
    family: Option<&str>,
    context: &RequestContext,
) -> Result<Issued, sqlx::Error> {
    let token = format!("{REFRESH_PREFIX}{}", random_secret());
    let now = now_ms();
    let ttl_ms = i64::try_from(settings.refresh_ttl_secs).unwrap_or(i64::MAX / 1000) * 1000;
    let row = RefreshRow {
        id: uuid::Uuid::new_v4().to_string(),
        token_hash: secret_hash(&token),
        family_id: family.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
        user_id: user_id.to_owned(),
        created_at: now,
        expires_at: now.saturating_add(ttl_ms),
        used_at: None,
        revoked_at: None,
        client_addr: context.client_addr.clone(),
        user_agent: context.user_agent.clone(),
    };
    sql::insert(tx, &row).await?;
    Ok(Issued { refresh_token: token, session_id: row.family_id })
}

fn invalid_grant() -> ApiError {
    ApiError::Unauthorized { error: "invalid_token", description: "The refresh token is invalid, expired or revoked." }
}

/// Spends `presented` and returns its successor; the caller issues the access token. Every
/// failure is the same 401, whatever the reason.
pub async fn rotate(identity: &Identity, presented: &str, context: &RequestContext) -> Result<Rotated, ApiError> {
    if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 128 {
        return Err(invalid_grant());
    }
    let settings = &identity.settings;
    let now = now_ms();
    let mut tx = identity.db().begin().await?;
    let Some(row) = sql::by_hash_for_update(&mut tx, &secret_hash(presented)).await? else {
        return Err(invalid_grant());
    };
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(invalid_grant());
    }
    if let Some(used_at) = row.used_at {
        let grace_ms = i64::try_from(settings.refresh_reuse_grace_secs).unwrap_or(0) * 1000;
        let same_client = row.client_addr == context.client_addr && row.user_agent == context.user_agent;
        if now - used_at > grace_ms || !same_client {
            let revoked = sql::revoke_family(&mut tx, &row.family_id, now).await?;
            let event =
                AuditEvent::new(Actor::User(row.user_id.clone()), "auth.refresh_reuse", Outcome::Denied, context)
                    .target(row.family_id.clone())
                    .details(serde_json::json!({ "revoked_tokens": revoked, "same_client": same_client }));
            audit::record(&mut tx, event).await?;
            tx.commit().await?;
            tracing::warn!(user_id = %row.user_id, family = %row.family_id, "refresh token reuse: family revoked");
            let ended = EventKind::SessionRevoked { session_id: row.family_id.clone() };
            identity.credentials_revoked(&row.user_id, ended).await;
            return Err(invalid_grant());
        }
    } else {
        sql::mark_used(&mut tx, &row.id, now).await?;
    }
    let issued = issue(&mut tx, settings, &row.user_id, Some(&row.family_id), context).await?;
    let event = AuditEvent::new(Actor::User(row.user_id.clone()), "auth.refresh", Outcome::Success, context)
        .target(row.family_id.clone())
        .details(serde_json::json!({ "grace": row.used_at.is_some() }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(Rotated { user_id: row.user_id, issued })
}

/// Revokes the family of `presented` (logout), its access tokens with it. Unknown tokens are
/// ignored: logout is idempotent and says nothing about which tokens exist.
pub async fn revoke(identity: &Identity, presented: &str, context: &RequestContext) -> Result<(), ApiError> {
    if !presented.starts_with(REFRESH_PREFIX) || presented.len() > 128 {
        return Ok(());
    }
    let mut tx = identity.db().begin().await?;
    let Some(row) = sql::by_hash_for_update(&mut tx, &secret_hash(presented)).await? else { return Ok(()) };
    let revoked = sql::revoke_family(&mut tx, &row.family_id, now_ms()).await?;
    let event = AuditEvent::new(Actor::User(row.user_id.clone()), "auth.logout", Outcome::Success, context)
        .target(row.family_id.clone())
        .details(serde_json::json!({ "revoked_tokens": revoked }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    identity.credentials_revoked(&row.user_id, EventKind::SessionRevoked { session_id: row.family_id }).await;
    Ok(())
}
