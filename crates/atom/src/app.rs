//! Assembly: [`Application`] opens the database, migrates, builds the [`AppState`], merges
//! every module's routes, binds the listener and serves until a shutdown future resolves.
//!
//! The listener is bound in [`Application::build`], so a caller (a test) can bind port 0 and
//! read the real address before serving. `AppState` holds only cheap clones of handles.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;

use crate::backup::BackupSchedule;
use crate::bus::Bus;
use crate::cache::{Cache, Redis};
use crate::config::{Config, ConfigError, DatabaseTarget};
use crate::crypto::{CryptoError, MasterKeyring};
use crate::identity::{Identity, IdentityError};
use crate::state::{AppState, Shared};
use crate::storage::file_lock::DatabaseFileLock;
use crate::storage::{self, Db, MigrationState, StorageError};
use crate::{http, telemetry};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the database {path} is being restored by `atom backup restore`: start the server when it has finished")]
    BeingRestored { path: std::path::PathBuf },
    #[error("could not lock {path}")]
    DatabaseLock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{pending} migration(s) pending and database.migrate_on_start is false: run `atom migrate` first")]
    PendingMigrations { pending: usize },
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the master key could not be loaded")]
    MasterKey(#[source] CryptoError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    EchoAgent(#[from] crate::conversations::echo::EchoError),
    #[error("redis.url is not usable")]
    Redis(#[source] redis::RedisError),
    #[error("the outbound HTTP client could not be built")]
    HttpClient(#[source] reqwest::Error),
    /// Every problem of the provider templates, one per line.
    #[error("invalid provider templates:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Catalog(Vec<crate::connectors::CatalogError>),
}

impl StartError {
    /// 2 for a configuration problem (the operator must change something), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Catalog(_) => 2,
            _ => 1,
        }
    }
}

/// A bound, migrated server that has not started serving yet.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    routes: Router<AppState>,
    protected_routes: Router<AppState>,
    /// Held while serving a SQLite file, so that a restore cannot replace it underneath.
    db_lock: Option<DatabaseFileLock>,
    /// `metrics.listen`'s listener, which serves only `/metrics`.
    metrics_listener: Option<TcpListener>,
    /// Socket.io's route and this node's Socket.io server.
    realtime: (Router<AppState>, crate::realtime::Realtime),
}

impl Application {
    /// Opens the database (retrying PostgreSQL at start-up), applies pending migrations
    /// unless disabled, and binds `config.listen`.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let target = config.database_target()?;
        let db_lock = match &target {
            DatabaseTarget::Sqlite { path } => Some(
                DatabaseFileLock::try_shared(path)
                    .map_err(|source| StartError::DatabaseLock { path: DatabaseFileLock::path_for(path), source })?
                    .ok_or_else(|| StartError::BeingRestored { path: path.clone() })?,
            ),
            DatabaseTarget::Postgres { .. } => None,
        };
        storage::monitor::set_slow_query_threshold(Duration::from_millis(config.database.slow_query_ms));
        let db = Db::connect(&target, &config.database).await?;
        if config.database.migrate_on_start {
            db.migrate().await?;
        } else {
            let status = db.migration_status().await?;
            let pending = status.iter().filter(|m| m.state == MigrationState::Pending).count();
            if pending > 0 {
                return Err(StartError::PendingMigrations { pending });
            }
        }
        let catalog = Arc::new(load_catalog(&config)?);
        let instance_id: Arc<str> = db.instance_id().await.map_err(StorageError::Query)?.into();
        let keyring = Arc::new(load_keyring(&config)?);
        let redis = Redis::from_config(&config).map_err(StartError::Redis)?;
        let cache = Cache::from_config(&config.cache, redis.clone());
        let bus = Bus::from_config(&config).map_err(StartError::Redis)?;
        let identity = Arc::new(Identity::start(&db, keyring, &config, cache.clone(), bus.clone()).await?);
        if config.conversations.echo_agent {
            crate::conversations::echo::ensure_account(&db).await?;
        }
        let connectors = Arc::new(
            crate::connectors::Connectors::new(
                &config,
                db.clone(),
                Arc::clone(&identity),
                bus.clone(),
                catalog.iter().filter_map(|t| crate::connectors::spec::ProviderSpec::from_template(t)).collect(),
            )
            .map_err(StartError::HttpClient)?
            .with_catalog(Arc::clone(&catalog)),
        );
        let proxy = Arc::new(
            crate::connectors::proxy::Proxy::new(&config, Arc::clone(&connectors), Arc::clone(&catalog), redis.clone())
                .map_err(StartError::HttpClient)?,
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        let edge = Arc::new(crate::edge::Edge::new(&config, redis.clone()));
        let state = AppState::new(Shared {
            edge,
            config: Arc::new(config),
            db,
            redis,
            cache,
            bus,
            identity,
            connectors,
            proxy,
            catalog,
            metrics: telemetry::metrics_handle(),
            http_metrics: Arc::default(),
            draining: Arc::new(AtomicBool::new(false)),
            started_at: Instant::now(),
            instance_id,
        });
        let realtime = crate::realtime::start(&state).await.map_err(StartError::Redis)?;
        Ok(Self {
            listener,
            state,
            routes: Router::new(),
            protected_routes: Router::new(),
            db_lock,
            metrics_listener,
            realtime,
        })
    }

    /// The address actually bound (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.listen)
    }

    /// The address of the metrics listener, when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Adds routes that get the same middleware as the built-in ones (for embedding and tests).
    pub fn with_routes(mut self, routes: Router<AppState>) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Adds routes that require authentication, like the built-in `/v1` ones.
    pub fn with_protected_routes(mut self, routes: Router<AppState>) -> Self {
        self.protected_routes = self.protected_routes.merge(routes);
        self
    }

    /// Every route [`Self::run_until`] serves, before the middleware. axum cannot list a
    /// router's routes, but its `Debug` names every path template: a test compares them with
    /// the OpenAPI document, so that a route without an annotation cannot go unnoticed.
    pub fn routes(&self) -> Router<AppState> {
        all_routes(&self.state, &self.realtime, self.routes.clone(), self.protected_routes.clone())
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see [`crate::shutdown`]).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        let Self { listener, state, routes, protected_routes, db_lock, metrics_listener, realtime } = self;
        let config = Arc::clone(&state.config);
        let routes = all_routes(&state, &realtime, routes, protected_routes);
        let realtime = realtime.1;
        let app = http::with_middleware(routes, &state);
        tracing::info!(
            listen = %listener.local_addr().map_or_else(|_| config.listen.to_string(), |a| a.to_string()),
            database = state.db.kind(),
            instance_id = %state.instance_id,
            "atom is serving"
        );

        let limits = http::server::ConnectionLimits {
            max_connections: config.http.max_connections,
            max_connections_per_ip: config.http.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs),
            max_header_bytes: config.http.max_header_bytes,
        };
        let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::server::serve(listener, app, limits, async move {
            let _ = stopped.await;
        }));
        let backups = BackupSchedule::start(&state.db, &config);
        let refresher = crate::connectors::refresh::spawn_worker(Arc::clone(&state.connectors));
        let webhooks = crate::connectors::webhooks::spawn_worker(Arc::clone(&state.connectors));
        let retention = crate::conversations::retention::start(&state.db, config.conversations.retention_days);
        http::metrics_access::log_exposure(&config);
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = metrics_listener.map(|listener| {
            tokio::spawn(http::metrics_access::serve(listener, state.clone(), async move {
                let _ = metrics_stopped.await;
            }))
        });

        shutdown.await;
        state.draining.store(true, Ordering::SeqCst);
        let drain = Duration::from_secs(config.shutdown.drain_secs);
        if !drain.is_zero() {
            tracing::info!(?drain, "shutdown: /ready answers 503; still accepting while load balancers notice");
            tokio::time::sleep(drain).await;
        }
        let _ = stop_accepting.send(());
        let _ = stop_metrics.send(());
        let grace = Duration::from_secs(config.shutdown.grace_secs);
        // Before the HTTP drain, which would otherwise wait for Socket.io's long polls.
        realtime.close(grace).await;
        match server.await {
            Ok(connections) => {
                tracing::info!(?grace, "shutdown: listener closed; waiting for in-flight requests");
                if tokio::time::timeout(grace, connections.shutdown()).await.is_ok() {
                    tracing::info!("shutdown: all requests finished");
                } else {
                    tracing::warn!(?grace, "shutdown: grace period over; cutting remaining requests");
                }
            }
            Err(e) => tracing::error!(error = %e, "shutdown: server task failed"),
        }
        if let Some(metrics_server) = metrics_server
            && tokio::time::timeout(grace, metrics_server).await.is_err()
        {
            tracing::warn!("shutdown: the metrics listener did not stop in time");
        }
        if let Some(backups) = backups {
            backups.stop(grace).await;
        }
        if let Some(refresher) = refresher {
            refresher.abort();
        }
        if let Some(retention) = retention {
            retention.abort();
        }
        webhooks.abort();
        if tokio::time::timeout(Duration::from_secs(5), state.db.close()).await.is_err() {
            tracing::warn!("shutdown: database pool did not close within 5s");
        }
        drop(db_lock);
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The operational routes, identity's (the protected ones, with the audit log, `/status`,
/// realtime's admin routes and `protected_routes`, behind authentication), Socket.io's, and
/// the embedder's `routes`.
fn all_routes(
    state: &AppState,
    (realtime_routes, realtime): &(Router<AppState>, crate::realtime::Realtime),
    routes: Router<AppState>,
    protected_routes: Router<AppState>,
) -> Router<AppState> {
    // Behind authentication, with identity's own protected routes.
    let protected = Router::new()
        .merge(crate::audit::router())
        .merge(crate::connectors::connection_routes::protected_router())
        .merge(crate::connectors::agent_routes::router())
        .merge(crate::connectors::webhook_routes::protected_router())
        .merge(crate::connectors::admin_routes::router())
        .merge(crate::connectors::routes::router())
        .merge(crate::conversations::routes::router())
        .route("/status", axum::routing::get(http::status))
        .merge(crate::realtime::routes::router())
        .merge(protected_routes)
        // `/status` and the connection routes act on this node's Socket.io server.
        .layer(axum::Extension(realtime.clone()));
    http::router()
        .merge(crate::identity::routes::router(state, protected))
        .merge(realtime_routes.clone())
        .merge(routes)
        .merge(crate::connectors::connection_routes::public_router())
        .merge(crate::connectors::webhook_routes::public_router())
}

/// The provider catalog: the built-in templates overlaid by `connectors.providers_dir`; every
/// app in `connectors.apps` must name one of them.
pub fn load_catalog(config: &Config) -> Result<crate::connectors::Catalog, StartError> {
    let catalog =
        crate::connectors::Catalog::load(config.connectors.providers_dir.as_deref()).map_err(StartError::Catalog)?;
    if let Some(id) = config.connectors.apps.keys().find(|id| catalog.get(id).is_none()) {
        return Err(ConfigError::new(&format!("connectors.apps.{id}"), "names no provider in the catalog").into());
    }
    Ok(catalog)
}

/// The master keyring: `master_key` (ATOM_MASTER_KEY), else `master_key_file`, else the key
/// file in the data directory, generated on first start with a warning.
pub fn load_keyring(config: &Config) -> Result<MasterKeyring, StartError> {
    use secrecy::ExposeSecret;
    if let Some(key) = &config.master_key {
        return MasterKeyring::from_env_value(key.expose_secret()).map_err(StartError::MasterKey);
    }
    if let Some(path) = &config.master_key_file {
        return MasterKeyring::load(path).map_err(StartError::MasterKey);
    }
    let (keyring, generated) = MasterKeyring::load_or_generate(&config.data_dir).map_err(StartError::MasterKey)?;
    if generated {
        tracing::warn!(
            path = %config.data_dir.join(crate::crypto::KEY_FILE_NAME).display(),
            "generated a new master key in the data directory; back it up separately from the database, \
             or set ATOM_MASTER_KEY / ATOM_MASTER_KEY_FILE"
        );
    }
    Ok(keyring)
}
