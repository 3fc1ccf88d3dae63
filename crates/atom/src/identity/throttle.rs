//! Login throttling: failures are counted per account (by the email asked for, whether or
//! not it exists, so the lock itself reveals nothing) and per client address, in a window.
//! From the third failure each attempt is slowed; at the threshold the key is locked for
//! `lockout_secs`, and each lock is audited.

use std::time::Duration;

use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::storage::throttle as sql;
use crate::storage::{Db, Tx};

pub fn account_key(email: &str) -> String {
    format!("account:{email}")
}

pub fn addr_key(context: &RequestContext) -> Option<String> {
    context.client_addr.as_ref().map(|a| format!("addr:{a}"))
}

/// Refuses the attempt while either key is locked.
pub async fn check(db: &Db, keys: &[String], now: i64) -> Result<(), ApiError> {
    for key in keys {
        if let Some(row) = sql::get(db, key).await?
            && let Some(until) = row.locked_until.filter(|until| *until > now)
        {
            let retry_after_secs = u64::try_from((until - now + 999) / 1000).unwrap_or(1).max(1);
            return Err(ApiError::TooManyRequests {
                retry_after_secs,
                detail: "Too many failed sign-in attempts; try again later.".to_owned(),
            });
        }
    }
    Ok(())
}

/// Delay to add before answering a failed attempt, growing with the failures so far.
pub fn slowdown(failures: i32) -> Duration {
    let extra = u64::try_from(failures.saturating_sub(2).max(0)).unwrap_or(0);
    Duration::from_millis((extra * 250).min(2000))
}

/// Counts a failure for each `(key, threshold)` inside `tx`; locks (and audits) a key that
/// reaches its threshold. Returns the first key's failure count.
pub async fn record_failure(
    tx: &mut Tx,
    settings: &AuthConfig,
    keys: &[(String, u32)],
    now: i64,
    context: &RequestContext,
) -> Result<i32, ApiError> {
    let window_ms = i64::try_from(settings.lockout_window_secs).unwrap_or(i64::MAX / 1000) * 1000;
    let lock_ms = i64::try_from(settings.lockout_secs).unwrap_or(i64::MAX / 1000) * 1000;
    let mut first_count = 0;
    for (i, (key, threshold)) in keys.iter().enumerate() {
        let row = sql::increment(tx, key, now, window_ms).await?;
        if i == 0 {
            first_count = row.failures;
        }
        if row.failures >= i32::try_from(*threshold).unwrap_or(i32::MAX) {
            sql::lock(tx, key, now, now + lock_ms).await?;
            let event = AuditEvent::new(Actor::System, "auth.lockout", Outcome::Denied, context)
                .target(key.clone())
                .details(serde_json::json!({ "failures": row.failures, "lock_secs": settings.lockout_secs }));
            audit::record(tx, event).await?;
        }
    }
    Ok(first_count)
}

pub async fn clear(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
    sql::clear(tx, key).await
}
