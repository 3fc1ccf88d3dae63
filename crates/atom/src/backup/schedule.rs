//! Scheduled backups in `atom serve`: every `backup.interval_secs` an archive is written to
//! `backup.dir`, then the oldest archives there beyond `backup.keep` are deleted. Each
//! outcome is logged and exported as metrics (`backup_last_success_timestamp_seconds`,
//! `backup_failures_total`).
//!
//! The first backup comes one interval after start-up. A failed backup deletes nothing, so
//! failures never eat into the archives already kept. At shutdown a backup in progress may
//! finish within the grace period; cut short, it leaves no partial archive behind.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{archive, create};
use crate::config::{Config, DatabaseTarget};
use crate::error::ErrorChain;
use crate::storage::Db;

/// The running schedule; [`BackupSchedule::stop`] ends it.
#[derive(Debug)]
pub struct BackupSchedule {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Plan {
    db: Db,
    target: DatabaseTarget,
    dir: PathBuf,
    interval: Duration,
    keep: usize,
}

impl BackupSchedule {
    /// Starts the schedule when `backup.interval_secs` is not 0.
    pub fn start(db: &Db, config: &Config) -> Option<Self> {
        if config.backup.interval_secs == 0 {
            return None;
        }
        // Validated configuration: the target parses.
        let target = config.database_target().ok()?;
        let plan = Plan {
            db: db.clone(),
            target,
            dir: config.backup_dir(),
            interval: Duration::from_secs(config.backup.interval_secs),
            keep: usize::try_from(config.backup.keep).unwrap_or(usize::MAX),
        };
        tracing::info!(dir = %plan.dir.display(), interval = ?plan.interval, keep = plan.keep, "scheduled backups on");
        let (stop, stopped) = watch::channel(false);
        Some(Self { stop, task: tokio::spawn(run(plan, stopped)) })
    }

    /// Stops taking backups; one in progress gets up to `wait` to finish.
    pub async fn stop(mut self, wait: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(wait, &mut self.task).await.is_err() {
            tracing::warn!(?wait, "shutdown: the backup in progress did not finish; it was abandoned");
            self.task.abort();
        }
    }
}

async fn run(plan: Plan, mut stopped: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + plan.interval, plan.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped.changed() => return,
        }
        match create(&plan.db, &plan.target, &plan.dir).await {
            Ok(created) => {
                tracing::info!(
                    archive = %created.path.display(),
                    tables = created.manifest.tables.len(),
                    rows = created.manifest.total_rows(),
                    bytes = created.manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
                    elapsed_ms = created.elapsed.as_millis(),
                    "scheduled backup created"
                );
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                metrics::gauge!("backup_last_success_timestamp_seconds").set(now.as_secs_f64());
            }
            Err(e) => {
                tracing::error!(dir = %plan.dir.display(), error = %ErrorChain(&e), "scheduled backup failed");
                metrics::counter!("backup_failures_total").increment(1);
                continue;
            }
        }
        match archive::prune(&plan.dir, plan.keep) {
            Ok(removed) => {
                for old in removed {
                    tracing::info!(archive = %old.display(), keep = plan.keep, "old backup deleted by retention");
                }
            }
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "could not apply backup retention"),
        }
    }
}
