//! Retention: messages older than `conversations.retention_days` are deleted, in batches,
//! every hour. A client whose position is older resumes at the oldest message kept.

use std::time::Duration;

use crate::storage::conversations as sql;
use crate::storage::{Db, now_ms};

const EVERY: Duration = Duration::from_secs(3600);
const BATCH: i64 = 1000;

/// Starts the hourly sweep when retention is on; the task ends when aborted.
pub fn start(db: &Db, retention_days: u32) -> Option<tokio::task::AbortHandle> {
    if retention_days == 0 {
        return None;
    }
    let db = db.clone();
    let keep_ms = i64::from(retention_days) * 86_400_000;
    Some(
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                match sweep(&db, now_ms() - keep_ms).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "conversations: messages past retention deleted"),
                    Err(e) => {
                        tracing::warn!(error = %crate::error::ErrorChain(&e), "conversations: retention sweep failed")
                    }
                }
            }
        })
        .abort_handle(),
    )
}

/// Deletes every message created before `cutoff` (ms), a batch at a time; how many.
pub async fn sweep(db: &Db, cutoff: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sql::delete_older_than(db, cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}
