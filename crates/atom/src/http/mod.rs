//! The HTTP surface: the operational routes, the OpenAPI document, and the middleware stack
//! that wraps every route, including those other modules contribute.
//!
//! Each module owns its routes (`pub fn router() -> Router<AppState>`); [`crate::app`]
//! merges them and calls [`with_middleware`] once around the whole.

pub mod extract;
mod health;
mod linger;
pub mod metrics;
pub mod metrics_access;
pub mod middleware;
pub mod openapi;
pub mod reject_nul;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

pub use extract::{Json, Query, Validate, has_unprintable};
pub use health::{Check, HealthResponse, ReadyResponse, StatusResponse, status};

use crate::error::ApiError;
use crate::state::AppState;

/// Health, readiness, status, metrics and the OpenAPI document.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics_access::main_listener))
        .route("/openapi.json", get(openapi::serve))
}

/// Wraps `routes` in the stack every request passes through (see [`middleware`]), outermost
/// layer first. One `ServiceBuilder` applied once: each `Router::layer` call boxes the route
/// again, and every request would clone each box.
pub fn with_middleware(routes: Router<AppState>, state: &AppState) -> Router {
    let http = &state.config.http;
    let hsts = state.config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let ([nosniff, frame_options, corp, csp, cache_control], hsts) = crate::edge::headers::security_headers(hsts);
    let stack = ServiceBuilder::new()
        .map_request(middleware::drop_hostile_request_id)
        .layer(SetRequestIdLayer::new(middleware::REQUEST_ID, middleware::NewRequestId))
        .layer(PropagateRequestIdLayer::new(middleware::REQUEST_ID))
        .layer(nosniff)
        .layer(frame_options)
        .layer(corp)
        .layer(csp)
        .layer(cache_control)
        .option_layer(hsts)
        .layer(from_fn_with_state(Arc::clone(&state.http_metrics), middleware::observe))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .option_layer(crate::edge::headers::cors(&http.cors_allowed_origins))
        // Also the body limit, per route (see `middleware::limit_body`); axum's own limit (2 MiB
        // unless set) would otherwise still cap the extractors.
        .layer(from_fn_with_state(state.clone(), middleware::guard))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(http.request_timeout_secs),
        ))
        .layer(DefaultBodyLimit::max(http.body_limit_bytes));
    routes.fallback(|| async { ApiError::NotFound }).layer(stack).with_state(state.clone())
}
