//! The Redis connection: made lazily and re-made in the background after a failure, so a
//! Redis that is down at start-up or restarts later never stops the server; it shows up in
//! `/ready` instead. The shared cache, the shared rate limits and `/ready` all use this one
//! handle.
//!
//! Hot-path commands go through [`Redis::call`]: bounded by `redis.call_timeout_ms` and
//! behind one [`Breaker`] for the whole process, so that a stalled or dead Redis is skipped
//! by the limiter and the cache alike instead of costing every request a wait.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use super::breaker::Breaker;
use crate::config::redact_url;

/// A lazily connected, self-healing Redis connection. Cheap to share behind an `Arc`.
pub struct Redis {
    client: redis::Client,
    prefix: String,
    shown_url: String,
    /// Bounds connecting and `/ready`'s `PING`.
    connect_timeout: Duration,
    /// Bounds each hot-path command.
    call_timeout: Duration,
    manager: OnceLock<ConnectionManager>,
    breaker: Breaker,
}

/// Why a hot-path call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker is open: Redis failed recently and this call was not the probe.
    #[error("Redis is skipped after a recent failure")]
    Skipped,
    #[error("Redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Failed(#[from] RedisError),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("url", &self.shown_url).finish_non_exhaustive()
    }
}

impl Redis {
    /// Parses the URL; no connection is made until first use.
    pub fn new(
        url: &SecretString,
        prefix: &str,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Self, RedisError> {
        Ok(Self {
            client: redis::Client::open(url.expose_secret())?,
            prefix: prefix.to_owned(),
            shown_url: redact_url(url.expose_secret()),
            connect_timeout,
            call_timeout,
            manager: OnceLock::new(),
            breaker: Breaker::default(),
        })
    }

    /// The Redis of `redis.url`, if one is configured; no connection is made yet.
    pub fn from_config(config: &crate::Config) -> Result<Option<std::sync::Arc<Self>>, RedisError> {
        let Some(url) = &config.redis.url else { return Ok(None) };
        // The readiness timeout bounds connecting: a reconnection runs in the background.
        let connect_timeout = Duration::from_millis(config.http.ready_check_timeout_ms);
        let call_timeout = Duration::from_millis(config.redis.call_timeout_ms);
        Ok(Some(std::sync::Arc::new(Self::new(url, &config.redis.key_prefix, connect_timeout, call_timeout)?)))
    }

    /// `prefix:suffix`, the name of one of our keys.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// The connection. Made on first use, and connected in the background from then on: a
    /// command waits for it only as long as its caller lets it.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.connect_timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        let manager = self.manager.get_or_init(|| manager).clone();
        // Drives the first connection to its end even when the call that made the manager
        // gives up on it first.
        let mut warm = manager.clone();
        tokio::spawn(async move {
            let _: Result<String, _> = redis::cmd("PING").query_async(&mut warm).await;
        });
        Ok(manager)
    }

    /// Runs one hot-path command, `command(connection)`, named `op` in logs and metrics:
    /// not at all while the breaker is open ([`CallError::Skipped`]), and for at most
    /// `redis.call_timeout_ms`. Its outcome opens or closes the breaker.
    pub async fn call<T, F, Fut>(&self, op: &'static str, command: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(permit) = self.breaker.admit(op) else { return Err(CallError::Skipped) };
        let outcome = tokio::time::timeout(self.call_timeout, async { command(self.connection().await?).await }).await;
        match outcome {
            Ok(Ok(value)) => {
                permit.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => {
                permit.failed(op, &e);
                Err(CallError::Failed(e))
            }
            Err(_) => {
                let error = CallError::TimedOut(self.call_timeout);
                permit.failed(op, &error);
                Err(error)
            }
        }
    }

    /// Whether a hot-path call made now would be skipped: the breaker is open and no probe
    /// is due.
    pub fn skipping(&self) -> bool {
        self.breaker.skipping()
    }

    /// Whether hot-path calls skip Redis since a failure, that is, the node runs on local
    /// limits and database reads.
    pub fn degraded(&self) -> bool {
        self.breaker.is_open()
    }

    /// How long until the breaker lets a probe through (zero when closed or due).
    pub fn retry_in(&self) -> Duration {
        self.breaker.retry_in()
    }

    /// One `PING` round trip, for `/ready`; outside the breaker, so that readiness shows
    /// Redis itself, bounded by the caller.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }
}
