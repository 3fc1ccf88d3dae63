//! SQL of refresh tokens. Only a SHA-256 of each token is stored.

use super::monitor::timed;
use super::{Db, Tx};

/// Hot: every token refresh. PostgreSQL appends `FOR UPDATE`.
pub const BY_HASH_SQL: &str = "SELECT id, token_hash, family_id, user_id, created_at, expires_at, used_at, \
     revoked_at, client_addr, user_agent FROM refresh_tokens WHERE token_hash = $1";

/// Hot: on a miss of an account's cached status, the sessions (refresh-token families)
/// revoked since `$2`, whose access tokens may still be unexpired.
pub const REVOKED_FAMILIES_SQL: &str =
    "SELECT DISTINCT family_id FROM refresh_tokens WHERE user_id = $1 AND revoked_at > $2";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: String,
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

pub async fn insert(tx: &mut Tx, row: &RefreshRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "refresh_tokens.insert", |conn| {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, created_at, expires_at, used_at, \
             revoked_at, client_addr, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&row.id)
        .bind(&row.token_hash)
        .bind(&row.family_id)
        .bind(&row.user_id)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.used_at)
        .bind(row.revoked_at)
        .bind(&row.client_addr)
        .bind(&row.user_agent)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// The token with this hash, locked for the rest of the transaction on PostgreSQL (SQLite's
/// write lock is already held), so two refreshes of one token run one after the other.
pub async fn by_hash_for_update(tx: &mut Tx, token_hash: &str) -> Result<Option<RefreshRow>, sqlx::Error> {
    timed("refresh_tokens.by_hash", async {
        match tx {
            Tx::Sqlite(tx) => sqlx::query_as(BY_HASH_SQL).bind(token_hash).fetch_optional(&mut **tx).await,
            Tx::Postgres(tx) => {
                let sql = format!("{BY_HASH_SQL} FOR UPDATE");
                sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(token_hash).fetch_optional(&mut **tx).await
            }
        }
    })
    .await
}

pub async fn mark_used(tx: &mut Tx, id: &str, now: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, "refresh_tokens.mark_used", |conn| {
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Revokes every live token of a family; returns how many.
pub async fn revoke_family(tx: &mut Tx, family_id: &str, now: i64) -> Result<u64, sqlx::Error> {
    with_tx!(tx, "refresh_tokens.revoke_family", |conn| {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(family_id)
            .bind(now)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })
}

/// Revokes every live token of a user (password change, account disabled).
pub async fn revoke_user(tx: &mut Tx, user_id: &str, now: i64) -> Result<u64, sqlx::Error> {
    with_tx!(tx, "refresh_tokens.revoke_user", |conn| {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .bind(now)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })
}

/// The families of `user_id` revoked after `since` (ms).
pub async fn revoked_families(db: &Db, user_id: &str, since: i64) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, "refresh_tokens.revoked_families", |conn| {
        sqlx::query_scalar(REVOKED_FAMILIES_SQL).bind(user_id).bind(since).fetch_all(conn).await
    })
}
