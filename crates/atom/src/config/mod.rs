//! Configuration: compiled-in defaults (`defaults.toml`), then an optional `atom.toml`, then
//! `ATOM_*` environment variables, validated as a whole before anything starts.
//!
//! Invariant: a [`Config`] that exists has passed [`Config::validate`]; the rest of the crate
//! never re-checks ranges or schemes. Secrets (database and Redis URLs may carry passwords)
//! are [`SecretString`]s and are redacted whenever the configuration is shown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

mod validate;

const DEFAULTS: &str = include_str!("../defaults.toml");

/// Sections of the configuration file; `ATOM_<SECTION>_<KEY>` maps to `<section>.<key>`.
const SECTIONS: &[&str] = &[
    "database",
    "redis",
    "cache",
    "http",
    "log",
    "shutdown",
    "auth",
    "rate_limit",
    "backup",
    "realtime",
    "metrics",
    "connectors",
    "conversations",
];

/// A configuration value that stops start-up. Its message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.to_owned(), message: message.into() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default, serialize_with = "redacted")]
    pub master_key: Option<SecretString>,
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub backup: BackupConfig,
    pub realtime: RealtimeConfig,
    pub metrics: MetricsConfig,
    pub conversations: ConversationsConfig,
    #[serde(default)]
    pub connectors: ConnectorsConfig,
}

/// The connector catalog and the instance's own apps at the providers.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsConfig {
    /// A directory of provider templates (`<id>.toml`) that replace the built-in template of
    /// the same id or add providers.
    #[serde(default)]
    pub providers_dir: Option<PathBuf>,
    /// The instance's OAuth app per provider id, when set in configuration rather than
    /// through the admin API.
    #[serde(default)]
    pub apps: std::collections::BTreeMap<String, ProviderAppConfig>,
    /// Access tokens are refreshed this long before they expire.
    pub refresh_margin_secs: u64,
    /// How often the background refresher looks for tokens about to expire; 0 turns it off
    /// (tokens are then refreshed only when asked for).
    pub refresh_interval_secs: u64,
    /// The longest one request to a provider may take.
    pub http_timeout_secs: u64,
    /// Attempts at a refresh that fails transiently (timeout, 5xx, 429), with back-off.
    pub refresh_attempts: u32,
    /// Where the callback may send the browser back to: exact URLs.
    pub return_urls: Vec<String>,
    /// Address ranges (`ip/prefix`) the agent's proxy may reach although they are private,
    /// loopback, link-local or otherwise internal (metadata addresses stay refused).
    pub proxy_allow_ranges: Vec<String>,
    /// The largest request body the proxy streams to a provider.
    pub proxy_max_body_bytes: u64,
    /// Request bodies up to this size are held, so that a call refused with 401 can be sent
    /// again after a refresh; a larger body is streamed and a 401 passed back as it is.
    pub proxy_replay_bytes: usize,
    /// A form body to an OAuth 1.0a provider is signed whole, so it is held before the call:
    /// at most this many bytes.
    pub proxy_signed_form_max_bytes: usize,
    /// A caller's use of a connection through the proxy is audited once per this many
    /// seconds (the first call of the window).
    pub proxy_use_window_secs: u64,
    /// The longest the proxy waits for a provider's response head.
    pub proxy_timeout_secs: u64,
    /// Proxy calls per connection: sustained per minute, and the burst.
    pub proxy_connection_per_minute: u32,
    pub proxy_connection_burst: u32,
    /// Proxy calls per API key (or per user, for a user's own token): per minute and burst.
    pub proxy_key_per_minute: u32,
    pub proxy_key_burst: u32,
    /// The largest webhook body accepted (bytes); a bigger one is a 413 before any work.
    pub webhook_max_body_bytes: usize,
    /// Received webhook events are deleted this many days after they arrive; 0 keeps them.
    pub webhook_retention_days: u32,
}

/// One provider's app: the client id, and the name of the environment variable that holds the
/// client secret (so the secret stays out of files).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderAppConfig {
    pub client_id: String,
    /// Not an `ATOM_*` name: those are configuration keys.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Provider-specific settings of the app (a Tableau site, an Azure tenant restriction).
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
    /// The environment variable holding the provider's webhook signing secret.
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    #[serde(default, serialize_with = "redacted_url")]
    pub url: Option<SecretString>,
    pub pool_size: u32,
    pub acquire_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub startup_timeout_secs: u64,
    pub migrate_on_start: bool,
    pub sqlite_busy_timeout_ms: u64,
    pub sqlite_synchronous: SqliteSynchronous,
    pub slow_query_ms: u64,
}

/// When SQLite syncs its write-ahead log to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Every commit is on disk before it is acknowledged.
    Full,
    /// Commits are synced at checkpoints: faster, and the last ones acknowledged before a
    /// power loss or an operating-system crash can be lost (never on a process crash).
    Normal,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub registration: Registration,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    pub refresh_reuse_grace_secs: u64,
    pub lockout_threshold: u32,
    pub lockout_addr_threshold: u32,
    pub lockout_window_secs: u64,
    pub lockout_secs: u64,
    #[serde(default)]
    pub bootstrap_admin_email: Option<String>,
    #[serde(default, serialize_with = "redacted")]
    pub bootstrap_admin_password: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Invite,
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub auth_per_minute: u32,
    pub auth_burst: u32,
    pub api_per_minute: u32,
    pub api_burst: u32,
    pub anonymous_per_minute: u32,
    pub anonymous_burst: u32,
    pub ban_threshold: u32,
    pub ban_window_secs: u64,
    pub ban_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default, serialize_with = "redacted_url")]
    pub url: Option<SecretString>,
    pub key_prefix: String,
    /// The longest a request waits on one Redis command (rate limit, cache read) before it
    /// decides without Redis.
    pub call_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The longest an entry lives, and so the bound on serving a value after a write that
    /// could not invalidate it.
    pub ttl_secs: u64,
    /// Entries kept in process; with Redis, invalidations queued while Redis is down.
    pub max_entries: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_in_flight: usize,
    pub cors_allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout_secs: u64,
    pub max_header_bytes: usize,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    pub ready_check_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_secs: u64,
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where archives go; `backups` in the data directory when unset.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Seconds between scheduled backups while serving; 0 turns them off.
    pub interval_secs: u64,
    /// How many archives scheduled backups keep in `dir`.
    pub keep: u32,
}

/// Socket.io connections (see [`crate::realtime`]); the caps count this node's connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Open Socket.io connections from one client address.
    pub max_connections_per_address: u32,
    /// Open Socket.io connections of one user, whatever credential each uses.
    pub max_connections_per_user: u32,
    /// How long a client has, after its Engine.IO handshake, to send the Socket.io CONNECT;
    /// also how long a pending handshake counts against its address.
    pub connect_timeout_secs: u64,
    /// Events one socket may send per second, sustained.
    pub events_per_second: u32,
    /// Events one socket may send at once.
    pub event_burst: u32,
    /// Refused events (over the rate, unknown) per minute before the socket is disconnected.
    pub refused_events_per_minute: u32,
    /// Bound on a cross-node query and on one Redis command of the Socket.io adapter.
    pub adapter_timeout_ms: u64,
}

/// Conversations and their messages (see [`crate::conversations`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsConfig {
    /// The largest message body, in bytes of UTF-8.
    pub max_body_bytes: usize,
    /// The largest `client_msg_id`, in bytes.
    pub max_client_msg_id_bytes: usize,
    /// The largest title, in bytes.
    pub max_title_bytes: usize,
    /// Members per conversation, the owner included.
    pub max_members: u32,
    /// Messages per page of `GET …/messages` when `limit` is not given, and the most it may ask.
    pub page_size: u32,
    pub max_page_size: u32,
    /// Messages read from the database per query of a replay.
    pub replay_batch: u32,
    /// Messages older than this many days are deleted (0: kept for ever).
    pub retention_days: u32,
    /// A user whose last connection closed is announced offline only after this long, so
    /// that a reconnect within it sends no offline/online pair.
    pub presence_grace_ms: u64,
    /// The largest `delta` of an `agent:streaming` chunk, in bytes.
    pub max_delta_bytes: usize,
    /// An agent's stream with no event for this long is ended by the server with
    /// `agent:streaming_error` (as is every stream of an agent that disconnects).
    pub agent_stream_timeout_secs: u64,
    /// Whether the built-in echo agent runs (its account is created at start-up).
    pub echo_agent: bool,
    /// The echo agent's pause between two words of a reply, so that it looks written.
    pub echo_word_delay_ms: u64,
}

/// Who may read `GET /metrics` (see [`crate::http::metrics_access`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A second listener that serves only `/metrics`; the main listener then does not.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The bearer token `/metrics` requires.
    #[serde(default, serialize_with = "redacted")]
    pub token: Option<SecretString>,
}

/// Which database the configuration points at, parsed from `database.url`.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

impl DatabaseTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (when given; it must exist), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("ATOM_").filter_map(|k| env_key(k.as_str()).map(Into::into)))
    }

    /// Like [`Config::load`] with explicit `(KEY, value)` pairs instead of the process
    /// environment (keys without the `ATOM_` prefix). For tests and embedding.
    /// `ATOM_CONFIG`, `ATOM_ADMIN_PASSWORD` (read by `atom admin create`) and `ATOM_TEST_*` are
    /// not configuration and are skipped.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        for (key, value) in pairs {
            let Some(path) = env_key(key) else { continue };
            let value: figment::value::Value = value.parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::default(path.as_str(), value));
        }
        Self::extract(figment)
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::new("config", format!("file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::extract(figment.merge(env))
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let key = if e.path.is_empty() { "config".to_owned() } else { e.path.join(".") };
            let source =
                e.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" (from {s})")).unwrap_or_default();
            let source = if e.metadata.as_ref().is_some_and(|m| m.name.contains("environment")) {
                format!(" (from environment variable ATOM_{})", key.replace('.', "_").to_ascii_uppercase())
            } else {
                source
            };
            ConfigError::new(&key, format!("{}{source}", e.kind))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The database `database.url` names; SQLite in the data directory when it is unset.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let Some(url) = &self.database.url else {
            return Ok(DatabaseTarget::Sqlite { path: self.data_dir.join("atom.db") });
        };
        let url = url.expose_secret();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() || path.contains('?') {
                return Err(ConfigError::new("database.url", "sqlite URL must be sqlite://PATH, without options"));
            }
            return Ok(DatabaseTarget::Sqlite { path: PathBuf::from(path) });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<sqlx::postgres::PgConnectOptions>()
                .map_err(|_| ConfigError::new("database.url", "is not a valid PostgreSQL URL"))?;
            return Ok(DatabaseTarget::Postgres { url: SecretString::from(url) });
        }
        let scheme = url.split_once(':').map_or("(none)", |(s, _)| s);
        Err(ConfigError::new("database.url", format!("unknown scheme {scheme:?}: expected sqlite:// or postgres://")))
    }

    /// Where backup archives are written by default.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup.dir.clone().unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// The `iss` of access tokens.
    pub fn token_issuer(&self) -> String {
        if !self.auth.issuer.is_empty() {
            return self.auth.issuer.clone();
        }
        self.public_url.clone().unwrap_or_else(|| "urn:atom".to_owned())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }

    /// The effective configuration as pretty JSON, secrets redacted.
    pub fn to_redacted_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Maps `ATOM_DATABASE_POOL_SIZE` (already lower-cased and stripped of `ATOM_` by figment)
/// to `database.pool_size`. Variables that are not configuration (`ATOM_CONFIG`,
/// `ATOM_TEST_*`) are dropped.
fn env_key(key: &str) -> Option<String> {
    let key = key.to_ascii_lowercase();
    if key == "config" || key == "admin_password" || key.starts_with("test_") {
        return None;
    }
    if key == "log" {
        return Some("log.filter".to_owned());
    }
    for section in SECTIONS {
        if let Some(rest) = key.strip_prefix(section).and_then(|r| r.strip_prefix('_')) {
            return Some(format!("{section}.{rest}"));
        }
    }
    Some(key)
}

/// Shows scheme, host and path of a URL but never its user information.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
            format!("{scheme}://{rest}")
        }
        None => "[redacted]".to_owned(),
    }
}

fn redacted<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_some("[redacted]"),
        None => s.serialize_none(),
    }
}

fn redacted_url<S: Serializer>(url: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(&redact_url(url.expose_secret())),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
