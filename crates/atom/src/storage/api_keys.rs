//! SQL of API keys. Only a SHA-256 of each key's secret is stored; the prefix finds the row.

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    /// Space-separated.
    pub scopes: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// For a `connections:use` key: the provider ids it may use, space-separated; `None` for
    /// every provider.
    pub providers: Option<String>,
}

/// The columns of [`ApiKeyRow`], as a literal so that each query's SQL is one `const`.
macro_rules! columns {
    () => {
        "id, user_id, name, prefix, key_hash, scopes, created_at, last_used_at, expires_at, revoked_at, providers"
    };
}

/// Hot: every request authenticated by an API key.
pub const BY_PREFIX_SQL: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE prefix = $1");
/// Hot: `GET /v1/api-keys`, a page of one user's keys, newest first, after the cursor
/// `($2, $3)` (the last key's creation time and id). The cursor is always bound (the first
/// page starts after `(i64::MAX, '')`): an optional one would keep a cached generic plan from
/// using the index. `created_at <= $2` is the index range; the rest breaks ties by id.
pub const LIST_FOR_USER_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM api_keys WHERE user_id = $1 AND created_at <= $2 AND (created_at < $2 OR id < $3) \
     ORDER BY created_at DESC, id DESC LIMIT $4"
);
/// Hot: every request authenticated by an API key (a no-op write within the minute).
pub const TOUCH_SQL: &str =
    "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)";

pub async fn insert(tx: &mut Tx, key: &ApiKeyRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "api_keys.insert", |conn| {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at, expires_at, providers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(&key.scopes)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(&key.providers)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn by_prefix(db: &Db, prefix: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    with_pool!(db, "api_keys.by_prefix", |conn| sqlx::query_as(BY_PREFIX_SQL).bind(prefix).fetch_optional(conn).await)
}

/// A page of one user's keys, newest first (ties by id, descending), after `after`: the
/// `(created_at, id)` of the previous page's last key.
pub async fn list_for_user(
    db: &Db,
    user_id: &str,
    after: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let (created_at, id) = after.unwrap_or((i64::MAX, ""));
    with_pool!(db, "api_keys.list_for_user", |conn| {
        sqlx::query_as(LIST_FOR_USER_SQL).bind(user_id).bind(created_at).bind(id).bind(limit).fetch_all(conn).await
    })
}

/// Revokes the user's key `id`; its prefix, or `None` when the user has no such live key.
pub async fn revoke(tx: &mut Tx, id: &str, user_id: &str, now: i64) -> Result<Option<String>, sqlx::Error> {
    with_tx!(tx, "api_keys.revoke", |conn| {
        sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
             RETURNING prefix",
        )
        .bind(id)
        .bind(user_id)
        .bind(now)
        .fetch_optional(conn)
        .await
    })
}

/// Records use, at most once a minute per key so that busy keys do not write on every call.
pub async fn touch(db: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
    with_pool!(db, "api_keys.touch", |conn| {
        sqlx::query(TOUCH_SQL).bind(id).bind(now).bind(now - 60_000).execute(conn).await.map(drop)
    })
}
