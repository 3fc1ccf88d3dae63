//! Operational endpoints: liveness (`/health`), readiness (`/ready`), the operator's view
//! (`/status`) and Prometheus metrics (`/metrics`).
//!
//! `/health` touches nothing but the process, so it keeps answering while dependencies are
//! down. `/ready` runs every dependency check concurrently, each bounded by
//! `http.ready_check_timeout_ms`, and turns 503 the moment shutdown begins.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::identity::Principal;
use crate::state::AppState;
use crate::storage::PoolStats;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`: the process is alive and serving.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ok` when every check passed; `degraded` when Redis is down (the node then runs on
    /// local limits and reads through to the database).
    pub status: &'static str,
    pub checks: BTreeMap<&'static str, Check>,
}

/// The outcome of one dependency check.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    /// `ok`, `failed`, `timeout`, `degraded` (Redis) or `draining` (shutdown).
    pub status: &'static str,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub instance_id: String,
    pub uptime_secs: u64,
    pub backends: Backends,
    pub database: DatabaseStatus,
    pub limits: Limits,
    /// This node's Socket.io server.
    pub realtime: crate::realtime::RealtimeStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Backends {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// `memory` or `redis`.
    pub cache: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseStatus {
    pub pool: PoolStats,
    /// The highest applied migration; `null` when the database did not answer in time.
    pub schema_version: Option<i64>,
    /// The highest migration this binary carries.
    pub latest_migration: i64,
    /// Migrations this binary carries that the database has not applied; `null` when the
    /// database did not answer in time.
    pub pending_migrations: Option<usize>,
    /// Queries slower than this are logged and counted (`database.slow_query_ms`).
    pub slow_query_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub database_pool_size: u32,
    pub database_acquire_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

/// Liveness: answers 200 while the process serves, without touching any dependency.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

/// Readiness: the database (and Redis when configured) answer, and no shutdown has begun.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answered", body = ReadyResponse),
        (status = 503, description = "A check failed or shutdown has begun; `checks` lists each",
            body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    // Taken first: a check that began before shutdown answers as it would have.
    let draining = state.draining.load(Ordering::SeqCst);
    let timeout = Duration::from_millis(state.config.http.ready_check_timeout_ms);
    let database = timed(timeout, async { state.db.ping().await.map_err(|e| e.to_string()) });
    let redis = async {
        match &state.redis {
            Some(redis) => Some(timed(timeout, async { redis.ping().await.map_err(|e| e.to_string()) }).await),
            None => None,
        }
    };
    let (database, redis) = tokio::join!(database, redis);

    let mut checks = BTreeMap::new();
    checks.insert("database", database);
    if let Some(mut redis) = redis {
        // Without Redis each node falls back to local limits and database reads: degraded, not down.
        if redis.status != "ok" {
            redis.status = "degraded";
        }
        checks.insert("redis", redis);
    }
    if draining {
        checks.insert("shutdown", Check { status: "draining", latency_ms: 0.0, error: None });
    }
    let failing: Vec<&str> =
        checks.iter().filter(|(_, c)| !matches!(c.status, "ok" | "degraded")).map(|(name, _)| *name).collect();
    if failing.is_empty() {
        let status = if checks.values().any(|c| c.status == "degraded") { "degraded" } else { "ok" };
        return Json(ReadyResponse { status, checks }).into_response();
    }
    let mut problem =
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", format!("Not ready: {}.", failing.join(", ")));
    problem.title = "Service not ready".to_owned();
    problem.extensions.insert("checks".to_owned(), serde_json::to_value(&checks).unwrap_or_default());
    let mut response = problem.into_response();
    response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

async fn timed(timeout: Duration, check: impl Future<Output = Result<(), String>>) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, check).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(Ok(())) => Check { status: "ok", latency_ms, error: None },
        Ok(Err(error)) => Check { status: "failed", latency_ms, error: Some(error) },
        Err(_) => Check { status: "timeout", latency_ms, error: Some(format!("no answer within {timeout:?}")) },
    }
}

/// The operator's view: version, uptime, backends, the database (pool, schema version,
/// pending migrations, slow-query threshold) and limits. Admins only.
#[utoipa::path(get, path = "/status", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "Server status", body = StatusResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status(
    State(state): State<AppState>,
    axum::Extension(realtime): axum::Extension<crate::realtime::Realtime>,
    principal: Principal,
) -> Result<Json<StatusResponse>, ApiError> {
    principal.require_admin()?;
    let config = &state.config;
    // Bounded like a readiness check: the operator's view must answer while the database
    // does not, showing what it could not learn as null.
    let timeout = Duration::from_millis(config.http.ready_check_timeout_ms);
    let schema = tokio::time::timeout(timeout, state.db.schema_status()).await;
    let schema = match schema {
        Ok(Ok(schema)) => Some(schema),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::error::ErrorChain(&e), "/status could not read the schema version");
            None
        }
        Err(_) => None,
    };
    let latest_migration =
        state.db.migrator().iter().filter(|m| m.migration_type.is_up_migration()).map(|m| m.version).max();
    Ok(Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: env!("BUILD_GIT_COMMIT"),
        instance_id: state.instance_id.to_string(),
        uptime_secs: state.started_at.elapsed().as_secs(),
        backends: Backends { database: state.db.kind(), cache: state.cache.backend() },
        database: DatabaseStatus {
            pool: state.db.pool_stats(),
            schema_version: schema.and_then(|s| s.applied),
            latest_migration: latest_migration.unwrap_or(0),
            pending_migrations: schema.map(|s| s.pending),
            slow_query_ms: config.database.slow_query_ms,
        },
        limits: Limits {
            request_timeout_secs: config.http.request_timeout_secs,
            body_limit_bytes: config.http.body_limit_bytes,
            database_pool_size: config.database.pool_size,
            database_acquire_timeout_secs: config.database.acquire_timeout_secs,
            shutdown_grace_secs: config.shutdown.grace_secs,
        },
        realtime: realtime.status().await,
    }))
}

/// Prometheus text exposition of every metric this process records.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 401, description = "`metrics.token` is set and the request does not carry it as a bearer token"),
        (status = 404, description = "Not served on this listener: `metrics.listen` is set, or the listener is not loopback and no `metrics.token` is set")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let pool = state.db.pool_stats();
    let kind = state.db.kind();
    metrics::gauge!("db_pool_max_connections", "backend" => kind).set(f64::from(pool.max_size));
    metrics::gauge!("db_pool_size", "backend" => kind).set(f64::from(pool.size));
    metrics::gauge!("db_pool_connections", "backend" => kind, "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("db_pool_connections", "backend" => kind, "state" => "in_use").set(f64::from(pool.in_use));
    if let Some(entries) = state.cache.entry_count() {
        metrics::gauge!("cache_entries").set(entries as f64);
    }
    let mut body = state.metrics.render();
    state.http_metrics.render(&mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
