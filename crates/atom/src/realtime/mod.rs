//! Real-time: Socket.io at `/socket.io/` (socketioxide), the ground that conversation rooms
//! and messages will stand on.
//!
//! A client connects to the default namespace with `auth: { token }`, an access JWT or an
//! API key, checked by the same [`verify_credential`] as every HTTP request (a disabled
//! account is refused). Admission happens in a connect middleware, before the server answers
//! the connect packet, so a refused client never sees `connect`; it gets a `connect_error`
//! whose message is one of:
//!
//! - `unauthorized`: no token, or one that does not verify; nothing more is said. Each
//!   failure counts against the address's anonymous rate limit, as on HTTP.
//! - `too_many_connections`: over `realtime.max_connections_per_address` (by client address,
//!   honouring `http.trusted_proxies`) or `realtime.max_connections_per_user` (by user id:
//!   an API key counts for its owner). Which cap is logged and counted in
//!   `realtime_connections_refused_total{reason}`; socketioxide 0.18 sends a connect error's
//!   message and nothing else, so the client is not told.
//! - `unavailable`: the credential could not be checked (database or cache down).
//!
//! Invariants: an admitted socket has its [`Principal`] and its [`ConnectionSlot`] in its
//! extensions and its event handlers registered before the client learns it is connected
//! (socketioxide runs the connect handler in a task of its own, after answering, so
//! handlers registered there could miss the client's first event). The slot is released
//! exactly once when the socket goes, whatever the reason (see [`caps`]).
//!
//! The caps count this node's connections, in process: with several nodes behind a load
//! balancer a client can hold up to that many times as many. A token is checked when the
//! connection opens; one that expires later does not end the connection, but one that is
//! revoked does, on every node ([`revocation`]: a disabled account, a revoked API key, a
//! logout, a password change).
//!
//! Before any of that, a client opens an Engine.IO session (the handshake) and has
//! `realtime.connect_timeout_secs` to send its CONNECT; pending handshakes count against their
//! address ([`handshake`]), so unauthenticated sessions cannot pile up.
//!
//! Socket.io requests are routes like any other, so they pass the HTTP middleware: request
//! logs, CORS, security headers, per-address rate limits, load shedding. A polling client
//! holds one request open per long poll, so the ping interval is kept below
//! `http.request_timeout_secs`, and its messages are limited to `http.body_limit_bytes`.

pub mod caps;
mod handshake;
mod revocation;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;

use crate::error::ApiError;
use crate::identity::Principal;
use crate::identity::auth::verify_credential;
use crate::state::AppState;
pub use caps::{Cap, ConnectionCaps, ConnectionSlot, OverCap};
pub use revocation::user_room;

/// Where Socket.io is served.
pub const PATH: &str = "/socket.io/";

/// The Socket.io server of this node, for shutting it down.
#[derive(Debug, Clone)]
pub struct Realtime {
    io: SocketIo,
    /// The task that closes sockets whose credentials ended.
    revocations: tokio::task::AbortHandle,
    conversations: Arc<crate::conversations::socket::Hub>,
}

impl Realtime {
    /// Closes every connection (clients see their transport close and reconnect, to another
    /// node behind a load balancer) and waits, at most `within`, until they are closed.
    pub async fn close(&self, within: Duration) {
        self.revocations.abort();
        self.conversations.stop();
        if tokio::time::timeout(within, self.io.close()).await.is_err() {
            tracing::warn!(?within, "shutdown: socket.io connections did not all close in time");
        }
    }
}

/// What the Socket.io handlers share.
#[derive(Debug, Clone)]
struct Context {
    app: AppState,
    caps: Arc<ConnectionCaps>,
    conversations: Arc<crate::conversations::socket::Hub>,
}

/// The Socket.io route at [`PATH`], and the handle that closes its connections at shutdown.
pub fn router(state: &AppState) -> (Router<AppState>, Realtime) {
    let config = &state.config;
    let connect_timeout = Duration::from_secs(config.realtime.connect_timeout_secs);
    let caps = ConnectionCaps::new(
        config.realtime.max_connections_per_address,
        config.realtime.max_connections_per_user,
        connect_timeout,
    );
    // A long poll lasts until the next ping at most; it must end before the request timeout.
    let ping_interval = Duration::from_secs(config.http.request_timeout_secs.saturating_sub(5).clamp(1, 25));
    let max_message = config.http.body_limit_bytes;
    let conversations = crate::conversations::socket::Hub::new(&state.db, &state.bus, &config.conversations);
    let (service, io) = SocketIo::builder()
        .ping_interval(ping_interval)
        .connect_timeout(connect_timeout)
        .max_payload(u64::try_from(max_message).unwrap_or(u64::MAX))
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .with_state(Context { app: state.clone(), caps: Arc::clone(&caps), conversations: Arc::clone(&conversations) })
        .build_svc();
    // socketioxide keeps the handshake's parts for the connection's life: the peer address
    // (the server's `ConnectInfo` extension) goes with them, for `admit`.
    conversations.bind(&io);
    io.ns("/", on_connect.with(admit));
    let gate =
        handshake::Gate { edge: Arc::clone(&state.edge), caps, retry_after_secs: config.realtime.connect_timeout_secs };
    let service = tower::Layer::layer(&axum::middleware::from_fn_with_state(gate, handshake::count_pending), service);
    let revocations = revocation::start(io.clone(), &state.bus);
    (Router::new().route_service(PATH, service), Realtime { io, revocations, conversations })
}

/// The `auth` payload of a connect packet.
#[derive(Debug, serde::Deserialize)]
struct ConnectAuth {
    #[serde(default)]
    token: Option<String>,
}

/// Why a connection was refused; its `Display` is the connect error's message.
#[derive(Debug)]
enum Refusal {
    Unauthorized,
    OverCap(OverCap),
    Unavailable,
}

impl Refusal {
    /// The `reason` label of `realtime_connections_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::OverCap(OverCap { cap: Cap::Address, .. }) => "address_cap",
            Self::OverCap(OverCap { cap: Cap::User, .. }) => "user_cap",
            Self::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unauthorized => "unauthorized",
            Self::OverCap(_) => "too_many_connections",
            Self::Unavailable => "unavailable",
        })
    }
}

/// The connect middleware: authenticates, applies the caps, and sets the socket up.
async fn admit(
    socket: SocketRef,
    State(context): State<Context>,
    TryData(auth): TryData<ConnectAuth>,
) -> Result<(), Refusal> {
    let parts = socket.req_parts();
    let address = context.app.edge.client_ip(&parts.headers, &parts.extensions);
    if let Some(address) = address {
        context.caps.end_handshake(address);
    }
    let refuse = |refusal: Refusal| {
        metrics::counter!("realtime_connections_refused_total", "reason" => refusal.reason()).increment(1);
        tracing::info!(
            target: "atom::realtime",
            sid = %socket.id,
            client_addr = address.map(|a| a.to_string()),
            reason = refusal.reason(),
            "socket.io connection refused"
        );
        refusal
    };
    let principal = match authenticate(&context.app, auth.ok().and_then(|a| a.token), address).await {
        Ok(principal) => principal,
        Err(refusal) => return Err(refuse(refusal)),
    };
    let slot = context.caps.try_open(address, &principal.user_id).map_err(|over| refuse(Refusal::OverCap(over)))?;
    let room = user_room(&principal.user_id);
    socket.join(room);
    if let Err(e) = context.conversations.attach(&socket, &principal).await {
        tracing::error!(target: "atom::realtime", error = %crate::error::ErrorChain(&e), "could not set a socket's conversations up");
        slot.release();
        return Err(refuse(Refusal::Unavailable));
    }
    socket.extensions.insert(principal);
    socket.extensions.insert(Arc::new(slot));
    socket.on("whoami", whoami);
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// The principal behind `token`; a failure counts against the address's anonymous budget.
async fn authenticate(state: &AppState, token: Option<String>, address: Option<IpAddr>) -> Result<Principal, Refusal> {
    let outcome = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => verify_credential(&state.identity, token).await,
        None => Err(ApiError::Unauthorized { error: "", description: "Authentication required." }),
    };
    match outcome {
        Ok(principal) => Ok(principal),
        Err(ApiError::Unauthorized { .. }) => {
            // Whether the budget is spent or not, the client hears only `unauthorized`.
            let _ = crate::edge::count_failed_authentication(&state.edge, address).await;
            Err(Refusal::Unauthorized)
        }
        Err(e) => {
            tracing::error!(target: "atom::realtime", error = %crate::error::ErrorChain(&e), "could not check a socket.io credential");
            Err(Refusal::Unavailable)
        }
    }
}

/// Runs once the client has been told it is connected.
async fn on_connect(socket: SocketRef, Extension(principal): Extension<Principal>) {
    tracing::info!(
        target: "atom::realtime",
        sid = %socket.id,
        user_id = %principal.user_id,
        transport = ?socket.transport_type(),
        "socket.io connected"
    );
}

async fn on_disconnect(socket: SocketRef, reason: DisconnectReason) {
    if let Some(slot) = socket.extensions.get::<Arc<ConnectionSlot>>() {
        slot.release();
    }
    if let Some(conversations) = socket.extensions.get::<Arc<crate::conversations::socket::Hub>>() {
        conversations.detach(&socket);
    }
    tracing::info!(target: "atom::realtime", sid = %socket.id, %reason, "socket.io disconnected");
}

/// `whoami`: acknowledges with the connection's user id and role.
async fn whoami(socket: SocketRef, ack: AckSender) {
    let Some(principal) = socket.extensions.get::<Principal>() else { return };
    let answer = serde_json::json!({ "user_id": principal.user_id, "role": principal.role });
    if let Err(e) = ack.send(&answer) {
        tracing::debug!(target: "atom::realtime", sid = %socket.id, error = %e, "whoami: acknowledgement not sent");
    }
}
