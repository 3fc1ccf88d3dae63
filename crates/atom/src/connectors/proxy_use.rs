//! Who used a connection through the proxy, for its history: one `connection.proxy_used` audit
//! row per (connection, caller) per window (`connectors.proxy_use_window_secs`), written on the
//! first call of the window, before that call goes out.
//!
//! Not a row per call: every audit row extends one hash chain, whose writes are serialised, so
//! a row per proxied request would put the chain's lock on the proxy's hot path. The memo of
//! who was recorded lives in the process, so with several nodes each records its own first
//! use in a window (at most one row per node, connection, caller and window).
//!
//! Invariants: a call reaches the provider only after its caller's use in the current window
//! is on record (a failed audit write fails the call, before anything is sent, and the next
//! call tries again); concurrent first calls of one caller write one row, the others wait for
//! it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::audit::{self, AuditEvent, Outcome, RequestContext};
use crate::identity::Principal;
use crate::storage::Db;
use crate::storage::connections::ConnectionRow;

/// The audit action of a caller's proxy use of a connection (the first call in a window).
pub const PROXY_USED_ACTION: &str = "connection.proxy_used";

/// The most (connection, caller) pairs remembered; beyond it the least recently used are
/// forgotten early, which costs at most an extra row for them.
const MAX_REMEMBERED: u64 = 100_000;

/// The callers whose use of a connection is recorded for the current window, per pair.
pub struct ProxyUse {
    /// Each pair's cell is set once its row is written; the entry expires with the window,
    /// so the next call after it writes a new row.
    recorded: moka::sync::Cache<(String, String), Arc<OnceCell<()>>>,
    window: Duration,
}

impl std::fmt::Debug for ProxyUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUse").field("window", &self.window).field("pairs", &self.recorded.entry_count()).finish()
    }
}

impl ProxyUse {
    pub fn new(window: Duration) -> Self {
        let recorded = moka::sync::Cache::builder().max_capacity(MAX_REMEMBERED).time_to_live(window).build();
        Self { recorded, window }
    }

    /// Records `principal`'s use of connection `row` unless it is already on record for this
    /// window; concurrent callers of the same pair share one write.
    pub async fn record(
        &self,
        db: &Db,
        principal: &Principal,
        row: &ConnectionRow,
        context: &RequestContext,
    ) -> Result<(), sqlx::Error> {
        let key = (row.id.clone(), crate::edge::principal_key(principal));
        let cell = self.recorded.get_with(key, || Arc::new(OnceCell::new()));
        if cell.initialized() {
            return Ok(());
        }
        cell.get_or_try_init(|| async {
            let details = serde_json::json!({
                "provider": row.provider,
                "window_secs": self.window.as_secs(),
            });
            let event = AuditEvent::new(principal.actor(), PROXY_USED_ACTION, Outcome::Success, context)
                .target(row.id.clone())
                .details(details);
            audit::record_alone(db, event).await
        })
        .await?;
        Ok(())
    }
}
