//! [`AppState`]: what every handler receives, cheap clones of the handles the domain modules
//! take as arguments (the database, the cache, identity, the edge, the metrics). Built once
//! by [`crate::app::Application::build`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::bus::Bus;
use crate::cache::{Cache, Redis};
use crate::config::Config;
use crate::connectors::Catalog;
use crate::identity::Identity;
use crate::storage::Db;

/// Handles shared by every request: one `Arc`, because axum clones the state (and every
/// stateful middleware's copy of it) for each request, and a clone of ten handles costs ten
/// atomic increments and decrements where this costs one.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub redis: Option<Arc<Redis>>,
    /// Cache-aside for hot reads: in process, or shared through Redis.
    pub cache: Cache,
    /// Events to a user's live connections, on every node.
    pub bus: Bus,
    pub identity: Arc<Identity>,
    /// The connector vault: provider apps, flows, connections, refresh.
    pub connectors: Arc<crate::connectors::Connectors>,
    /// The agent's proxy to the providers, with its guarded client and rate limits.
    pub proxy: Arc<crate::connectors::proxy::Proxy>,
    /// The validated provider templates, built-in and from `connectors.providers_dir`.
    pub catalog: Arc<Catalog>,
    pub edge: Arc<crate::edge::Edge>,
    pub metrics: PrometheusHandle,
    /// The HTTP stack's request metrics, rendered into `/metrics` after `metrics`'s.
    pub http_metrics: Arc<crate::http::metrics::RequestMetrics>,
    /// Set when shutdown begins; `/ready` answers 503 from then on.
    pub draining: Arc<AtomicBool>,
    pub started_at: Instant,
    pub instance_id: Arc<str>,
}
