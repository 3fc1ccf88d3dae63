//! The background refresher: every `connectors.refresh_interval_secs`, a pass refreshes the
//! active connections due within the margin (through the same single-flight path as a
//! caller's, so it never races one), sets the `connector_connections{status}` gauge and
//! purges expired pending authorizations.

use std::sync::Arc;
use std::time::Duration;

use super::error::ConnectorError;
use super::service::Connectors;
use crate::storage::connections as sql;
use crate::storage::now_ms;

impl Connectors {
    /// One pass of the background refresher: every active connection due within the margin.
    /// How many were refreshed (or found refreshed by another node).
    pub async fn refresh_due(&self) -> Result<usize, ConnectorError> {
        let before = now_ms().saturating_add(self.refresh_margin_ms());
        let mut done = 0;
        for id in sql::due_for_refresh(self.db(), before, 100).await? {
            let Some(row) = sql::by_id(self.db(), &id).await? else { continue };
            match self.refresh(&row.id, &row.credentials).await {
                Ok(_) => done += 1,
                Err(e) => tracing::debug!(connection_id = %id, error = %e, "background refresh did not succeed"),
            }
        }
        Ok(done)
    }

    /// Sets the `connector_connections{status}` gauge.
    pub async fn record_status_gauges(&self) -> Result<(), sqlx::Error> {
        let counts = sql::count_by_status(self.db()).await?;
        for status in ["active", "needs_reauth"] {
            let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("connector_connections", "status" => status).set(n as f64);
        }
        Ok(())
    }
}

/// The background refresher: every `connectors.refresh_interval_secs`, refreshes what is due,
/// updates the status gauges and purges expired pending authorizations. Ends when `stop`
/// resolves.
pub fn spawn_worker(connectors: Arc<Connectors>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = connectors.settings().refresh_interval_secs;
    if interval == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        // The first pass one interval after start, not at once: start-up stays quiet, and a
        // node restarted in a loop does not sweep the table on every start.
        let period = Duration::from_secs(interval);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(e) = connectors.refresh_due().await {
                tracing::warn!(error = %e, "background refresh pass failed");
            }
            if let Err(e) = connectors.record_status_gauges().await {
                tracing::debug!(error = %e, "connection gauges not updated");
            }
            if let Err(e) = sql::purge_expired_authorizations(connectors.db(), now_ms()).await {
                tracing::debug!(error = %e, "expired authorizations not purged");
            }
        }
    }))
}
