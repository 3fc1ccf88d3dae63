//! The cache: cache-aside for hot reads behind one interface, [`Cache`], over two backends
//! chosen from configuration: in-process ([`MemoryCache`], the default) or Redis
//! ([`RedisCache`], when `redis.url` is set). Also the Redis connection itself ([`Redis`]).
//!
//! Reads call `cache.get_or_load(namespace, key, ttl, loader)`; writes call
//! `cache.invalidate(namespace, key)` after their transaction commits.
//!
//! Invariants:
//! - Bounded in time: an entry lives at most `cache.ttl_secs` (a caller may ask for less).
//!   That is also the bound on staleness wherever an invalidation cannot reach: other nodes
//!   when there is no Redis, or Redis unreachable when the write happened.
//! - Bounded in size: at most `cache.max_entries` entries in process; in Redis every entry
//!   carries its TTL.
//! - Single flight: concurrent misses of one key on one node run the loader once.
//! - Only found values are cached. `None` (no such row) is not, so a row created later is
//!   seen at once without every insert having to invalidate; errors are never cached.
//! - A load that overlaps an invalidation of its key does not store its result (it may have
//!   read the database before the write): see [`flight`] and, across nodes, [`shared`].
//! - Redis failing never fails a read: reads fall through to the database. Nor does it
//!   stall one: every Redis command is bounded by `redis.call_timeout_ms` and skipped while
//!   the [`breaker`] the cache shares with the rate limiter is open.
//! - Everything cached is declared in [`Namespace`]. With Redis the values leave the process,
//!   so no secret is cached (API keys only as the SHA-256 the database holds).
//!
//! Metrics: `cache_requests_total{namespace, result="hit"|"miss"}`,
//! `cache_loads_total{namespace}` (loader runs; fewer than misses when single flight
//! coalesced some), `cache_errors_total{op}` (Redis failures, undecodable values),
//! `cache_invalidations_pending` and `cache_invalidations_dropped_total` (Redis down),
//! `cache_entries` (in process, set when `/metrics` is read).

mod breaker;
mod connection;
mod flight;
mod memory;
mod shared;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use connection::{CallError, Redis};
use flight::{Loaded, SingleFlight, Ticket};
pub use memory::MemoryCache;
pub use shared::RedisCache;
use shared::RedisLookup;

use crate::config::CacheConfig;

/// A kind of cached value. Every namespace in use is declared here with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace(&'static str);

impl Namespace {
    /// An account's role, disabled flag and revoked sessions, by user id ([`crate::identity`]).
    pub const USER: Self = Self("user");
    /// What authenticating an API key needs, by the key's public prefix: ids, scopes, expiry,
    /// revocation and the SHA-256 of the key, never the key ([`crate::identity::api_keys`]).
    pub const API_KEY: Self = Self("api_key");
    /// The public JSON Web Key Set, under the key `current` ([`crate::identity::signing`]).
    pub const JWKS: Self = Self("jwks");

    pub fn name(self) -> &'static str {
        self.0
    }
}

/// The cache, by backend. Cheap to clone: clones share entries and connections.
#[derive(Debug, Clone)]
pub enum Cache {
    Memory(MemoryCache),
    Redis(RedisCache),
}

/// What a read found.
enum Lookup<T> {
    Hit(T),
    Miss(Fill),
    /// The backend cannot be used now: load, store nothing.
    Unavailable,
}

/// What storing after a miss needs.
enum Fill {
    Memory,
    Redis { generation: String },
}

/// The bound on what may be cached: serializable for Redis, cloneable and typed for the
/// in-process backend, which keeps values decoded.
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Cacheable for T {}

impl Cache {
    /// Redis when one is configured, otherwise in process. Within a Tokio runtime.
    pub fn from_config(config: &CacheConfig, redis: Option<Arc<Redis>>) -> Self {
        let ttl = Duration::from_secs(config.ttl_secs);
        match redis {
            Some(redis) => {
                let max_pending = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
                Self::Redis(RedisCache::new(redis, ttl, max_pending))
            }
            None => Self::Memory(MemoryCache::new(config.max_entries, ttl)),
        }
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Entries held in process (`None` with Redis).
    pub fn entry_count(&self) -> Option<u64> {
        match self {
            Self::Memory(memory) => Some(memory.entry_count()),
            Self::Redis(_) => None,
        }
    }

    /// The value of `key` in `namespace` if the in-process backend holds it, without
    /// awaiting: the request path's fast way to a hit. `None` on a miss and always with Redis
    /// (call [`Cache::get_or_load`] then; a miss here is not counted, that call counts it).
    pub fn peek<T: Cacheable>(&self, namespace: Namespace, key: &str) -> Option<T> {
        let Self::Memory(memory) = self else { return None };
        let value = with_full_key(namespace, key, |full_key| memory.get(full_key))?;
        let value = value.downcast_ref::<T>()?.clone();
        count_request(namespace, "hit");
        Some(value)
    }

    /// The value of `key` in `namespace`: from the cache, or from `load` on a miss (stored
    /// for `ttl`, at most the configured TTL, unless it is `None`). Errors of `load` are
    /// returned as they are, never cached.
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        namespace: Namespace,
        key: &str,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<Option<T>, E>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let full_key = format!("{}:{key}", namespace.0);
        let ttl = ttl.map_or(self.ttl(), |t| t.min(self.ttl()));
        let fill = match self.lookup::<T>(namespace, &full_key).await {
            Lookup::Hit(value) => {
                count_request(namespace, "hit");
                return Ok(Some(value));
            }
            Lookup::Miss(fill) => Some(fill),
            Lookup::Unavailable => None,
        };
        count_request(namespace, "miss");
        // Boxed: the load and the store are large futures that a hit should not carry.
        Box::pin(self.load_through(namespace, &full_key, ttl, fill, load)).await
    }

    /// A miss: one caller per key loads (single flight) and fills the cache; the others wait
    /// for its result.
    async fn load_through<T, E, F, Fut>(
        &self,
        namespace: Namespace,
        full_key: &str,
        ttl: Duration,
        fill: Option<Fill>,
        load: F,
    ) -> Result<Option<T>, E>
    where
        T: Cacheable,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        match self.flights().join(full_key) {
            Ticket::Leader(leader) => {
                metrics::counter!("cache_loads_total", "namespace" => namespace.0).increment(1);
                let loaded = load().await;
                // Waiters and Redis take the value as JSON.
                let json = match &loaded {
                    Ok(Some(value)) => serde_json::to_string(value).map(Arc::<str>::from).map_err(|e| {
                        tracing::warn!(namespace = namespace.0, error = %e, "value not cacheable");
                    }),
                    Ok(None) | Err(_) => Err(()),
                };
                leader.finish(match (&loaded, &json) {
                    (Ok(None), _) => Loaded::Value(None),
                    (Ok(Some(_)), Ok(json)) => Loaded::Value(Some(Arc::clone(json))),
                    _ => Loaded::Failed,
                });
                if let (Ok(Some(value)), Ok(json), Some(fill)) = (&loaded, json, fill)
                    && !leader.superseded()
                {
                    self.store(full_key, fill, value, &json, ttl).await;
                    if leader.superseded() {
                        // The invalidation may have run between the check and the store.
                        self.forget_local(full_key);
                    }
                }
                loaded
            }
            Ticket::Follower(follower) => {
                match follower.outcome().await {
                    Some(Loaded::Value(None)) => return Ok(None),
                    Some(Loaded::Value(Some(json))) => {
                        if let Ok(value) = serde_json::from_str(&json) {
                            return Ok(Some(value));
                        }
                    }
                    Some(Loaded::Failed) | None => {}
                }
                // The leader failed or was cancelled: try for ourselves, storing nothing.
                load().await
            }
        }
    }

    /// Drops `key` from `namespace` after a write, on every node the backend reaches (all of
    /// them with Redis, queued while Redis is down; this node only in process). Never fails.
    pub async fn invalidate(&self, namespace: Namespace, key: &str) {
        let full_key = format!("{}:{key}", namespace.0);
        // First: a load in progress must not store what it read before the write.
        self.flights().supersede(&full_key);
        match self {
            Self::Memory(memory) => memory.remove(&full_key),
            Self::Redis(redis) => redis.invalidate(&full_key).await,
        }
    }

    fn ttl(&self) -> Duration {
        match self {
            Self::Memory(memory) => memory.ttl(),
            Self::Redis(redis) => redis.ttl(),
        }
    }

    fn flights(&self) -> &SingleFlight {
        match self {
            Self::Memory(memory) => memory.flights(),
            Self::Redis(redis) => redis.flights(),
        }
    }

    async fn lookup<T: Cacheable>(&self, namespace: Namespace, key: &str) -> Lookup<T> {
        match self {
            Self::Memory(memory) => match memory.get(key).map(|value| value.downcast::<T>()) {
                Some(Ok(value)) => Lookup::Hit(T::clone(&value)),
                Some(Err(_)) => {
                    // A namespace holds one type; another is a bug, so load and overwrite.
                    tracing::warn!(namespace = namespace.0, "cache entry of another type");
                    Lookup::Miss(Fill::Memory)
                }
                None => Lookup::Miss(Fill::Memory),
            },
            // Boxed: only the Redis backend carries the Redis client's futures.
            Self::Redis(redis) => match Box::pin(redis.get(key)).await {
                RedisLookup::Hit { json, generation } => match serde_json::from_str(&json) {
                    Ok(value) => Lookup::Hit(value),
                    Err(e) => {
                        // Another shape (a node of another version wrote it): load and overwrite.
                        tracing::debug!(namespace = namespace.0, error = %e, "undecodable cache entry");
                        metrics::counter!("cache_errors_total", "op" => "decode").increment(1);
                        Lookup::Miss(Fill::Redis { generation })
                    }
                },
                RedisLookup::Miss { generation } => Lookup::Miss(Fill::Redis { generation }),
                RedisLookup::Unavailable => Lookup::Unavailable,
            },
        }
    }

    async fn store<T: Cacheable>(&self, key: &str, fill: Fill, value: &T, json: &str, ttl: Duration) {
        match (self, fill) {
            (Self::Memory(memory), _) => memory.store(key, Arc::new(value.clone()), ttl),
            (Self::Redis(redis), Fill::Redis { generation }) => redis.store(key, &generation, json, ttl).await,
            (Self::Redis(_), Fill::Memory) => {}
        }
    }

    /// Undoes a store that raced an invalidation. In Redis the fill script already refused
    /// it (the invalidation count changed), so only the in-process backend has work to do.
    fn forget_local(&self, key: &str) {
        if let Self::Memory(memory) = self {
            memory.remove(key);
        }
    }
}

/// Runs `f` with `namespace:key`, built in a buffer of the thread's (no allocation per read).
fn with_full_key<R>(namespace: Namespace, key: &str, f: impl FnOnce(&str) -> R) -> R {
    thread_local! {
        static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    KEY.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            buffer.push_str(namespace.0);
            buffer.push(':');
            buffer.push_str(key);
            f(&buffer)
        }
        // Only if `f` itself peeked: build the key the ordinary way.
        Err(_) => f(&format!("{}:{key}", namespace.0)),
    })
}

fn count_request(namespace: Namespace, result: &'static str) {
    // Handles resolved once per namespace and result, not in the registry on every read; a
    // handful of them, so a list. The recorder is installed first, so that no handle is bound
    // to the no-op one.
    type Counters = std::sync::RwLock<Vec<(&'static str, &'static str, metrics::Counter)>>;
    static COUNTERS: std::sync::LazyLock<Counters> = std::sync::LazyLock::new(|| {
        crate::telemetry::metrics_handle();
        Counters::default()
    });
    let find = |counters: &[(&str, &str, metrics::Counter)]| {
        counters.iter().position(|(n, r, _)| *n == namespace.0 && *r == result)
    };
    {
        let counters = COUNTERS.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = find(&counters) {
            counters[i].2.increment(1);
            return;
        }
    }
    let counter = metrics::counter!("cache_requests_total", "namespace" => namespace.0, "result" => result);
    counter.increment(1);
    let mut counters = COUNTERS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if find(&counters).is_none() {
        counters.push((namespace.0, result, counter));
    }
}
