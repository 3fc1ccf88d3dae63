//! The cache's contract, run against both backends: single flight, what is (not) cached,
//! invalidation racing a load, the in-process bounds, and Redis being unreachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::Notify;

use super::{Cache, MemoryCache, Namespace, Redis, RedisCache};

const NS: Namespace = Namespace("test");

fn redis_url() -> String {
    std::env::var("ATOM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis-backed cache in a key space of its own, removed on drop.
struct RedisSpace {
    prefix: String,
}

impl RedisSpace {
    fn new() -> Self {
        Self { prefix: format!("atom-unit-{}", uuid::Uuid::new_v4().simple()) }
    }

    fn cache(&self, url: &str, ttl: Duration) -> Cache {
        let timeout = Duration::from_secs(1);
        let redis = Redis::new(&SecretString::from(url), &self.prefix, timeout, timeout).expect("redis url");
        Cache::Redis(RedisCache::new(Arc::new(redis), ttl, 1000))
    }

    async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {} is required by this test: {e}", redis_url()));
        redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query_async(&mut conn).await.expect("KEYS")
    }
}

impl Drop for RedisSpace {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        // Drop runs inside a test's runtime; a blocking client on another thread is simplest.
        let _ = std::thread::spawn(move || {
            let Ok(client) = redis::Client::open(redis_url()) else { return };
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(&pattern).query_async(&mut conn).await.unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                }
            });
        })
        .join();
    }
}

fn memory(ttl: Duration) -> Cache {
    Cache::Memory(MemoryCache::new(1000, ttl))
}

/// Loads `value`, counting the calls, after `delay`.
async fn counted(calls: &AtomicUsize, delay: Duration, value: &str) -> Result<Option<String>, std::io::Error> {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    Ok(Some(value.to_owned()))
}

async fn concurrent_misses_run_the_loader_once(cache: Cache) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (cache, calls) = (cache.clone(), Arc::clone(&calls));
        tasks.spawn(async move {
            cache.get_or_load(NS, "popular", None, || counted(&calls, Duration::from_millis(300), "v")).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task").expect("loaded").as_deref(), Some("v"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one load for 32 concurrent misses");
    assert_eq!(cache.flights().in_progress(), 0, "the flight is over");
    let again = cache.get_or_load(NS, "popular", None, || counted(&calls, Duration::ZERO, "other")).await;
    assert_eq!(again.expect("hit").as_deref(), Some("v"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "then a hit");
}

#[tokio::test]
async fn memory_single_flight() {
    concurrent_misses_run_the_loader_once(memory(Duration::from_secs(60))).await;
}

#[tokio::test]
async fn redis_single_flight() {
    let space = RedisSpace::new();
    concurrent_misses_run_the_loader_once(space.cache(&redis_url(), Duration::from_secs(60))).await;
    assert!(space.keys().await.iter().any(|k| k.ends_with(":cache:test:popular")), "stored in Redis");
}

async fn nothing_and_errors_are_not_cached(cache: Cache) {
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        let absent = cache
            .get_or_load(NS, "absent", None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<Option<String>, std::io::Error>(None)
            })
            .await;
        assert!(matches!(absent, Ok(None)));
        let failed = cache
            .get_or_load(NS, "failing", None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<Option<String>, _>(std::io::Error::other("database down"))
            })
            .await;
        assert_eq!(failed.expect_err("the loader's error").to_string(), "database down");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4, "every call loaded again");
}

#[tokio::test]
async fn memory_caches_neither_nothing_nor_errors() {
    nothing_and_errors_are_not_cached(memory(Duration::from_secs(60))).await;
}

#[tokio::test]
async fn redis_caches_neither_nothing_nor_errors() {
    let space = RedisSpace::new();
    nothing_and_errors_are_not_cached(space.cache(&redis_url(), Duration::from_secs(60))).await;
}

/// `writer` invalidates while `reader`'s load (which read the old value) is in progress;
/// the old value must not be stored.
async fn a_load_racing_an_invalidation_is_not_stored(reader: Cache, writer: Cache) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (loading, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow_read = {
        let (reader, calls, loading, release) =
            (reader.clone(), Arc::clone(&calls), Arc::clone(&loading), Arc::clone(&release));
        tokio::spawn(async move {
            reader
                .get_or_load(NS, "row", None, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    loading.notify_one();
                    release.notified().await;
                    Ok::<_, std::io::Error>(Some("old".to_owned()))
                })
                .await
        })
    };
    loading.notified().await;
    writer.invalidate(NS, "row").await;
    release.notify_one();
    assert_eq!(slow_read.await.expect("task").expect("loaded").as_deref(), Some("old"), "its caller gets it");

    let fresh = reader.get_or_load(NS, "row", None, || counted(&calls, Duration::ZERO, "new")).await;
    assert_eq!(fresh.expect("loaded").as_deref(), Some("new"), "the pre-write value was not cached");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn memory_load_racing_an_invalidation_is_not_stored() {
    let cache = memory(Duration::from_secs(60));
    a_load_racing_an_invalidation_is_not_stored(cache.clone(), cache).await;
}

#[tokio::test]
async fn redis_load_racing_an_invalidation_on_this_node_is_not_stored() {
    let space = RedisSpace::new();
    let cache = space.cache(&redis_url(), Duration::from_secs(60));
    a_load_racing_an_invalidation_is_not_stored(cache.clone(), cache).await;
}

#[tokio::test]
async fn redis_load_racing_an_invalidation_on_another_node_is_not_stored() {
    let space = RedisSpace::new();
    let (node_a, node_b) =
        (space.cache(&redis_url(), Duration::from_secs(60)), space.cache(&redis_url(), Duration::from_secs(60)));
    a_load_racing_an_invalidation_is_not_stored(node_a, node_b).await;
}

async fn invalidation_drops_the_entry(cache: Cache) {
    let calls = AtomicUsize::new(0);
    for expected_calls in [1, 1] {
        let v = cache.get_or_load(NS, "k", None, || counted(&calls, Duration::ZERO, "v1")).await;
        assert_eq!(v.expect("loaded").as_deref(), Some("v1"));
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    }
    cache.invalidate(NS, "k").await;
    let v = cache.get_or_load(NS, "k", None, || counted(&calls, Duration::ZERO, "v2")).await;
    assert_eq!(v.expect("loaded").as_deref(), Some("v2"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn memory_invalidation_drops_the_entry() {
    invalidation_drops_the_entry(memory(Duration::from_secs(60))).await;
}

#[tokio::test]
async fn redis_invalidation_drops_the_entry() {
    let space = RedisSpace::new();
    invalidation_drops_the_entry(space.cache(&redis_url(), Duration::from_secs(60))).await;
}

async fn entries_expire_after_their_ttl(cache: Cache, asked: Option<Duration>) {
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        cache.get_or_load(NS, "short", asked, || counted(&calls, Duration::ZERO, "v")).await.expect("loaded");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "cached within the TTL");
    tokio::time::sleep(Duration::from_millis(400)).await;
    cache.get_or_load(NS, "short", asked, || counted(&calls, Duration::ZERO, "v")).await.expect("loaded");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "expired after the TTL");
}

#[tokio::test]
async fn memory_entries_expire_after_the_configured_ttl_or_a_shorter_one_asked_for() {
    entries_expire_after_their_ttl(memory(Duration::from_millis(200)), None).await;
    entries_expire_after_their_ttl(memory(Duration::from_secs(60)), Some(Duration::from_millis(200))).await;
    // Asking for more than configured gets the configured TTL.
    entries_expire_after_their_ttl(memory(Duration::from_millis(200)), Some(Duration::from_secs(60))).await;
}

#[tokio::test]
async fn redis_entries_expire_after_their_ttl() {
    let space = RedisSpace::new();
    entries_expire_after_their_ttl(space.cache(&redis_url(), Duration::from_millis(200)), None).await;
}

#[tokio::test]
async fn memory_holds_at_most_max_entries() {
    let memory = MemoryCache::new(100, Duration::from_secs(60));
    let cache = Cache::Memory(memory.clone());
    for i in 0..1000 {
        let key = format!("k{i}");
        cache.get_or_load(NS, &key, None, || async { Ok::<_, std::io::Error>(Some(i)) }).await.expect("loaded");
    }
    memory.run_pending_tasks();
    assert!(memory.entry_count() <= 100, "{} entries", memory.entry_count());
}

#[tokio::test]
async fn unreachable_redis_reads_through_and_queues_invalidations() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let space = RedisSpace::new();
    let cache = space.cache(&format!("redis://127.0.0.1:{port}"), Duration::from_secs(60));
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let v = cache.get_or_load(NS, "k", None, || counted(&calls, Duration::ZERO, "from the database")).await;
        assert_eq!(v.expect("loaded").as_deref(), Some("from the database"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "nothing cached while Redis is unreachable");
    cache.invalidate(NS, "k").await;
    let Cache::Redis(redis) = &cache else { unreachable!("a Redis cache") };
    assert_eq!(redis.pending_invalidations(), 1, "queued until Redis answers");
    assert!(redis.degraded());
}
