//! Whether PostgreSQL can be reached, so that requests fail fast while it cannot instead of
//! each waiting out the pool's acquire timeout (sqlx retries a refused connection until
//! then). SQLite is a file in the process and never "down": it has no such gate.
//!
//! Every connection the pool hands out passes [`Availability::acquire`]:
//! - Known down: the request gets [`sqlx::Error::Io`] (`NotConnected`) at once, a 503
//!   `unavailable` with `Retry-After`.
//! - Up: the pool is asked as usual. If it has not answered after [`SUSPECT_AFTER`] (a
//!   saturated pool, or a database that refuses connections) or fails with a connection
//!   error, a probe opens one connection of its own, outside the pool. If that fails too, the
//!   database is known down and every request waiting on the pool gets its 503 at once.
//! - A background task probes again after a back-off ([`FIRST_BACKOFF`] doubling to
//!   [`MAX_BACKOFF`]) until a probe connects; then requests use the pool again.
//!
//! Invariants: at most one probe at a time per database; while the database is up, at most
//! one probe per [`SUSPECT_INTERVAL`], so a saturated pool costs one extra connection
//! attempt a second, no more. The probe's error (never the URL or the password) is what the
//! 503s and `/ready` report. Metric: `db_unreachable` (1 while requests fail fast).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::watch;

/// How long a connection may take to come out of the pool before a probe looks at the database.
const SUSPECT_AFTER: Duration = Duration::from_millis(100);
/// The fewest time between two probes while the database is up.
const SUSPECT_INTERVAL: Duration = Duration::from_secs(1);
/// The first pause between probes of a database that is down.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between probes: how late, at most, a node sees the database back.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The reachability of one PostgreSQL database. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct Availability(Arc<Inner>);

struct Inner {
    options: PgConnectOptions,
    probe_timeout: Duration,
    /// `Some(error of the last probe)` while the database is known down.
    down: watch::Sender<Option<Arc<str>>>,
    probing: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Availability").field("down", &self.is_down()).finish_non_exhaustive()
    }
}

/// Why a request was refused without trying the pool.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL is unreachable ({0}); requests fail fast until a probe reaches it")]
struct KnownDown(Arc<str>);

impl Availability {
    /// `options` are the pool's; a probe connects with them, waiting at most `probe_timeout`.
    pub(crate) fn new(options: PgConnectOptions, probe_timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            options,
            probe_timeout,
            down: watch::Sender::new(None),
            probing: AtomicBool::new(false),
            last_probe: Mutex::new(None),
        }))
    }

    /// Whether requests currently fail fast.
    pub fn is_down(&self) -> bool {
        self.0.down.borrow().is_some()
    }

    /// Runs `acquire` (a pool checkout, or a `BEGIN`) unless the database is known down, and
    /// gives up on it as soon as the database is found down while it waits.
    pub(crate) async fn acquire<T>(
        &self,
        acquire: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if let Some(error) = self.0.down.borrow().as_ref() {
            return Err(known_down(error));
        }
        let mut acquire = pin!(acquire);
        tokio::select! {
            biased;
            result = &mut acquire => return self.observe(result),
            () = tokio::time::sleep(SUSPECT_AFTER) => {}
        }
        // Subscribed before the probe starts, so that its verdict cannot be missed.
        let mut down = self.0.down.subscribe();
        self.suspect();
        tokio::select! {
            biased;
            result = &mut acquire => self.observe(result),
            Ok(error) = down.wait_for(Option::is_some) => Err(known_down(error.as_deref().unwrap_or_default())),
        }
    }

    fn observe<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(e) = &result
            && !matches!(e, sqlx::Error::PoolClosed)
            && crate::error::database_unreachable(e)
        {
            self.suspect();
        }
        result
    }

    /// Starts a probe unless one is running or, while the database is up, one ran lately.
    fn suspect(&self) {
        let inner = &self.0;
        {
            let mut last = inner.last_probe.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < SUSPECT_INTERVAL) && !self.is_down() {
                return;
            }
            if inner.probing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        tokio::spawn(probe_until_reachable(Arc::downgrade(inner)));
    }
}

/// Probes until a probe connects, pausing longer after each failure. Ends early when the
/// database handle is dropped.
async fn probe_until_reachable(inner: Weak<Inner>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(inner) = inner.upgrade() else { return };
        match inner.probe().await {
            Ok(()) => {
                inner.probing.store(false, Ordering::Release);
                if inner.down.send_replace(None).is_some() {
                    metrics::gauge!("db_unreachable").set(0.0);
                    tracing::info!("PostgreSQL is reachable again: requests use it again");
                }
                return;
            }
            Err(error) => {
                let error: Arc<str> = error.to_string().into();
                let was_down = inner.down.send_replace(Some(Arc::clone(&error))).is_some();
                if !was_down {
                    metrics::gauge!("db_unreachable").set(1.0);
                    tracing::warn!(%error, "PostgreSQL is unreachable: requests get 503 at once until a probe reaches it");
                }
            }
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Inner {
    /// One connection of its own, outside the pool: a refused connection fails at once here,
    /// where the pool would retry it until its acquire timeout.
    async fn probe(&self) -> Result<(), sqlx::Error> {
        let connect = async {
            let conn = PgConnection::connect_with(&self.options).await?;
            conn.close().await
        };
        match tokio::time::timeout(self.probe_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

fn known_down(error: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, KnownDown(error.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_fails_the_waiting_checkout_and_later_ones_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let options = PgConnectOptions::new().host("127.0.0.1").port(port);
        let availability = Availability::new(options, Duration::from_secs(5));
        assert!(!availability.is_down());

        // A checkout that would wait (as the pool does on a refused connection) is released
        // once the probe is refused.
        let started = Instant::now();
        let waiting = std::future::pending::<Result<(), sqlx::Error>>();
        let error = availability.acquire(waiting).await.expect_err("known down");
        assert!(matches!(&error, sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::NotConnected), "{error}");
        assert!(crate::error::database_unreachable(&error), "a 503");
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(availability.is_down());

        // Known down: the pool is not even asked.
        let asked = AtomicBool::new(false);
        let result = availability
            .acquire(async {
                asked.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        assert!(result.is_err() && !asked.load(Ordering::SeqCst));
    }
}
