//! [`Connectors`]: the handles the vault's flows share (the database, the master keyring,
//! the outbound HTTP client, the bus, the provider specs, the settings) and the in-process
//! half of refresh single-flight. Built once at start-up; the HTTP handlers, the background
//! refresher and the CLI take it as an argument.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::apps::{self, App};
use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::spec::ProviderSpec;
use crate::bus::Bus;
use crate::config::{Config, ConnectorsConfig};
use crate::crypto::MasterKeyring;
use crate::storage::Db;

pub struct Connectors {
    db: Db,
    /// The master keyring comes from identity, which re-reads it after a rotation.
    identity: Arc<crate::identity::Identity>,
    http: reqwest::Client,
    bus: Bus,
    /// The catalog's providers by name; tests and embedders may add their own.
    providers: std::sync::RwLock<HashMap<String, Arc<ProviderSpec>>>,
    /// The catalog's templates, for the flows that read them whole (OAuth 1.0a, kept values,
    /// lookups); empty until [`Connectors::with_catalog`].
    catalog: Arc<crate::connectors::Catalog>,
    settings: ConnectorsConfig,
    public_url: Option<String>,
    /// One lock per connection being refreshed in this process (see [`super::refresh`]).
    pub(super) refreshing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Authorization server metadata by issuer (see [`super::endpoints`]).
    metadata: super::endpoints::MetadataCache,
    /// One lock per connection whose webhook deliveries this process is publishing (see
    /// [`super::webhooks`]).
    pub(super) publishing: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Connectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connectors").finish_non_exhaustive()
    }
}

impl Connectors {
    pub fn new(
        config: &Config,
        db: Db,
        identity: Arc<crate::identity::Identity>,
        bus: Bus,
        providers: Vec<ProviderSpec>,
    ) -> Result<Self, reqwest::Error> {
        let http = super::exchange::http_client(Duration::from_secs(config.connectors.http_timeout_secs))?;
        Ok(Self {
            db,
            identity,
            http,
            bus,
            providers: std::sync::RwLock::new(providers.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect()),
            catalog: Arc::default(),
            settings: config.connectors.clone(),
            public_url: config.public_url.clone(),
            refreshing: std::sync::Mutex::default(),
            metadata: std::sync::Mutex::default(),
            publishing: std::sync::Mutex::default(),
        })
    }

    /// The same, reading `catalog`'s templates.
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<crate::connectors::Catalog>) -> Self {
        self.catalog = catalog;
        self
    }

    /// The catalog template `id`, or `unknown_provider`.
    pub fn template(&self, id: &str) -> Result<Arc<crate::connectors::Template>, ConnectError> {
        self.catalog
            .get(id)
            .cloned()
            .ok_or_else(|| ConnectError::new(ErrorCode::UnknownProvider, "no provider of this name in the catalog"))
    }

    pub(super) fn metadata_cache(&self) -> &super::endpoints::MetadataCache {
        &self.metadata
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn keyring(&self) -> Arc<MasterKeyring> {
        self.identity.keyring()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn settings(&self) -> &ConnectorsConfig {
        &self.settings
    }

    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    pub fn provider(&self, name: &str) -> Result<Arc<ProviderSpec>, ConnectError> {
        let providers = self.providers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        providers
            .get(name)
            .cloned()
            .ok_or_else(|| ConnectError::new(ErrorCode::UnknownProvider, "no provider of this name in the catalog"))
    }

    /// Adds (or replaces) a provider: for embedders and tests, beside the catalog's.
    pub fn add_provider(&self, spec: ProviderSpec) {
        let mut providers = self.providers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        providers.insert(spec.name.clone(), Arc::new(spec));
    }

    /// The instance's app at `provider`, or `not_configured`.
    pub async fn app(&self, provider: &str) -> Result<App, ConnectorError> {
        apps::resolve(&self.db, &self.keyring(), &self.settings, provider).await?.ok_or_else(|| {
            ConnectorError::connect(
                ErrorCode::NotConfigured,
                "this instance has no OAuth app for this provider yet: an admin sets it at /v1/admin/providers/{provider}/app",
            )
        })
    }

    /// `ATOM_PUBLIC_URL` + the callback path, or `not_configured`.
    pub fn callback_url(&self) -> Result<String, ConnectError> {
        apps::callback_url(self.public_url.as_deref()).ok_or_else(|| {
            ConnectError::new(ErrorCode::NotConfigured, "ATOM_PUBLIC_URL is not set, so no provider can call back")
        })
    }

    /// The checked return URL: one of `connectors.return_urls` exactly, the first when none is
    /// asked for, none when the list is empty.
    pub fn return_to(&self, asked: Option<&str>) -> Result<Option<String>, ConnectorError> {
        match asked {
            Some(url) if self.settings.return_urls.iter().any(|allowed| allowed == url) => Ok(Some(url.to_owned())),
            Some(_) => {
                Err(ConnectorError::Api(crate::error::ApiError::Validation(vec![crate::error::FieldError::new(
                    "return_to",
                    "is not one of the configured return URLs",
                )])))
            }
            None => Ok(self.settings.return_urls.first().cloned()),
        }
    }

    pub fn refresh_margin_ms(&self) -> i64 {
        i64::try_from(self.settings.refresh_margin_secs).unwrap_or(i64::MAX / 2).saturating_mul(1000)
    }
}
