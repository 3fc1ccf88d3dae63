//! SQL of the audit log: append one row to the hash chain, page through rows, walk them all.
//!
//! Appends are serialized so that the chain stays a line: on PostgreSQL by a transaction-level
//! advisory lock, on SQLite by the write lock `BEGIN IMMEDIATE` already holds.

use super::monitor::timed;
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

/// The columns of [`AuditRow`], as a literal so that each query's SQL is one `const`.
macro_rules! columns {
    () => {
        "seq, id, at, actor_type, actor_id, action, target, outcome, client_addr, user_agent, request_id, details, \
         prev_hash, hash"
    };
}

/// The optional filters of a listing, `$1`..`$5`; `$6` is the cursor, `$7` the limit.
macro_rules! filters {
    () => {
        "($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR outcome = $3) \
         AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND seq < $6"
    };
}

// The listing has one SQL text per leading filter. A single text with every filter optional
// (`$1 IS NULL OR actor_id = $1`) plans well only while PostgreSQL plans it for the bound
// values; once it caches a generic plan for the prepared statement, no index matches the
// OR and a rare actor costs a walk down the whole log. Each text below names its index
// column outright, and the cursor is always bound (`i64::MAX` for the first page), so every
// plan, custom or generic, starts from an index.

/// Hot: the audit listing filtered by actor (`audit_log_actor_idx`). `actor_id = $1` is
/// repeated outside the optional filters so that the planner sees a plain equality.
pub const LIST_BY_ACTOR_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM audit_log WHERE actor_id = $1 AND ",
    filters!(),
    " ORDER BY seq DESC LIMIT $7"
);
/// Hot: the audit listing filtered by action, without an actor (`audit_log_action_idx`).
pub const LIST_BY_ACTION_SQL: &str =
    concat!("SELECT ", columns!(), " FROM audit_log WHERE action = $2 AND ", filters!(), " ORDER BY seq DESC LIMIT $7");
/// Hot: the audit listing by page, newest first from the cursor (the primary key).
pub const LIST_SQL: &str =
    concat!("SELECT ", columns!(), " FROM audit_log WHERE ", filters!(), " ORDER BY seq DESC LIMIT $7");
/// Hot: every audited write reads the head of the chain.
pub const CHAIN_HEAD_SQL: &str = "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1";

/// Locks the chain for this transaction and returns the hash of its last row, if any.
pub async fn lock_chain_head(tx: &mut Tx) -> Result<Option<String>, sqlx::Error> {
    if let Tx::Postgres(tx) = tx {
        timed(
            "audit.lock_chain",
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ADVISORY_LOCK_AUDIT).execute(&mut **tx),
        )
        .await?;
    }
    with_tx!(tx, "audit.chain_head", |conn| sqlx::query_scalar(CHAIN_HEAD_SQL).fetch_optional(conn).await)
}

pub async fn insert(tx: &mut Tx, row: &NewAuditRow, prev_hash: &str, hash: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, "audit.insert", |conn| {
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
    let (name, sql) = if f.actor_id.is_some() {
        ("audit.list_by_actor", LIST_BY_ACTOR_SQL)
    } else if f.action.is_some() {
        ("audit.list_by_action", LIST_BY_ACTION_SQL)
    } else {
        ("audit.list", LIST_SQL)
    };
    with_pool!(db, name, |conn| {
        sqlx::query_as(sql)
            .bind(&f.actor_id)
            .bind(&f.action)
            .bind(&f.outcome)
            .bind(f.since_ms)
            .bind(f.until_ms)
            .bind(f.before_seq.unwrap_or(i64::MAX))
            .bind(f.limit)
            .fetch_all(conn)
            .await
    })
}

/// Rows in chain order from `after_seq` on, `limit` at a time (for verification).
pub async fn chain_page(db: &Db, after_seq: i64, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", columns!(), " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
    with_pool!(db, "audit.chain_page", |conn| sqlx::query_as(SQL).bind(after_seq).bind(limit).fetch_all(conn).await)
}

/// The rows whose target is `target` (a connection's history), newest first.
pub const LIST_BY_TARGET_SQL: &str =
    concat!("SELECT ", columns!(), " FROM audit_log WHERE target = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3");

pub async fn list_by_target(db: &Db, target: &str, before_seq: i64, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    with_pool!(db, "audit.list_by_target", |conn| {
        sqlx::query_as(LIST_BY_TARGET_SQL).bind(target).bind(before_seq).bind(limit).fetch_all(conn).await
    })
}
