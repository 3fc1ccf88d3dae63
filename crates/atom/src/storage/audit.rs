//! SQL of the audit log: append one row to the hash chain, page through rows, walk them all.
//!
//! Appends are serialized so that the chain stays a line: on PostgreSQL by a transaction-level
//! advisory lock, on SQLite by the write lock `BEGIN IMMEDIATE` already holds.

use super::{Db, Tx};

/// A stored audit row, exactly as hashed.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// JSON object text.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields of a row to append; `seq`, `prev_hash` and `hash` are filled in by the chain.
#[derive(Debug, Clone)]
pub struct NewAuditRow {
    pub id: String,
    pub at: i64,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: String,
}

/// Filters of `GET /v1/admin/audit`; `before_seq` is the cursor (rows are newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

const ADVISORY_LOCK_AUDIT: i64 = 0x6174_6f6d_6175_6474; // "atomaudt"

/// Locks the chain for this transaction and returns the hash of its last row, if any.
pub async fn lock_chain_head(tx: &mut Tx) -> Result<Option<String>, sqlx::Error> {
    if let Tx::Postgres(tx) = tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ADVISORY_LOCK_AUDIT).execute(&mut **tx).await?;
    }
    with_tx!(tx, |conn| {
        sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(conn).await
    })
}

pub async fn insert(tx: &mut Tx, row: &NewAuditRow, prev_hash: &str, hash: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor_type, actor_id, action, target, outcome, client_addr, \
             user_agent, request_id, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&row.id)
        .bind(row.at)
        .bind(&row.actor_type)
        .bind(&row.actor_id)
        .bind(&row.action)
        .bind(&row.target)
        .bind(&row.outcome)
        .bind(&row.client_addr)
        .bind(&row.user_agent)
        .bind(&row.request_id)
        .bind(&row.details)
        .bind(prev_hash)
        .bind(hash)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// One page, newest first. Each filter is either unset or an exact match.
pub async fn list(db: &Db, f: &AuditFilter) -> Result<Vec<AuditRow>, sqlx::Error> {
    const SQL: &str = "SELECT seq, id, at, actor_type, actor_id, action, target, outcome, client_addr, user_agent, \
         request_id, details, prev_hash, hash FROM audit_log \
         WHERE ($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR outcome = $3) \
         AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND ($6 IS NULL OR seq < $6) \
         ORDER BY seq DESC LIMIT $7";
    with_pool!(db, |pool| {
        sqlx::query_as(SQL)
            .bind(&f.actor_id)
            .bind(&f.action)
            .bind(&f.outcome)
            .bind(f.since_ms)
            .bind(f.until_ms)
            .bind(f.before_seq)
            .bind(f.limit)
            .fetch_all(pool)
            .await
    })
}

/// Rows in chain order from `after_seq` on, `limit` at a time (for verification).
pub async fn chain_page(db: &Db, after_seq: i64, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    const SQL: &str = "SELECT seq, id, at, actor_type, actor_id, action, target, outcome, client_addr, user_agent, \
         request_id, details, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
    with_pool!(db, |pool| sqlx::query_as(SQL).bind(after_seq).bind(limit).fetch_all(pool).await)
}
