//! The tamper-evident audit log: who did what, to what, from where, with what outcome.
//!
//! Each row carries the SHA-256 of the previous row's hash and its own canonical content, so
//! editing, deleting or reordering any row breaks the chain from there on; `atom audit
//! verify` walks it and names the first row that does not hold. Events are appended inside
//! the transaction of the change they describe, so a change and its audit row commit or roll
//! back together. Invariant: no secret, token or password is ever passed in; callers record
//! ids and names only.

pub mod routes;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use routes::router;

use crate::storage::audit::{self as sql, AuditRow, NewAuditRow};
use crate::storage::{Db, Tx, now_ms};

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    ApiKey {
        key_id: String,
        user_id: String,
    },
    System,
    /// An unauthenticated client, e.g. a failed login.
    Anonymous,
}

impl Actor {
    fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Self::User(id) => ("user", Some(id.clone())),
            Self::ApiKey { key_id, .. } => ("api_key", Some(key_id.clone())),
            Self::System => ("system", None),
            Self::Anonymous => ("anonymous", None),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Where a request came from, for audit rows.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: Actor,
    pub action: &'static str,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub context: RequestContext,
    /// Non-secret detail (ids, counts, reasons), a JSON object.
    pub details: Value,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: &'static str, outcome: Outcome, context: &RequestContext) -> Self {
        Self {
            actor,
            action,
            target: None,
            outcome,
            context: context.clone(),
            details: Value::Object(serde_json::Map::new()),
        }
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Appends `event` to the chain inside `tx`.
pub async fn record(tx: &mut Tx, event: AuditEvent) -> Result<(), sqlx::Error> {
    let (actor_type, actor_id) = event.actor.parts();
    let row = NewAuditRow {
        id: uuid::Uuid::new_v4().to_string(),
        at: now_ms(),
        actor_type: actor_type.to_owned(),
        actor_id,
        action: event.action.to_owned(),
        target: event.target,
        outcome: event.outcome.as_str().to_owned(),
        client_addr: event.context.client_addr,
        user_agent: event.context.user_agent.map(|ua| ua.chars().take(256).collect()),
        request_id: event.context.request_id,
        details: event.details.to_string(),
    };
    let prev = sql::lock_chain_head(tx).await?.unwrap_or_else(|| GENESIS_HASH.to_owned());
    let hash = chain_hash(&prev, &row);
    sql::insert(tx, &row, &prev, &hash).await
}

/// Appends `event` in a transaction of its own (for events with no other change to join).
pub async fn record_alone(db: &Db, event: AuditEvent) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    record(&mut tx, event).await?;
    tx.commit().await
}

/// SHA-256 over the previous hash and the row's fields, as a JSON array: unambiguous,
/// and stable because every field is a string, an integer or null.
fn chain_hash(prev_hash: &str, row: &NewAuditRow) -> String {
    let canonical = serde_json::json!([
        prev_hash,
        row.id,
        row.at,
        row.actor_type,
        row.actor_id,
        row.action,
        row.target,
        row.outcome,
        row.client_addr,
        row.user_agent,
        row.request_id,
        row.details,
    ]);
    format!("{:x}", Sha256::digest(canonical.to_string().as_bytes()))
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Intact {
        rows: u64,
    },
    /// The first row whose link or content does not hold.
    Broken {
        seq: i64,
        rows_checked: u64,
        reason: &'static str,
    },
}

/// Walks the whole chain in order, a page at a time.
pub async fn verify(db: &Db) -> Result<Verification, sqlx::Error> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut after = 0;
    let mut checked = 0u64;
    loop {
        let page = sql::chain_page(db, after, 1000).await?;
        if page.is_empty() {
            return Ok(Verification::Intact { rows: checked });
        }
        for row in page {
            if row.prev_hash != prev {
                return Ok(Verification::Broken {
                    seq: row.seq,
                    rows_checked: checked,
                    reason: "link to the previous row broken",
                });
            }
            if chain_hash(&prev, &as_new(&row)) != row.hash {
                return Ok(Verification::Broken {
                    seq: row.seq,
                    rows_checked: checked,
                    reason: "content does not match its hash",
                });
            }
            prev = row.hash;
            after = row.seq;
            checked += 1;
        }
    }
}

fn as_new(row: &AuditRow) -> NewAuditRow {
    NewAuditRow {
        id: row.id.clone(),
        at: row.at,
        actor_type: row.actor_type.clone(),
        actor_id: row.actor_id.clone(),
        action: row.action.clone(),
        target: row.target.clone(),
        outcome: row.outcome.clone(),
        client_addr: row.client_addr.clone(),
        user_agent: row.user_agent.clone(),
        request_id: row.request_id.clone(),
        details: row.details.clone(),
    }
}
