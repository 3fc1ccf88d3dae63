//! The baseline for `bench/http.sh`: axum with a single `GET /health` route answering
//! `{"status":"ok"}`, and nothing else: no middleware, no state, no logging, no metrics.
//!
//! It mirrors what atom does around that route except the middleware stack, so the ratio of
//! the two servers' throughput is the cost of that stack: the same multi-threaded tokio
//! runtime (one worker per CPU the process may run on), the same `TCP_NODELAY` on accepted
//! connections, and the same handler shape (a serde struct serialised by `axum::Json`).
//!
//! Usage: `bare-axum [ADDR]`, or `BARE_AXUM_LISTEN=ADDR bare-axum`; default `127.0.0.1:8001`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

const DEFAULT_LISTEN: &str = "127.0.0.1:8001";

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[tokio::main]
async fn main() -> ExitCode {
    let listen = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BARE_AXUM_LISTEN").ok())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let addr: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("error: invalid listen address {listen:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: could not listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new().route("/health", get(health));
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the HTTP server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
