//! Pending handshakes: an Engine.IO session opened but not yet turned into a Socket.io
//! connection costs the server memory until the connect timeout closes it, and no credential
//! has been checked yet. Each new session (a request to [`super::PATH`] without a `sid`
//! parameter, over either transport) counts against its client address in
//! [`ConnectionCaps::begin_handshake`]; past `realtime.max_connections_per_address` pending
//! ones, the request gets a 429 problem, counted as
//! `realtime_connections_refused_total{reason="handshake_cap"}`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ConnectionCaps;
use crate::edge::Edge;
use crate::error::ApiError;

/// What the gate needs.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    pub edge: Arc<Edge>,
    pub caps: Arc<ConnectionCaps>,
    pub retry_after_secs: u64,
}

/// The middleware in front of the Socket.io service.
pub(super) async fn count_pending(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    if opens_a_session(&req)
        && let Some(address) = gate.edge.client_ip(req.headers(), req.extensions())
        && gate.caps.begin_handshake(address).is_err()
    {
        metrics::counter!("realtime_connections_refused_total", "reason" => "handshake_cap").increment(1);
        tracing::info!(target: "atom::realtime", client_addr = %address, "socket.io handshake refused: too many pending");
        let detail = "Too many Socket.io handshakes from this address are waiting for their CONNECT.".to_owned();
        return ApiError::TooManyRequests { retry_after_secs: gate.retry_after_secs, detail }.into_response();
    }
    next.run(req).await
}

/// An Engine.IO request without a session id opens a new session.
fn opens_a_session(req: &Request) -> bool {
    let query = req.uri().query().unwrap_or("");
    !form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "sid")
}
