//! The in-process backend (the embedded default): a moka cache bounded in entries (the least
//! useful are evicted first) and in time (every entry expires after its TTL).
//!
//! Values are kept decoded (no JSON in process) and read without awaiting, so that a hit on
//! the request path is a lookup and a clone ([`super::Cache::peek`]).
//!
//! Invalidation reaches only this node. With several nodes and no Redis, another node may
//! serve a value for up to its TTL after a write: that TTL is the bound, by design.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::SingleFlight;

/// A cached value, decoded; each namespace holds one type.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

/// One cached value and how long it may live.
#[derive(Clone)]
struct Entry {
    value: Value,
    ttl: Duration,
}

/// Expires each entry after its own TTL (callers may ask for less than the configured one).
struct EntryTtl;

impl moka::Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(&self, _: &String, entry: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The in-process cache. Cheap to clone: clones share the entries.
#[derive(Clone)]
pub struct MemoryCache {
    inner: Arc<Inner>,
}

struct Inner {
    entries: moka::sync::Cache<String, Entry>,
    ttl: Duration,
    flights: SingleFlight,
}

impl std::fmt::Debug for MemoryCache {
    // moka's own Debug lists every entry; the size is what is worth showing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.inner.entries.entry_count())
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl MemoryCache {
    /// At most `max_entries` entries, each living at most `ttl`.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        let entries = moka::sync::Cache::builder().max_capacity(max_entries).expire_after(EntryTtl).build();
        Self { inner: Arc::new(Inner { entries, ttl, flights: SingleFlight::default() }) }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    pub(crate) fn flights(&self) -> &SingleFlight {
        &self.inner.flights
    }

    pub(crate) fn get(&self, key: &str) -> Option<Value> {
        self.inner.entries.get(key).map(|e| e.value)
    }

    pub(crate) fn store(&self, key: &str, value: Value, ttl: Duration) {
        self.inner.entries.insert(key.to_owned(), Entry { value, ttl });
    }

    pub(crate) fn remove(&self, key: &str) {
        self.inner.entries.invalidate(key);
    }

    /// Entries held now. moka counts an insert, eviction or expiry only once its pending
    /// tasks have run, which a quiet cache may not do for a long time: they are run first,
    /// so that `cache_entries` (read at each scrape) is not left at a stale count.
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.run_pending_tasks();
        self.inner.entries.entry_count()
    }

    /// Applies pending evictions and expirations now (for tests and exact counts).
    pub fn run_pending_tasks(&self) {
        self.inner.entries.run_pending_tasks();
    }
}
