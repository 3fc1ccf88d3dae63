//! The Redis connection: made lazily and re-made after a failure, so a Redis that is down at
//! start-up or restarts later never stops the server; it shows up in `/ready` instead. The
//! shared cache, the shared rate limits and `/ready` all use this one handle.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::config::redact_url;

/// A lazily connected, self-healing Redis connection. Cheap to share behind an `Arc`.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    shown_url: String,
    timeout: Duration,
    manager: Mutex<Option<ConnectionManager>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.shown_url).finish_non_exhaustive()
    }
}

impl Redis {
    /// Parses the URL; no connection is made until first use.
    pub fn new(url: &SecretString, prefix: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url.expose_secret())?,
            prefix: prefix.to_owned(),
            shown_url: redact_url(url.expose_secret()),
            timeout,
            manager: Mutex::new(None),
        })
    }

    /// The Redis of `redis.url`, if one is configured; no connection is made yet.
    pub fn from_config(config: &crate::Config) -> Result<Option<std::sync::Arc<Self>>, redis::RedisError> {
        let Some(url) = &config.redis.url else { return Ok(None) };
        // The readiness timeout also bounds every command: a slow Redis costs a request that.
        let timeout = Duration::from_millis(config.http.ready_check_timeout_ms);
        Ok(Some(std::sync::Arc::new(Self::new(url, &config.redis.key_prefix, timeout)?)))
    }

    /// `prefix:suffix`, the name of one of our keys.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// A connection, established now if there is none yet.
    pub async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        let mut slot = self.manager.lock().await;
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// One `PING` round trip, for `/ready`.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
