//! Atom Core: the server behind the Atom conversational agent.
//!
//! One binary, `atom`, serves a stable HTTP API over an embedded SQLite database by default,
//! or PostgreSQL and Redis when configured. The library is the whole server; `main.rs` only
//! parses the command line, sets up logging and calls in.
//!
//! # Layout
//!
//! - [`config`]: defaults, `atom.toml` and `ATOM_*` variables, validated as a whole.
//! - [`app`]: [`Application`]: build the state, merge the routers, bind, serve, shut down.
//! - [`state`]: [`AppState`], the handles every handler receives.
//! - [`http`]: the operational routes, the OpenAPI document and the middleware stack.
//! - [`error`]: [`ApiError`] and its RFC 9457 problem+json form.
//! - [`crypto`]: AES-256-GCM envelope encryption of secrets at rest under versioned master keys.
//! - [`edge`]: security headers, CORS, client address, rate limits, bans, load shedding.
//! - [`identity`]: accounts, JWT sessions, API keys, roles, login throttling, authentication.
//! - [`connectors`]: the connector vault: the provider catalog (`providers/*.toml`), the
//!   instance's OAuth apps, OAuth flows, encrypted connections, single-flight refresh, revocation.
//! - [`audit`]: the hash-chained audit log, its verification and its admin listing.
//! - [`backup`]: consistent snapshots, their verification, verified restores, scheduled backups.
//! - [`commands`]: the operator commands behind the CLI (migrate, admin, keys, audit, backup).
//! - [`realtime`]: Socket.io at `/socket.io/`: authenticated connections, per-address and
//!   per-user connection caps, rooms across nodes (socketioxide-redis), per-socket event
//!   budgets, connections ended with their credential, the admin's view of live connections.
//! - [`conversations`]: conversations, members and messages numbered gaplessly per
//!   conversation; the REST routes and the Socket.io events (send, sync, ack, typing), each
//!   socket's in-order delivery, presence, retention; agents' streamed replies (`agent:*`)
//!   and the built-in echo agent.
//! - [`storage`]: the [`Db`] pool over SQLite or PostgreSQL, its embedded migrations, the
//!   metrics and slow-query log of every named query, the registry of hot queries, and the
//!   gate that fails requests fast while PostgreSQL is down.
//! - [`cache`]: cache-aside for hot reads, in process or shared through Redis; the Redis
//!   connection and the circuit breaker every hot-path Redis call goes through.
//! - [`bus`]: events addressed to a user (credentials revoked, messages stored, membership
//!   changes, notifications), delivered to the subscribers
//!   of every node: in process, or through Redis pub/sub.
//! - [`telemetry`]: logging, the panic hook and the Prometheus recorder.
//! - [`shutdown`]: the signals that start a graceful shutdown.
//! - [`wire`], [`net`]: leaves: the request-id header, RFC 3339 times, address ranges.

pub mod app;
pub mod audit;
pub mod backup;
pub mod bus;
pub mod cache;
pub mod commands;
pub mod config;
pub mod connectors;
pub mod conversations;
pub mod crypto;
pub mod edge;
pub mod error;
pub mod http;
pub mod identity;
pub mod net;
pub mod realtime;
pub mod request;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod wire;

pub use app::{Application, StartError};
pub use config::Config;
pub use error::ApiError;
pub use state::AppState;
pub use storage::Db;
