//! [`Config::validate`]: every value checked as a whole at start-up, so that a `Config` that
//! exists is valid and nothing else re-checks ranges or schemes. An invalid value is one
//! [`ConfigError`] naming its key.

use super::*;

impl Config {
    /// Checks every value whose type alone does not make it valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(ConfigError::new(
                "data_dir",
                format!("{} exists and is not a directory", self.data_dir.display()),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::new("public_url", "must start with https:// or http://"));
        }
        self.validate_connectors()?;
        let auth = &self.auth;
        if !(60..=86_400).contains(&auth.access_ttl_secs) {
            return Err(ConfigError::new("auth.access_ttl_secs", "must be between 60 and 86400"));
        }
        if auth.refresh_ttl_secs < auth.access_ttl_secs {
            return Err(ConfigError::new("auth.refresh_ttl_secs", "must be at least auth.access_ttl_secs"));
        }
        if auth.refresh_reuse_grace_secs > 60 {
            return Err(ConfigError::new("auth.refresh_reuse_grace_secs", "must be at most 60"));
        }
        if auth.lockout_threshold == 0 || auth.lockout_addr_threshold == 0 {
            return Err(ConfigError::new("auth.lockout_threshold", "must be at least 1"));
        }
        if auth.audience.trim().is_empty() {
            return Err(ConfigError::new("auth.audience", "must not be empty"));
        }
        if auth.bootstrap_admin_email.is_some() != auth.bootstrap_admin_password.is_some() {
            return Err(ConfigError::new(
                "auth.bootstrap_admin_password",
                "bootstrap_admin_email and bootstrap_admin_password (ATOM_AUTH_BOOTSTRAP_ADMIN_PASSWORD) go together",
            ));
        }
        if let Some(key) = &self.master_key {
            // The reason names what is wrong with the value, never the value.
            crate::crypto::MasterKeyring::from_env_value(key.expose_secret()).map_err(|e| match e {
                crate::crypto::CryptoError::BadKey(reason) => {
                    ConfigError::new("master_key", format!("{reason} (ATOM_MASTER_KEY: 32 bytes, base64)"))
                }
                _ => ConfigError::new("master_key", "is not a usable master key"),
            })?;
        }
        let db = &self.database;
        if db.pool_size == 0 || db.pool_size > 1000 {
            return Err(ConfigError::new("database.pool_size", "must be between 1 and 1000"));
        }
        if db.acquire_timeout_secs == 0 {
            return Err(ConfigError::new("database.acquire_timeout_secs", "must be at least 1"));
        }
        self.database_target()?;
        if let Some(url) = &self.redis.url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new("redis.url", "must start with redis:// or rediss://"));
            }
            redis::Client::open(url).map_err(|_| ConfigError::new("redis.url", "is not a valid Redis URL"))?;
        }
        if !(1..=86_400).contains(&self.cache.ttl_secs) {
            return Err(ConfigError::new("cache.ttl_secs", "must be between 1 and 86400"));
        }
        if !(1..=100_000_000).contains(&self.cache.max_entries) {
            return Err(ConfigError::new("cache.max_entries", "must be between 1 and 100000000"));
        }
        if self.http.max_connections == 0 || self.http.max_connections_per_ip == 0 {
            return Err(ConfigError::new("http.max_connections", "connection caps must be at least 1"));
        }
        if self.http.max_connections > 1_000_000 {
            return Err(ConfigError::new("http.max_connections", "must be at most 1000000"));
        }
        if self.http.max_in_flight == 0 {
            return Err(ConfigError::new("http.max_in_flight", "must be at least 1"));
        }
        for origin in &self.http.cors_allowed_origins {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && !origin.contains('*')
                && origin.split("://").nth(1).is_some_and(|host| !host.is_empty() && !host.contains('/'));
            if !valid {
                return Err(ConfigError::new(
                    "http.cors_allowed_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port], no path, no wildcard, not null)"),
                ));
            }
        }
        for proxy in &self.http.trusted_proxies {
            if crate::net::Cidr::parse(proxy).is_none() {
                return Err(ConfigError::new("http.trusted_proxies", format!("{proxy:?} is not an IP or CIDR")));
            }
        }
        let rl = &self.rate_limit;
        if [
            rl.auth_per_minute,
            rl.auth_burst,
            rl.api_per_minute,
            rl.api_burst,
            rl.anonymous_per_minute,
            rl.anonymous_burst,
            rl.ban_threshold,
        ]
        .contains(&0)
        {
            return Err(ConfigError::new("rate_limit", "rates, bursts and ban_threshold must be at least 1"));
        }
        if self.http.header_read_timeout_secs == 0 {
            return Err(ConfigError::new("http.header_read_timeout_secs", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.redis.call_timeout_ms) {
            return Err(ConfigError::new("redis.call_timeout_ms", "must be between 1 and 10000"));
        }
        if self.redis.key_prefix.is_empty()
            || self.redis.key_prefix.len() > 64
            || self.redis.key_prefix.contains(char::is_whitespace)
        {
            return Err(ConfigError::new("redis.key_prefix", "must be 1 to 64 characters without spaces"));
        }
        if self.http.request_timeout_secs == 0 {
            return Err(ConfigError::new("http.request_timeout_secs", "must be at least 1"));
        }
        if !(8192..=1024 * 1024).contains(&self.http.max_header_bytes) {
            return Err(ConfigError::new("http.max_header_bytes", "must be from 8192 to 1048576"));
        }
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError::new("http.body_limit_bytes", "must be at least 1024"));
        }
        if self.http.ready_check_timeout_ms == 0 {
            return Err(ConfigError::new("http.ready_check_timeout_ms", "must be at least 1"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(ConfigError::new("log.filter", e.to_string()));
        }
        if self.shutdown.grace_secs > 3600 || self.shutdown.drain_secs > 3600 {
            return Err(ConfigError::new("shutdown", "grace_secs and drain_secs must be at most 3600"));
        }
        if self.realtime.max_connections_per_address == 0 {
            return Err(ConfigError::new("realtime.max_connections_per_address", "must be at least 1"));
        }
        if self.realtime.max_connections_per_user == 0 {
            return Err(ConfigError::new("realtime.max_connections_per_user", "must be at least 1"));
        }
        if !(1..=300).contains(&self.realtime.connect_timeout_secs) {
            return Err(ConfigError::new("realtime.connect_timeout_secs", "must be between 1 and 300"));
        }
        let c = &self.conversations;
        if c.max_body_bytes == 0 {
            return Err(ConfigError::new("conversations.max_body_bytes", "must be at least 1"));
        }
        if c.max_client_msg_id_bytes == 0 || c.max_title_bytes == 0 {
            return Err(ConfigError::new(
                "conversations",
                "max_client_msg_id_bytes and max_title_bytes must be at least 1",
            ));
        }
        if !(2..=100_000).contains(&c.max_members) {
            return Err(ConfigError::new("conversations.max_members", "must be between 2 and 100000"));
        }
        if c.max_page_size == 0 || c.max_page_size > 10_000 || !(1..=c.max_page_size).contains(&c.page_size) {
            return Err(ConfigError::new(
                "conversations.page_size",
                "must be between 1 and max_page_size (at most 10000)",
            ));
        }
        if !(1..=10_000).contains(&c.replay_batch) {
            return Err(ConfigError::new("conversations.replay_batch", "must be between 1 and 10000"));
        }
        if c.retention_days > 36_500 || c.presence_grace_ms > 600_000 {
            return Err(ConfigError::new(
                "conversations",
                "retention_days must be at most 36500, presence_grace_ms at most 600000",
            ));
        }
        if c.max_delta_bytes == 0 {
            return Err(ConfigError::new("conversations.max_delta_bytes", "must be at least 1"));
        }
        if !(1..=3600).contains(&c.agent_stream_timeout_secs) {
            return Err(ConfigError::new("conversations.agent_stream_timeout_secs", "must be between 1 and 3600"));
        }
        if c.echo_word_delay_ms > 10_000 {
            return Err(ConfigError::new("conversations.echo_word_delay_ms", "must be at most 10000"));
        }
        for (key, value) in [
            ("realtime.events_per_second", self.realtime.events_per_second),
            ("realtime.event_burst", self.realtime.event_burst),
            ("realtime.refused_events_per_minute", self.realtime.refused_events_per_minute),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if !(100..=60_000).contains(&self.realtime.adapter_timeout_ms) {
            return Err(ConfigError::new("realtime.adapter_timeout_ms", "must be between 100 and 60000"));
        }
        if let Some(token) = &self.metrics.token
            && (token.expose_secret().len() < 16 || !token.expose_secret().chars().all(|c| c.is_ascii_graphic()))
        {
            // An HTTP header carries it, and a short one can be guessed.
            return Err(ConfigError::new("metrics.token", "must be at least 16 printable ASCII characters"));
        }
        if self.metrics.listen.is_some_and(|addr| addr == self.listen && addr.port() != 0) {
            return Err(ConfigError::new("metrics.listen", "must differ from listen"));
        }
        if self.backup.keep == 0 {
            return Err(ConfigError::new("backup.keep", "must be at least 1"));
        }
        if let Some(dir) = &self.backup.dir
            && (dir.as_os_str().is_empty() || (dir.exists() && !dir.is_dir()))
        {
            return Err(ConfigError::new("backup.dir", "must name a directory"));
        }
        self.validate_connector_flows()?;
        Ok(())
    }
}

impl Config {
    fn validate_connector_flows(&self) -> Result<(), ConfigError> {
        let c = &self.connectors;
        if !(1..=120).contains(&c.http_timeout_secs) {
            return Err(ConfigError::new("connectors.http_timeout_secs", "must be between 1 and 120"));
        }
        if !(1..=10).contains(&c.refresh_attempts) {
            return Err(ConfigError::new("connectors.refresh_attempts", "must be between 1 and 10"));
        }
        if c.refresh_margin_secs > 86_400 {
            return Err(ConfigError::new("connectors.refresh_margin_secs", "must be at most 86400"));
        }
        for range in &c.proxy_allow_ranges {
            if crate::net::Cidr::parse(range).is_none() {
                return Err(ConfigError::new(
                    "connectors.proxy_allow_ranges",
                    format!("{range:?} is not an address range (ip/prefix)"),
                ));
            }
        }
        if c.proxy_max_body_bytes < 1024 {
            return Err(ConfigError::new("connectors.proxy_max_body_bytes", "must be at least 1024"));
        }
        if c.proxy_replay_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::new("connectors.proxy_replay_bytes", "must be at most 16777216"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&c.proxy_signed_form_max_bytes) {
            return Err(ConfigError::new(
                "connectors.proxy_signed_form_max_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if !(1..=86_400).contains(&c.proxy_use_window_secs) {
            return Err(ConfigError::new("connectors.proxy_use_window_secs", "must be between 1 and 86400"));
        }
        if !(1..=300).contains(&c.proxy_timeout_secs) {
            return Err(ConfigError::new("connectors.proxy_timeout_secs", "must be between 1 and 300"));
        }
        if c.proxy_connection_per_minute == 0
            || c.proxy_connection_burst == 0
            || c.proxy_key_per_minute == 0
            || c.proxy_key_burst == 0
        {
            return Err(ConfigError::new(
                "connectors.proxy_connection_per_minute",
                "proxy rate limits must be at least 1",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&c.webhook_max_body_bytes) {
            return Err(ConfigError::new("connectors.webhook_max_body_bytes", "must be between 1024 and 67108864"));
        }
        if c.webhook_retention_days > 3650 {
            return Err(ConfigError::new("connectors.webhook_retention_days", "must be at most 3650"));
        }
        for url in &c.return_urls {
            let parsed = url::Url::parse(url)
                .map_err(|_| ConfigError::new("connectors.return_urls", format!("{url:?} is not a URL")))?;
            if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
                return Err(ConfigError::new(
                    "connectors.return_urls",
                    format!("{url:?} must be an http(s) URL without a fragment"),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_connectors(&self) -> Result<(), ConfigError> {
        let c = &self.connectors;
        if let Some(dir) = &c.providers_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::new("connectors.providers_dir", format!("{} is not a directory", dir.display())));
        }
        for (id, app) in &c.apps {
            let key = format!("connectors.apps.{id}");
            if app.client_id.trim().is_empty() {
                return Err(ConfigError::new(&format!("{key}.client_id"), "must not be empty"));
            }
            if let Some(var) = &app.client_secret_env {
                let name_ok =
                    !var.is_empty() && var.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !name_ok || var.starts_with("ATOM_") {
                    return Err(ConfigError::new(
                        &format!("{key}.client_secret_env"),
                        "must be an environment variable name ([A-Z0-9_]), not an ATOM_* configuration key",
                    ));
                }
            }
        }
        Ok(())
    }
}
