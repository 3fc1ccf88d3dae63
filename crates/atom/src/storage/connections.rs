//! SQL of the connector vault: the instance's OAuth apps (`provider_apps`), users'
//! connections (`connections`) and pending authorizations (`connection_authorizations`).
//!
//! Secret columns (`client_secret`, `credentials`, `secrets`) hold envelope-encrypted values
//! only; this file never sees a plaintext. Every query that reads or changes a connection for
//! a user names that user in its `WHERE`, so a connection id alone reaches nothing.

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppRow {
    pub provider: String,
    pub client_id: String,
    /// Encrypted.
    pub client_secret: String,
    /// A JSON object.
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRow {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub auth_kind: String,
    pub account_id: String,
    pub label: String,
    pub status: String,
    pub scopes: String,
    pub params: String,
    /// Encrypted.
    pub credentials: String,
    pub expires_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthorizationRow {
    pub state_hash: String,
    pub user_id: String,
    pub provider: String,
    /// Encrypted.
    pub secrets: String,
    pub scopes: String,
    pub params: String,
    pub return_to: String,
    pub created_at: i64,
    pub expires_at: i64,
}

macro_rules! connection_columns {
    () => {
        "id, user_id, provider, auth_kind, account_id, label, status, scopes, params, credentials, expires_at, \
         last_refresh_at, last_error, created_at, updated_at"
    };
}

/// Hot: every token asked for (the agent's calls), every refresh.
pub const BY_ID_SQL: &str = concat!("SELECT ", connection_columns!(), " FROM connections WHERE id = $1");
/// Hot: `GET /v1/connections`, a user's connections, newest first.
pub const LIST_FOR_USER_SQL: &str = concat!(
    "SELECT ",
    connection_columns!(),
    " FROM connections WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
);
/// Hot: the background refresher, every interval: connections whose token expires soon.
pub const DUE_SQL: &str = "SELECT id FROM connections WHERE expires_at <= $1 AND status = 'active' \
                           ORDER BY expires_at LIMIT $2";
/// Hot: a callback or a credential submission finding the connection it updates.
pub const BY_ACCOUNT_SQL: &str = concat!(
    "SELECT ",
    connection_columns!(),
    " FROM connections WHERE user_id = $1 AND provider = $2 AND account_id = $3"
);
/// Hot: every callback takes its pending authorization.
pub const TAKE_AUTHORIZATION_SQL: &str = "DELETE FROM connection_authorizations WHERE state_hash = $1 \
     RETURNING state_hash, user_id, provider, secrets, scopes, params, return_to, created_at, expires_at";

// ---- provider apps ----

pub async fn upsert_app(tx: &mut Tx, app: &AppRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "provider_apps.upsert", |conn| {
        sqlx::query(
            "INSERT INTO provider_apps (provider, client_id, client_secret, settings, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (provider) DO UPDATE SET client_id = excluded.client_id, \
             client_secret = excluded.client_secret, settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(&app.provider)
        .bind(&app.client_id)
        .bind(&app.client_secret)
        .bind(&app.settings)
        .bind(app.created_at)
        .bind(app.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn app(db: &Db, provider: &str) -> Result<Option<AppRow>, sqlx::Error> {
    with_pool!(db, "provider_apps.by_provider", |conn| {
        sqlx::query_as(
            "SELECT provider, client_id, client_secret, settings, created_at, updated_at FROM provider_apps \
             WHERE provider = $1",
        )
        .bind(provider)
        .fetch_optional(conn)
        .await
    })
}

pub async fn delete_app(tx: &mut Tx, provider: &str) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "provider_apps.delete", |conn| {
        sqlx::query("DELETE FROM provider_apps WHERE provider = $1")
            .bind(provider)
            .execute(conn)
            .await
            .map(|r| r.rows_affected() == 1)
    })
}

// ---- connections ----

pub async fn insert_connection(tx: &mut Tx, c: &ConnectionRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "connections.insert", |conn| {
        sqlx::query(concat!(
            "INSERT INTO connections (",
            connection_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ))
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.provider)
        .bind(&c.auth_kind)
        .bind(&c.account_id)
        .bind(&c.label)
        .bind(&c.status)
        .bind(&c.scopes)
        .bind(&c.params)
        .bind(&c.credentials)
        .bind(c.expires_at)
        .bind(c.last_refresh_at)
        .bind(&c.last_error)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Replaces what a new authorization of the same provider account brings: label, scopes,
/// parameters, credentials, expiry; the connection is active again.
pub async fn update_reconnected(tx: &mut Tx, c: &ConnectionRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "connections.update_reconnected", |conn| {
        sqlx::query(
            "UPDATE connections SET label = $3, status = 'active', scopes = $4, params = $5, credentials = $6, \
             expires_at = $7, last_error = NULL, updated_at = $8 WHERE id = $1 AND user_id = $2",
        )
        .bind(&c.id)
        .bind(&c.user_id)
        .bind(&c.label)
        .bind(&c.scopes)
        .bind(&c.params)
        .bind(&c.credentials)
        .bind(c.expires_at)
        .bind(c.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn by_account(
    tx: &mut Tx,
    user_id: &str,
    provider: &str,
    account_id: &str,
) -> Result<Option<ConnectionRow>, sqlx::Error> {
    with_tx!(tx, "connections.by_account", |conn| {
        sqlx::query_as(BY_ACCOUNT_SQL).bind(user_id).bind(provider).bind(account_id).fetch_optional(conn).await
    })
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<ConnectionRow>, sqlx::Error> {
    with_pool!(db, "connections.by_id", |conn| sqlx::query_as(BY_ID_SQL).bind(id).fetch_optional(conn).await)
}

pub async fn list_for_user(db: &Db, user_id: &str, limit: i64) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    with_pool!(db, "connections.list_for_user", |conn| {
        sqlx::query_as(LIST_FOR_USER_SQL).bind(user_id).bind(limit).fetch_all(conn).await
    })
}

/// Deletes the user's connection `id`; the deleted row, or `None` when the user has none.
pub async fn delete_connection(tx: &mut Tx, id: &str, user_id: &str) -> Result<Option<ConnectionRow>, sqlx::Error> {
    with_tx!(tx, "connections.delete", |conn| {
        sqlx::query_as(concat!(
            "DELETE FROM connections WHERE id = $1 AND user_id = $2 RETURNING ",
            connection_columns!()
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(conn)
        .await
    })
}

/// Every connection of the user, deleted; the rows, for revocation at the providers.
pub async fn delete_all_for_user(tx: &mut Tx, user_id: &str) -> Result<Vec<ConnectionRow>, sqlx::Error> {
    with_tx!(tx, "connections.delete_all_for_user", |conn| {
        sqlx::query_as(concat!("DELETE FROM connections WHERE user_id = $1 RETURNING ", connection_columns!()))
            .bind(user_id)
            .fetch_all(conn)
            .await
    })
}

/// Takes the refresh lease of connection `id` for `holder` until `until`, when no other holder
/// has a lease that is still running at `now`. True when taken.
pub async fn take_lease(db: &Db, id: &str, holder: &str, now: i64, until: i64) -> Result<bool, sqlx::Error> {
    with_pool!(db, "connections.take_lease", |conn| {
        sqlx::query(
            "UPDATE connections SET refresh_holder = $2, refresh_lease_until = $4 WHERE id = $1 \
             AND (refresh_lease_until IS NULL OR refresh_lease_until < $3 OR refresh_holder = $2)",
        )
        .bind(id)
        .bind(holder)
        .bind(now)
        .bind(until)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

pub async fn release_lease(db: &Db, id: &str, holder: &str) -> Result<(), sqlx::Error> {
    with_pool!(db, "connections.release_lease", |conn| {
        sqlx::query(
            "UPDATE connections SET refresh_holder = NULL, refresh_lease_until = NULL \
             WHERE id = $1 AND refresh_holder = $2",
        )
        .bind(id)
        .bind(holder)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Stores refreshed credentials, and the connection's parameters when the refresh moved a
/// kept value (`params`, the whole object; `None` leaves them), only while `holder` still
/// holds the lease (a holder whose lease ran out and was taken over must not overwrite the
/// newer tokens), and releases it. True when stored.
pub async fn store_refreshed(
    tx: &mut Tx,
    id: &str,
    holder: &str,
    credentials: &str,
    params: Option<&str>,
    expires_at: Option<i64>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "connections.store_refreshed", |conn| {
        sqlx::query(
            "UPDATE connections SET credentials = $3, expires_at = $4, last_refresh_at = $5, last_error = NULL, \
             status = 'active', updated_at = $5, refresh_holder = NULL, refresh_lease_until = NULL, \
             params = COALESCE($6, params) \
             WHERE id = $1 AND refresh_holder = $2",
        )
        .bind(id)
        .bind(holder)
        .bind(credentials)
        .bind(expires_at)
        .bind(now)
        .bind(params)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

/// Records a failure (`last_error`), and the new status when it changes, releasing the lease.
pub async fn record_failure(
    tx: &mut Tx,
    id: &str,
    status: &str,
    last_error: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "connections.record_failure", |conn| {
        sqlx::query(
            "UPDATE connections SET status = $2, last_error = $3, updated_at = $4, refresh_holder = NULL, \
             refresh_lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(last_error)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

/// Ids of active connections whose token expires at or before `before`, soonest first.
pub async fn due_for_refresh(db: &Db, before: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, "connections.due", |conn| sqlx::query_scalar(DUE_SQL).bind(before).bind(limit).fetch_all(conn).await)
}

/// `(status, count)` over every connection, for the gauge.
pub async fn count_by_status(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    with_pool!(db, "connections.count_by_status", |conn| {
        sqlx::query_as("SELECT status, count(*) FROM connections GROUP BY status").fetch_all(conn).await
    })
}

// ---- pending authorizations ----

pub async fn insert_authorization(tx: &mut Tx, a: &AuthorizationRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "connection_authorizations.insert", |conn| {
        sqlx::query(
            "INSERT INTO connection_authorizations \
             (state_hash, user_id, provider, secrets, scopes, params, return_to, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.state_hash)
        .bind(&a.user_id)
        .bind(&a.provider)
        .bind(&a.secrets)
        .bind(&a.scopes)
        .bind(&a.params)
        .bind(&a.return_to)
        .bind(a.created_at)
        .bind(a.expires_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Removes and returns the authorization whose state hashes to `state_hash`: a state is
/// used once, whatever the callback's outcome.
/// It commits on its own: a callback that fails later does not put the state back.
pub async fn take_authorization(db: &Db, state_hash: &str) -> Result<Option<AuthorizationRow>, sqlx::Error> {
    with_pool!(db, "connection_authorizations.take", |conn| {
        sqlx::query_as(TAKE_AUTHORIZATION_SQL).bind(state_hash).fetch_optional(conn).await
    })
}

/// Deletes authorizations that expired before `now`; how many.
pub async fn purge_expired_authorizations(db: &Db, now: i64) -> Result<u64, sqlx::Error> {
    with_pool!(db, "connection_authorizations.purge", |conn| {
        sqlx::query("DELETE FROM connection_authorizations WHERE expires_at < $1")
            .bind(now)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })
}
