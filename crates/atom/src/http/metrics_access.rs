//! Who may read `GET /metrics`, and the optional listener that serves only it.
//!
//! The exposition names every route, the database and cache backends and their load: useful
//! to an attacker, so it is not public. Three ways, from `[metrics]`:
//!
//! - `metrics.listen` set: a second listener serves `/metrics` (the Prometheus convention of a
//!   separate port, kept off the public network), with no auth unless `metrics.token` is set;
//!   the main listener answers 404.
//! - `metrics.token` set: the main listener's `/metrics` needs `Authorization: Bearer
//!   <token>`, compared in constant time (as SHA-256 digests, so the length does not show).
//! - Neither: the main listener serves it to anyone only when it is bound to a loopback
//!   address (the embedded default, reachable from this machine only); bound to any other
//!   address it answers 404, and start-up logs how to turn it on.
//!
//! On the main listener `/metrics` passes the whole middleware stack and its per-address
//! anonymous rate limit ([`crate::edge::address_policy`]); the metrics listener has only the
//! one route and no middleware.

use std::future::Future;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// What a listener asks of a `/metrics` request.
#[derive(Debug)]
enum Access {
    Open,
    Token(SecretString),
    NotServed,
}

impl Access {
    fn main_listener(config: &Config) -> Self {
        match (&config.metrics.listen, &config.metrics.token) {
            (Some(_), _) => Self::NotServed,
            (None, Some(token)) => Self::Token(token.clone()),
            (None, None) if config.listen.ip().is_loopback() => Self::Open,
            (None, None) => Self::NotServed,
        }
    }

    fn metrics_listener(config: &Config) -> Self {
        config.metrics.token.clone().map_or(Self::Open, Self::Token)
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = match self {
            Self::Open => return Ok(()),
            Self::NotServed => return Err(ApiError::NotFound),
            Self::Token(token) => token,
        };
        let Some(presented) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized { error: "", description: "Authentication required." });
        };
        let presented = presented.as_bytes().strip_prefix(b"Bearer ").unwrap_or_default();
        let digest = |bytes: &[u8]| Sha256::digest(bytes);
        if bool::from(digest(presented).ct_eq(&digest(expected.expose_secret().as_bytes()))) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized { error: "invalid_token", description: "The metrics token is not valid." })
        }
    }
}

/// `/metrics` on the main listener.
pub async fn main_listener(state: State<AppState>, headers: HeaderMap) -> Response {
    match Access::main_listener(&state.config).check(&headers) {
        Ok(()) => super::health::metrics(state).await,
        Err(e) => e.into_response(),
    }
}

/// `/metrics` on the metrics listener.
async fn metrics_listener(state: State<AppState>, headers: HeaderMap) -> Response {
    match Access::metrics_listener(&state.config).check(&headers) {
        Ok(()) => super::health::metrics(state).await,
        Err(e) => e.into_response(),
    }
}

/// Logs once at start-up where `/metrics` is served, when the main listener does not serve it
/// to anyone because of its address.
pub fn log_exposure(config: &Config) {
    if matches!(Access::main_listener(config), Access::NotServed) && config.metrics.listen.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "GET /metrics is not served: the listener is not loopback; set ATOM_METRICS_TOKEN or ATOM_METRICS_LISTEN"
        );
    }
}

/// Serves `/metrics` alone on `listener` until `shutdown` resolves, then lets scrapes in
/// flight finish.
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let router = Router::new()
        .route("/metrics", get(metrics_listener))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state);
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_pairs(pairs.iter().copied()).expect("valid")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        headers
    }

    #[test]
    fn by_default_only_a_loopback_listener_serves_metrics() {
        let none = HeaderMap::new();
        assert!(Access::main_listener(&config(&[])).check(&none).is_ok(), "127.0.0.1:8000");
        assert!(Access::main_listener(&config(&[("LISTEN", "[::1]:8000")])).check(&none).is_ok());
        let public = config(&[("LISTEN", "0.0.0.0:8000")]);
        assert!(matches!(Access::main_listener(&public).check(&none), Err(ApiError::NotFound)));
    }

    #[test]
    fn a_token_is_required_when_set_and_compared_exactly() {
        let token = "0123456789abcdef-metrics";
        let config = config(&[("LISTEN", "0.0.0.0:8000"), ("METRICS_TOKEN", token)]);
        let access = Access::main_listener(&config);
        assert!(access.check(&bearer(token)).is_ok());
        for wrong in ["", "0123456789abcdef-metric", "0123456789abcdef-metricsX", "0123456789ABCDEF-metrics"] {
            assert!(matches!(access.check(&bearer(wrong)), Err(ApiError::Unauthorized { .. })), "{wrong:?}");
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, format!("Basic {token}").parse().expect("header"));
        assert!(access.check(&basic).is_err(), "only a bearer token");
        assert!(access.check(&HeaderMap::new()).is_err(), "none at all");
        assert!(Access::metrics_listener(&config).check(&bearer(token)).is_ok());
        assert!(Access::metrics_listener(&config).check(&HeaderMap::new()).is_err(), "the token holds there too");
    }

    #[test]
    fn with_its_own_listener_the_main_one_does_not_serve_metrics() {
        let config = config(&[("METRICS_LISTEN", "127.0.0.1:9100")]);
        assert!(matches!(Access::main_listener(&config).check(&HeaderMap::new()), Err(ApiError::NotFound)));
        assert!(Access::metrics_listener(&config).check(&HeaderMap::new()).is_ok(), "open there without a token");
    }
}
