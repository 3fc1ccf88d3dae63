//! Query monitoring: what [`with_pool!`] and [`with_tx!`] record around every named query.
//!
//! - `db_pool_acquire_seconds{backend}`: the wait for a pooled connection;
//!   `db_transaction_begin_seconds{backend}`: the wait to begin a transaction (a connection,
//!   plus SQLite's write lock, which `BEGIN IMMEDIATE` takes).
//! - `db_query_duration_seconds{query}`, `db_queries_total{query}`,
//!   `db_query_errors_total{query}`, `db_slow_queries_total{query}`.
//! - A `slow query` warning naming the query when it takes longer than
//!   `database.slow_query_ms`.
//! - The number of queries a request issued (counted in the [`crate::request`] scope), which
//!   the request log line and `http_request_db_queries` show: the N+1 detector in production.
//!
//! Invariants: a query is known by its name, a string literal at its one call site, so
//! metric labels stay a small fixed set; no SQL parameter ever reaches a label or a log
//! line, only the name and timings.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// The slow-query threshold in milliseconds. Process-global, like the `metrics` recorder it
/// sits beside: the macros run deep inside storage functions that see only a `&Db` or a
/// `&mut Tx`, and threading one number through every one of them (or into every `Db`
/// clone) would buy nothing, since a process serves one configuration. Several
/// applications in one process (the tests) share it; the last one started wins.
static SLOW_QUERY_MS: AtomicU64 = AtomicU64::new(250);

/// Sets the threshold above which a query is logged as slow (`database.slow_query_ms`);
/// called once at start-up. Zero logs every query.
pub fn set_slow_query_threshold(threshold: Duration) {
    SLOW_QUERY_MS.store(u64::try_from(threshold.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

pub fn slow_query_threshold() -> Duration {
    Duration::from_millis(SLOW_QUERY_MS.load(Ordering::Relaxed))
}

/// Checks a connection out of `pool`, recording how long that took.
pub async fn acquire<DB: Database>(pool: &Pool<DB>, backend: &'static str) -> Result<PoolConnection<DB>, sqlx::Error> {
    let started = Instant::now();
    let conn = pool.acquire().await;
    metrics::histogram!("db_pool_acquire_seconds", "backend" => backend).record(started.elapsed().as_secs_f64());
    conn
}

/// Begins a transaction through `begin`, recording how long it waited.
pub async fn begin<T>(
    backend: &'static str,
    begin: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let started = Instant::now();
    let tx = begin.await;
    metrics::histogram!("db_transaction_begin_seconds", "backend" => backend).record(started.elapsed().as_secs_f64());
    tx
}

/// Runs the query `name`, recording its duration, count and outcome, and logging it when
/// slow. Only `name` and timings are recorded: the query's parameters never are.
pub async fn timed<T>(
    name: &'static str,
    query: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    crate::request::count_query();
    let started = Instant::now();
    let result = query.await;
    let elapsed = started.elapsed();
    metrics::histogram!("db_query_duration_seconds", "query" => name).record(elapsed.as_secs_f64());
    metrics::counter!("db_queries_total", "query" => name).increment(1);
    if result.is_err() {
        metrics::counter!("db_query_errors_total", "query" => name).increment(1);
    }
    if elapsed >= slow_query_threshold() {
        metrics::counter!("db_slow_queries_total", "query" => name).increment(1);
        let request_id = crate::request::request_id();
        tracing::warn!(
            query = name,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            threshold_ms = SLOW_QUERY_MS.load(Ordering::Relaxed),
            failed = result.is_err(),
            request_id = request_id.as_deref(),
            "slow query"
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_are_counted_inside_the_scope_only() {
        let ok = || async { Ok::<_, sqlx::Error>(()) };
        let (_, queries) = crate::request::scope("r1".to_owned(), async {
            let _ = timed("test.one", ok()).await;
            let _ = timed("test.two", ok()).await;
        })
        .await;
        assert_eq!(queries, 2);
        // Outside a scope nothing is counted, and nothing fails.
        assert!(timed("test.three", ok()).await.is_ok());
    }
}
