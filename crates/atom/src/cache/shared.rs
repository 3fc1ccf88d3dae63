//! The Redis backend (with `ATOM_REDIS_URL`): every node reads and fills the same entries, so
//! one node's invalidation takes effect on all of them at once.
//!
//! Keys: `<prefix>:cache:<namespace>:<key>` holds a value as JSON with a TTL;
//! `<prefix>:cache-gen:<namespace>:<key>` counts its invalidations. A miss notes the count and
//! the fill (a Lua script) stores only if it is unchanged, so a load that read the database
//! before another node's write cannot store its stale result after that write's invalidation.
//!
//! Every command goes through [`Redis::call`]: bounded by `redis.call_timeout_ms`, and
//! skipped while the breaker it shares with the rate limiter is open. When Redis fails or is
//! skipped, reads fall through to the database (still single-flight on this node) and nothing
//! is stored. An invalidation that cannot be sent is queued and sent as soon as Redis answers,
//! and always before this node reads from Redis again. Other nodes may see a queued
//! invalidation late (at most a back-off after Redis is back); in every case a stale value
//! lives no longer than its entry's TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::connection::{CallError, Redis};
use super::flight::SingleFlight;

/// The shortest pause of the background flusher between two attempts.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);
/// How long an invalidation count is kept. A load only needs it to outlive the load itself,
/// which a request's timeout bounds far below this.
const GENERATION_TTL_MS: i64 = 10 * 60 * 1000;
/// Invalidations sent in one round trip when the queue is flushed.
const FLUSH_BATCH: usize = 256;

/// KEYS[1]: value, KEYS[2]: invalidation count; ARGV: the count seen at the miss ('' for
/// none), the JSON, the TTL in ms. Stores only if no invalidation happened since the miss.
const FILL_LUA: &str = r"
local seen = redis.call('GET', KEYS[2]) or ''
if seen ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// The outcome of one read.
#[derive(Debug)]
pub(crate) enum RedisLookup {
    /// `generation` is the invalidation count, to overwrite an entry that does not decode.
    Hit { json: Arc<str>, generation: String },
    /// Not cached; `generation` is the invalidation count to fill against.
    Miss { generation: String },
    /// Redis is failing or an invalidation is still queued: read the database, store nothing.
    Unavailable,
}

/// The shared cache. Cheap to clone: clones share the queue and the connection.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Arc<Redis>,
    ttl: Duration,
    flights: SingleFlight,
    fill: redis::Script,
    /// Invalidations not yet sent: key → sequence number of the latest request, so that a
    /// flush removes only what it sent.
    pending: Mutex<Pending>,
    max_pending: usize,
    /// One flush at a time; readers wait for it, since the queue must be empty before they
    /// may trust Redis.
    flushing: tokio::sync::Mutex<()>,
    /// Wakes the background flusher.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Pending {
    keys: HashMap<String, u64>,
    next: u64,
    overflowed: bool,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("redis", &self.inner.redis)
            .field("ttl", &self.inner.ttl)
            .field("pending_invalidations", &self.pending_invalidations())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Lets the background flusher notice that the cache is gone and end.
        self.wake.notify_one();
    }
}

impl RedisCache {
    /// Must be called within a Tokio runtime: it starts the task that retries queued
    /// invalidations, which ends when the last clone is dropped.
    pub fn new(redis: Arc<Redis>, ttl: Duration, max_pending: usize) -> Self {
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            redis,
            ttl,
            flights: SingleFlight::default(),
            fill: redis::Script::new(FILL_LUA),
            pending: Mutex::new(Pending::default()),
            max_pending,
            flushing: tokio::sync::Mutex::new(()),
            wake: Arc::clone(&wake),
        });
        tokio::spawn(flush_in_background(Arc::downgrade(&inner), wake));
        Self { inner }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    pub(crate) fn flights(&self) -> &SingleFlight {
        &self.inner.flights
    }

    /// Invalidations waiting for Redis to answer.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.lock().map(|p| p.keys.len()).unwrap_or(0)
    }

    /// Whether the cache currently reads around Redis.
    pub fn degraded(&self) -> bool {
        self.inner.redis.degraded()
    }

    fn value_key(&self, key: &str) -> String {
        self.inner.redis.key(&format!("cache:{key}"))
    }

    fn generation_key(&self, key: &str) -> String {
        self.inner.redis.key(&format!("cache-gen:{key}"))
    }

    pub(crate) async fn get(&self, key: &str) -> RedisLookup {
        if !self.ready_for_reads().await {
            return RedisLookup::Unavailable;
        }
        let mut mget = redis::cmd("MGET");
        mget.arg(self.value_key(key)).arg(self.generation_key(key));
        let read = self.inner.redis.call("cache_get", |mut conn| async move {
            mget.query_async::<(Option<String>, Option<String>)>(&mut conn).await
        });
        match read.await {
            Ok((Some(json), generation)) => {
                RedisLookup::Hit { json: json.into(), generation: generation.unwrap_or_default() }
            }
            Ok((None, generation)) => RedisLookup::Miss { generation: generation.unwrap_or_default() },
            Err(e) => {
                failed("get", &e);
                RedisLookup::Unavailable
            }
        }
    }

    /// Stores `json` unless the key was invalidated since the miss that saw `generation`.
    pub(crate) async fn store(&self, key: &str, generation: &str, json: &str, ttl: Duration) {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.inner.fill.key(self.value_key(key));
        invocation.key(self.generation_key(key)).arg(generation).arg(json).arg(ttl_ms);
        let fill = self
            .inner
            .redis
            .call("cache_fill", |mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await });
        if let Err(e) = fill.await {
            failed("fill", &e);
        }
    }

    /// Deletes the key on every node now, or queues the deletion until Redis answers.
    pub(crate) async fn invalidate(&self, key: &str) {
        self.enqueue(key);
        if self.inner.redis.skipping() || !self.flush_pending().await {
            self.inner.wake.notify_one();
        }
    }

    fn enqueue(&self, key: &str) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.keys.len() >= self.inner.max_pending && !pending.keys.contains_key(key) {
            // Forgetting it is safe only because the entry expires: say so once.
            if !pending.overflowed {
                pending.overflowed = true;
                tracing::warn!(
                    max = self.inner.max_pending,
                    "too many cache invalidations queued while Redis is unreachable; \
                     further ones are dropped and those entries expire by their TTL"
                );
            }
            metrics::counter!("cache_invalidations_dropped_total").increment(1);
            return;
        }
        pending.next += 1;
        let seq = pending.next;
        pending.keys.insert(key.to_owned(), seq);
        metrics::gauge!("cache_invalidations_pending").set(pending.keys.len() as f64);
    }

    /// Whether Redis may be read: it is not being avoided and no invalidation is queued
    /// (which would leave a value there that this node knows is stale).
    async fn ready_for_reads(&self) -> bool {
        if self.inner.redis.skipping() {
            return false;
        }
        self.pending_invalidations() == 0 || self.flush_pending().await
    }

    /// Sends every queued invalidation; true when none is left.
    async fn flush_pending(&self) -> bool {
        let _one_at_a_time = self.inner.flushing.lock().await;
        loop {
            let batch: Vec<(String, u64)> = {
                let pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
                pending.keys.iter().take(FLUSH_BATCH).map(|(k, seq)| (k.clone(), *seq)).collect()
            };
            if batch.is_empty() {
                return true;
            }
            // The flush this caller waited for just failed: do not wait on Redis again.
            if self.inner.redis.skipping() {
                return false;
            }
            if let Err(e) = self.send_invalidations(batch.iter().map(|(k, _)| k.as_str())).await {
                failed("invalidate", &e);
                return false;
            }
            let mut pending = self.inner.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, seq) in batch {
                // A newer request for the key came while this one was in flight: keep it.
                if pending.keys.get(&key) == Some(&seq) {
                    pending.keys.remove(&key);
                }
            }
            if pending.keys.is_empty() {
                pending.overflowed = false;
            }
            metrics::gauge!("cache_invalidations_pending").set(pending.keys.len() as f64);
        }
    }

    /// DEL each value and bump its invalidation count, in one atomic round trip.
    async fn send_invalidations<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Result<(), CallError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            let generation = self.generation_key(key);
            pipe.del(self.value_key(key)).ignore();
            pipe.incr(&generation, 1).ignore();
            pipe.pexpire(&generation, GENERATION_TTL_MS).ignore();
        }
        self.inner
            .redis
            .call("cache_invalidate", |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }
}

/// Counts a Redis failure; a call skipped by the breaker is not one (the breaker counts it).
fn failed(op: &'static str, error: &CallError) {
    if !matches!(error, CallError::Skipped) {
        metrics::counter!("cache_errors_total", "op" => op).increment(1);
    }
}

/// Retries queued invalidations until none is left, each time the breaker lets a call
/// through, then sleeps until the next one is queued. Ends when the cache is dropped.
async fn flush_in_background(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let cache = RedisCache { inner };
            if cache.flush_pending().await {
                break;
            }
            let pause = cache.inner.redis.retry_in().max(FLUSH_PAUSE);
            drop(cache);
            tokio::time::sleep(pause).await;
        }
    }
}
