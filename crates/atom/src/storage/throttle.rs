//! SQL of login throttling: failure counts per key (`account:<email>`, `addr:<ip>`).

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ThrottleRow {
    pub throttle_key: String,
    pub failures: i32,
    pub window_started_at: i64,
    pub locked_until: Option<i64>,
}

pub async fn get(db: &Db, key: &str) -> Result<Option<ThrottleRow>, sqlx::Error> {
    with_pool!(db, "login_throttle.get", |conn| {
        sqlx::query_as("SELECT throttle_key, failures, window_started_at, locked_until FROM login_throttle WHERE throttle_key = $1")
            .bind(key)
            .fetch_optional(conn)
            .await
    })
}

/// Counts one failure atomically, restarting the count when the window has passed.
pub async fn increment(tx: &mut Tx, key: &str, now: i64, window_ms: i64) -> Result<ThrottleRow, sqlx::Error> {
    with_tx!(tx, "login_throttle.increment", |conn| {
        sqlx::query_as(
            "INSERT INTO login_throttle (throttle_key, failures, window_started_at) VALUES ($1, 1, $2) \
             ON CONFLICT (throttle_key) DO UPDATE SET \
               failures = CASE WHEN login_throttle.window_started_at <= $2 - $3 THEN 1 ELSE login_throttle.failures + 1 END, \
               window_started_at = CASE WHEN login_throttle.window_started_at <= $2 - $3 THEN $2 \
                 ELSE login_throttle.window_started_at END \
             RETURNING throttle_key, failures, window_started_at, locked_until",
        )
        .bind(key)
        .bind(now)
        .bind(window_ms)
        .fetch_one(conn)
        .await
    })
}

/// Locks `key` until `until` and restarts its count.
pub async fn lock(tx: &mut Tx, key: &str, now: i64, until: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, "login_throttle.lock", |conn| {
        sqlx::query(
            "UPDATE login_throttle SET locked_until = $3, failures = 0, window_started_at = $2 WHERE throttle_key = $1",
        )
        .bind(key)
        .bind(now)
        .bind(until)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn clear(tx: &mut Tx, key: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, "login_throttle.clear", |conn| {
        sqlx::query("DELETE FROM login_throttle WHERE throttle_key = $1").bind(key).execute(conn).await.map(drop)
    })
}
