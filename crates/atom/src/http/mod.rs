//! The HTTP surface: the operational routes, the OpenAPI document, and the middleware stack
//! that wraps every route, including those other modules contribute.
//!
//! Each module owns its routes (`pub fn router() -> Router<AppState>`); [`crate::app`]
//! merges them and calls [`with_middleware`] once around the whole.

pub mod extract;
mod health;
pub mod middleware;
pub mod openapi;
pub mod server;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

pub use extract::{Json, Query, Validate};
pub use health::{Check, HealthResponse, ReadyResponse, StatusResponse, status};

use crate::app::AppState;
use crate::edge;
use crate::error::ApiError;

/// Health, readiness, status, metrics and the OpenAPI document.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
}

/// Wraps `routes` in the stack every request passes through (see [`middleware`]).
pub fn with_middleware(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    let config = &state.config;
    // Router::layer wraps each route, so the outer layers see the matched route template.
    // Listed innermost first.
    let routes = routes
        .fallback(|| async { ApiError::NotFound })
        .layer(DefaultBodyLimit::max(config.http.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::limit_by_address))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge::shed_load));
    let routes = match edge::headers::cors(&config.http.cors_allowed_origins) {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    let hsts = edge::headers::Hsts(config.public_url.as_deref().is_some_and(|u| u.starts_with("https://")));
    routes
        .layer(axum::middleware::from_fn_with_state(hsts, edge::headers::security_headers))
        .layer(axum::middleware::from_fn(middleware::finalize_problems))
        .layer(axum::middleware::from_fn(middleware::observe))
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
