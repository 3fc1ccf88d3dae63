//! The HTTP surface: the operational routes, the OpenAPI document, and the middleware stack
//! that wraps every route, including those other modules contribute.
//!
//! Each module owns its routes (`pub fn router() -> Router<AppState>`); [`crate::app`]
//! merges them and calls [`with_middleware`] once around the whole.

pub mod extract;
mod health;
pub mod metrics;
pub mod metrics_access;
pub mod middleware;
pub mod openapi;
mod refusal;
pub mod server;
pub mod watchdog;

use axum::Router;
use axum::routing::get;

pub use extract::{Json, Query, Validate};
pub use health::{Check, HealthResponse, ReadyResponse, StatusResponse, status};

use crate::app::AppState;
use crate::error::ApiError;

/// Health, readiness, status, metrics and the OpenAPI document.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics_access::main_listener))
        .route("/openapi.json", get(openapi::serve))
}

/// Wraps `routes` in the stack every request passes through (see [`middleware`]).
pub fn with_middleware(routes: Router<AppState>, state: &AppState) -> middleware::Stack {
    let router =
        routes.fallback(|| async { ApiError::NotFound }).layer(middleware::RecordRouteLayer).with_state(state.clone());
    middleware::Stack::new(router, state)
}

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
