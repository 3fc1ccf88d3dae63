//! Real-time: Socket.io at `/socket.io/` (socketioxide), on one node or several.
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
//! The handlers are generic over socketioxide's [`Adapter`]: [`start`] picks
//! socketioxide-redis's ([`adapter`]) when `redis.url` is set, so rooms, disconnects and
//! socket queries span every node, and the local adapter otherwise; [`Realtime`] is the
//! node's server whatever its adapter. Conversation handlers plug in the same way: generic
//! over `A: Adapter`, registered once in the server's [`Events`] table, which [`admit`] gives
//! each socket.
//!
//! Invariants: an admitted socket has its [`Principal`], its [`ConnectionSlot`], its event
//! budget ([`events`]) and its expiry timer ([`expiry`]) in its extensions and the event
//! table as its handler before the client learns it is connected (socketioxide runs the
//! connect handler in a task of its own, after answering, so handlers registered there could
//! miss the client's first event). The slot is released exactly once when the socket goes,
//! whatever the reason (see [`caps`]), and the expiry timer is cancelled with it.
//!
//! The server ends a connection itself when its credential expires ([`expiry`]) or is
//! revoked ([`revocation`]), when it floods ([`events`]), or on an admin's request
//! ([`routes`]): [`close_socket`] sends [`CLOSING_EVENT`] with the reason's code, then a
//! Socket.io disconnect, which socket.io-client does not retry by itself. At shutdown
//! [`Realtime::close`] closes the transports instead, which the client retries (elsewhere,
//! behind a load balancer).
//!
//! The caps count this node's connections, in process: with several nodes behind a load
//! balancer a client can hold up to that many times as many.
//!
//! Before any of that, a client opens an Engine.IO session (the handshake) and has
//! `realtime.connect_timeout_secs` to send its CONNECT; pending handshakes count against their
//! address ([`handshake`]), so unauthenticated sessions cannot pile up.
//!
//! Socket.io requests are routes like any other, so they pass the HTTP middleware: request
//! logs, CORS, security headers, per-address rate limits, load shedding. A polling client
//! holds one request open per long poll, so the ping interval is kept below
//! `http.request_timeout_secs`, and its messages are limited to `http.body_limit_bytes`.

pub mod adapter;
pub mod caps;
pub mod connections;
pub mod events;
mod expiry;
mod handshake;
mod revocation;
pub mod routes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::DisconnectReason;
use utoipa::ToSchema;

use crate::conversations::socket::Hub;
use crate::error::ApiError;
use crate::identity::Principal;
use crate::identity::auth::verify_credential;
use crate::state::AppState;
use adapter::{PubSub, RedisAdapter};
pub use caps::{Cap, ConnectionCaps, ConnectionSlot, OverCap};
pub use connections::{AdapterFailed, Connection};
pub use events::{Events, error_ack};
pub use revocation::user_room;

/// Where Socket.io is served.
pub const PATH: &str = "/socket.io/";

/// Each websocket's read buffer (tungstenite's, allocated and zeroed per connection, and held
/// for its life): a client's events are small (a ping is a few bytes, a `message:send` a few
/// hundred), and a larger frame still arrives whole (tungstenite reserves a frame's length
/// when it reads its header), only in more reads. engineioxide's default is 4 KiB.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// The event the server sends just before it closes a connection, `{code, message}`.
pub const CLOSING_EVENT: &str = "session:closing";

/// Why the server closes a connection: the `code` of [`CLOSING_EVENT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The credential expired: refresh it, then reconnect.
    TokenExpired,
    /// The credential was revoked (logout, password change, disabled account, revoked key).
    CredentialRevoked,
    /// Too many refused events.
    RateLimited,
    /// An admin closed the connection.
    ByAdmin,
}

impl Closing {
    pub fn code(self) -> &'static str {
        match self {
            Self::TokenExpired => "token_expired",
            Self::CredentialRevoked => "credential_revoked",
            Self::RateLimited => "rate_limited",
            Self::ByAdmin => "disconnected_by_admin",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::TokenExpired => "The access token expired: refresh it and reconnect.",
            Self::CredentialRevoked => "The credential of this connection was revoked.",
            Self::RateLimited => "Too many refused events.",
            Self::ByAdmin => "An administrator closed this connection.",
        }
    }

    /// The payload of [`CLOSING_EVENT`].
    pub fn payload(self) -> serde_json::Value {
        serde_json::json!({ "code": self.code(), "message": self.message() })
    }
}

/// Sends [`CLOSING_EVENT`] to a socket of this node, then disconnects it (socket.io-client
/// sees `io server disconnect` and does not reconnect on its own).
pub(crate) fn close_socket<A: Adapter>(socket: SocketRef<A>, closing: Closing) {
    metrics::counter!("realtime_events_out_total", "event" => CLOSING_EVENT).increment(1);
    let _ = socket.emit(CLOSING_EVENT, &closing.payload());
    let sid = socket.id;
    if let Err(e) = socket.disconnect() {
        tracing::debug!(target: "atom::realtime", %sid, error = %e, "socket already closing");
    }
}

/// The Socket.io server of this node, by adapter: what shutdown, the admin routes and
/// `/status` act on. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Realtime {
    /// In process: rooms and queries reach this node's sockets.
    Local(Arc<Node<LocalAdapter>>),
    /// socketioxide-redis: rooms and queries reach every node's.
    Redis(Arc<Node<RedisAdapter>>),
}

/// One node's Socket.io server over adapter `A`, and the tasks that serve it.
pub struct Node<A: Adapter> {
    io: SocketIo<A>,
    pubsub: Option<PubSub>,
    /// The revocation listener and the gauge sampler, stopped at shutdown.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl<A: Adapter> std::fmt::Debug for Node<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("io", &self.io).field("pubsub", &self.pubsub).finish_non_exhaustive()
    }
}

/// Runs `$body` with `$node` bound to the node, whatever its adapter.
macro_rules! with_node {
    ($realtime:expr, $node:ident => $body:expr) => {
        match $realtime {
            Realtime::Local($node) => $body,
            Realtime::Redis($node) => $body,
        }
    };
}

/// The real-time section of `/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RealtimeStatus {
    /// This node's Socket.io server id (the `node_id` of a connection).
    pub node_id: String,
    /// `local` or `redis`.
    pub adapter: &'static str,
    /// Sockets connected to this node.
    pub sockets: usize,
    /// Rooms on this node.
    pub rooms: usize,
    /// With the Redis adapter, whether its last command reached Redis; null without.
    pub redis_reachable: Option<bool>,
}

impl Realtime {
    /// Closes every connection (clients see their transport close and reconnect, to another
    /// node behind a load balancer) and waits, at most `within`, until they are closed.
    pub async fn close(&self, within: Duration) {
        with_node!(self, node => {
            for task in &node.tasks {
                task.abort();
            }
            if tokio::time::timeout(within, node.io.close()).await.is_err() {
                tracing::warn!(?within, "shutdown: socket.io connections did not all close in time");
            }
        })
    }

    /// This node's id among the Socket.io servers.
    pub fn node_id(&self) -> String {
        with_node!(self, node => node.io.config().server_id.to_string())
    }

    /// Whether a cross-node query reaches every node: always without Redis, and with it while
    /// Redis answers.
    pub fn reaches_every_node(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Redis(node) => node.pubsub.as_ref().is_some_and(PubSub::reachable),
        }
    }

    /// The live connections of `user_id` on every node.
    pub async fn connections(&self, user_id: &str) -> Result<Vec<Connection>, AdapterFailed> {
        with_node!(self, node => connections::list(&node.io, user_id).await)
    }

    /// Sends [`CLOSING_EVENT`] to `connection`, wherever it is, and disconnects it.
    pub async fn disconnect(&self, connection: &Connection) -> Result<(), AdapterFailed> {
        with_node!(self, node => connections::disconnect(&node.io, connection).await)
    }

    /// Sends `event` with `data` to every socket in `room`, on every node.
    pub async fn emit_to<T: Serialize + ?Sized>(
        &self,
        room: String,
        event: &'static str,
        data: &T,
    ) -> Result<(), AdapterFailed> {
        metrics::counter!("realtime_events_out_total", "event" => event).increment(1);
        with_node!(self, node => node.io.to(room).emit(event, data).await.map_err(|e| AdapterFailed(e.to_string())))
    }

    pub async fn status(&self) -> RealtimeStatus {
        let (adapter, sockets, rooms) = with_node!(self, node => {
            let rooms = node.io.local().rooms().await.map_or(0, |r| r.len());
            (if node.pubsub.is_some() { "redis" } else { "local" }, node.io.sockets().len(), rooms)
        });
        let redis_reachable = match self {
            Self::Local(_) => None,
            Self::Redis(_) => Some(self.reaches_every_node()),
        };
        RealtimeStatus { node_id: self.node_id(), adapter, sockets, rooms, redis_reachable }
    }
}

/// What the Socket.io handlers share.
#[derive(Debug, Clone)]
struct Context {
    app: AppState,
    caps: Arc<ConnectionCaps>,
    limits: events::EventLimits,
    /// Admissions reading the database at once (see [`admit`]), and how long one waits its
    /// turn before it is refused `unavailable`.
    admissions: Arc<tokio::sync::Semaphore>,
    admission_wait: Duration,
}

/// The Socket.io route at [`PATH`], and the handle of this node's server: over
/// socketioxide-redis's adapter when `redis.url` is set, else the local one.
pub async fn start(state: &AppState) -> Result<(Router<AppState>, Realtime), redis::RedisError> {
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
    let limits = events::EventLimits::new(
        config.realtime.events_per_second,
        config.realtime.event_burst,
        config.realtime.refused_events_per_minute,
    );
    let builder = SocketIo::builder()
        .ping_interval(ping_interval)
        .connect_timeout(connect_timeout)
        .max_payload(u64::try_from(max_message).unwrap_or(u64::MAX))
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .ws_max_message_size(max_message)
        .ws_max_frame_size(max_message)
        .with_state(Context {
            app: state.clone(),
            caps: Arc::clone(&caps),
            limits,
            // Half the pool: requests and sends keep the other half during a connect storm.
            admissions: Arc::new(tokio::sync::Semaphore::new((config.database.pool_size as usize / 2).max(1))),
            admission_wait: connect_timeout,
        });
    match &config.redis.url {
        None => {
            let conversations = Hub::<LocalAdapter>::new(&state.db, &state.bus, &config.conversations);
            let (service, io) =
                builder.with_state(Arc::clone(&conversations)).with_state(client_events::<LocalAdapter>()).build_svc();
            let delivery = conversations.bind(&io);
            // socketioxide keeps the handshake's parts for the connection's life: the client
            // address ([`handshake::ClientAddress`]) goes with them, for `admit`.
            io.ns("/", on_connect.with(admit));
            let routes = Router::new().route_service(PATH, service);
            let (routes, node) = serve(state, caps, routes, io, None, delivery);
            Ok((routes, Realtime::Local(node)))
        }
        Some(url) => {
            let timeout = Duration::from_millis(config.realtime.adapter_timeout_ms);
            let pubsub = PubSub::new(url, timeout)?;
            let adapter_state = pubsub.clone().adapter_state(&config.redis.key_prefix);
            let conversations = Hub::<RedisAdapter>::new(&state.db, &state.bus, &config.conversations);
            let (service, io) = builder
                .with_adapter::<RedisAdapter>(adapter_state)
                .with_state(Arc::clone(&conversations))
                .with_state(client_events::<RedisAdapter>())
                .build_svc();
            let delivery = conversations.bind(&io);
            // Our driver never fails a subscription (it retries in the background), so this
            // registers the namespace at once, whether Redis answers or not.
            if let Err(e) = io.ns("/", on_connect.with(admit)).await {
                tracing::error!(target: "atom::realtime", error = %e, "socket.io: the default namespace was not added");
            }
            let routes = Router::new().route_service(PATH, service);
            let (routes, node) = serve(state, caps, routes, io, Some(pubsub), delivery);
            Ok((routes, Realtime::Redis(node)))
        }
    }
}

/// The table of every client event, shared by the sockets ([`events`]).
fn client_events<A: Adapter>() -> Arc<Events<A>> {
    let mut events = Events::default();
    events.on("whoami", whoami::<A>);
    Hub::<A>::register(&mut events);
    Arc::new(events)
}

/// `route` behind the count of pending handshakes, and the node with its tasks started.
fn serve<A: Adapter>(
    state: &AppState,
    caps: Arc<ConnectionCaps>,
    route: Router<AppState>,
    io: SocketIo<A>,
    pubsub: Option<PubSub>,
    conversations: Vec<tokio::task::AbortHandle>,
) -> (Router<AppState>, Arc<Node<A>>) {
    let gate = handshake::Gate {
        edge: Arc::clone(&state.edge),
        caps,
        retry_after_secs: state.config.realtime.connect_timeout_secs,
    };
    let route = route.route_layer(axum::middleware::from_fn_with_state(gate, handshake::count_pending));
    let mut tasks = vec![revocation::start(io.clone(), &state.bus), sample_gauges(io.clone())];
    tasks.extend(conversations);
    (route, Arc::new(Node { io, pubsub, tasks }))
}

/// Sets `realtime_sockets` and `realtime_rooms` (this node's) every few seconds: counting
/// rooms walks every socket, too much to do on each connect.
fn sample_gauges<A: Adapter>(io: SocketIo<A>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            metrics::gauge!("realtime_sockets").set(io.sockets().len() as f64);
            if let Ok(rooms) = io.local().rooms().await {
                metrics::gauge!("realtime_rooms").set(rooms.len() as f64);
            }
        }
    })
    .abort_handle()
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
    /// A valid credential whose scopes do not include conversations (an API key with only
    /// `connections:use` or `admin`): see [`Principal::may_use_realtime`].
    Forbidden,
    OverCap(OverCap),
    Unavailable,
}

impl Refusal {
    /// The `reason` label of `realtime_connections_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
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
            Self::Forbidden => "forbidden",
            Self::OverCap(_) => "too_many_connections",
            Self::Unavailable => "unavailable",
        })
    }
}

/// The connect middleware: authenticates, applies the caps, and sets the socket up.
async fn admit<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(context): State<Context>,
    State(conversations): State<Arc<Hub<A>>>,
    State(events): State<Arc<Events<A>>>,
    TryData(auth): TryData<ConnectAuth>,
) -> Result<(), Refusal> {
    let address = socket.req_parts().extensions.get::<handshake::ClientAddress>().map(|a| a.0);
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
    // Admission reads the database (the account, the user's conversations). A connect storm,
    // such as the restart of a busy node, would queue thousands of admissions on the pool at
    // once and refuse those still waiting at its acquire timeout; here they wait their turn.
    let Ok(Ok(_admission)) = tokio::time::timeout(context.admission_wait, context.admissions.acquire()).await else {
        return Err(refuse(Refusal::Unavailable));
    };
    let principal = match authenticate(&context.app, auth.ok().and_then(|a| a.token), address).await {
        Ok(principal) => principal,
        Err(refusal) => return Err(refuse(refusal)),
    };
    let slot = context.caps.try_open(address, &principal.user_id).map_err(|over| refuse(Refusal::OverCap(over)))?;
    socket.extensions.insert(Arc::new(slot));
    socket.extensions.insert(context.limits.budget());
    socket.join(user_room(&principal.user_id));
    connections::join(&socket, &io.config().server_id.to_string());
    expiry::arm(&socket, &principal);
    if let Err(e) = conversations.attach(&socket, &principal).await {
        tracing::error!(target: "atom::realtime", error = %crate::error::ErrorChain(&e), "could not set a socket's conversations up");
        if let Some(slot) = socket.extensions.get::<Arc<ConnectionSlot>>() {
            slot.release();
        }
        return Err(refuse(Refusal::Unavailable));
    }
    socket.extensions.insert(principal);
    events.attach(&socket);
    socket.on_disconnect(on_disconnect::<A>);
    Ok(())
}

/// The principal behind `token`; a failure counts against the address's anonymous budget.
async fn authenticate(state: &AppState, token: Option<String>, address: Option<IpAddr>) -> Result<Principal, Refusal> {
    let outcome = match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(token) => verify_credential(&state.identity, token).await,
        None => Err(ApiError::Unauthorized { error: "", description: "Authentication required." }),
    };
    match outcome {
        Ok(principal) if principal.may_use_realtime() => Ok(principal),
        Ok(_) => Err(Refusal::Forbidden),
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
async fn on_connect<A: Adapter>(socket: SocketRef<A>, Extension(principal): Extension<Principal>) {
    tracing::info!(
        target: "atom::realtime",
        sid = %socket.id,
        user_id = %principal.user_id,
        transport = ?socket.transport_type(),
        "socket.io connected"
    );
}

async fn on_disconnect<A: Adapter>(socket: SocketRef<A>, reason: DisconnectReason) {
    if let Some(slot) = socket.extensions.get::<Arc<ConnectionSlot>>() {
        slot.release();
    }
    if let Some(timer) = socket.extensions.get::<expiry::ExpiryTimer>() {
        timer.cancel();
    }
    if let Some(conversations) = socket.extensions.get::<Arc<Hub<A>>>() {
        conversations.detach(&socket);
    }
    tracing::info!(target: "atom::realtime", sid = %socket.id, %reason, "socket.io disconnected");
}

/// `whoami`: acknowledges with the connection's user id and role.
async fn whoami<A: Adapter>(socket: SocketRef<A>, ack: AckSender<A>) {
    let Some(principal) = socket.extensions.get::<Principal>() else { return };
    let answer = serde_json::json!({ "user_id": principal.user_id, "role": principal.role });
    if let Err(e) = ack.send(&answer) {
        tracing::debug!(target: "atom::realtime", sid = %socket.id, error = %e, "whoami: acknowledgement not sent");
    }
}
