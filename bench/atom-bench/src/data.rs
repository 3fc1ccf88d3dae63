//! Data-layer measurements for `bench/data.sh`: hot-query latency at a given table size,
//! cache hit against miss, and filling a database to a size for backup timing.
//!
//! Seeded rows follow `tests/it/query_plans.rs`: users `user-<n>` / `user<n>@example.com`;
//! audit rows by 1,000 actors (`user-1`..`user-1000`, so every actor has a full first page
//! at 100,000 rows) with actions as skewed as a live log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atom::Db;
use atom::cache::{Cache, Namespace, Redis};
use atom::config::CacheConfig;
use atom::storage::{audit, users};
use sqlx::AssertSqlSafe;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const AUDIT_ACTORS: u64 = 1000;
const PAGE: i64 = 100;

/// The configured database (`ATOM_*`), migrated.
async fn open() -> Result<(atom::Config, Db)> {
    let config = atom::Config::load(None)?;
    let db = Db::connect(&config.database_target()?, &config.database).await?;
    db.migrate().await?;
    Ok((config, db))
}

async fn execute(db: &Db, sql: String) -> Result<()> {
    match db {
        Db::Sqlite(pool) => {
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
        }
        Db::Postgres(pool, ..) => {
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
        }
    }
    Ok(())
}

/// Rows `n` for `from..=to`, as a FROM item of either dialect.
fn series(db: &Db, from: u64, to: u64) -> String {
    match db {
        Db::Sqlite(_) => format!(
            "(WITH RECURSIVE s(n) AS (SELECT {from} UNION ALL SELECT n + 1 FROM s WHERE n < {to}) SELECT n FROM s) AS s"
        ),
        Db::Postgres(..) => format!("generate_series({from}::bigint, {to}::bigint) AS s(n)"),
    }
}

pub async fn seed(from: u64, to: u64) -> Result<()> {
    let (config, db) = open().await?;
    // The data directory gets its master key as `atom serve` would give it one: the restore
    // of the backup benchmark needs it.
    atom::app::load_keyring(&config)?;
    let started = Instant::now();
    let series = series(&db, from, to);
    execute(
        &db,
        format!(
            "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, password_changed_at) \
             SELECT 'user-' || n, 'user' || n || '@example.com', 'x', 'user', n, n, n FROM {series}"
        ),
    )
    .await?;
    execute(
        &db,
        format!(
            "INSERT INTO audit_log (id, at, actor_type, actor_id, action, outcome, details, prev_hash, hash) \
             SELECT 'audit-' || n, 1700000000000 + n * 1000, 'user', 'user-' || (1 + n % {AUDIT_ACTORS}), \
               CASE WHEN n % 10 < 6 THEN 'auth.login' WHEN n % 10 < 9 THEN 'auth.refresh' \
                 ELSE 'action-' || (n / 10 % 50) END, \
               'success', '{{\"ip\":\"10.0.0.' || (n % 256) || '\"}}', 'h', 'h' FROM {series}"
        ),
    )
    .await?;
    execute(&db, "ANALYZE".to_owned()).await?;
    println!("seeded {from}..={to} in {:.1} s", started.elapsed().as_secs_f64());
    db.close().await;
    Ok(())
}

/// A small, fast, deterministic generator (splitmix64): the keys need only to be spread.
#[derive(Debug)]
struct Keys(u64);

impl Keys {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// Runs `op` `iters` times after `iters / 10` unmeasured runs; prints `NAME p50_us p99_us`.
async fn measure<F, Fut>(name: &str, iters: usize, mut op: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    for _ in 0..iters / 10 {
        op().await?;
    }
    let mut latencies = Vec::with_capacity(iters);
    for _ in 0..iters {
        let at = Instant::now();
        op().await?;
        latencies.push(at.elapsed());
    }
    report(name, latencies);
    Ok(())
}

fn report(name: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e6
    };
    println!("{name} {:.1} {:.1}", pct(0.50), pct(0.99));
}

pub async fn query(rows: u64, iters: usize) -> Result<()> {
    let (_, db) = open().await?;
    let mut keys = Keys(rows);
    measure("users.by_email", iters, || {
        let email = format!("user{}@example.com", 1 + keys.next(rows));
        let db = &db;
        async move {
            users::by_email(db, &email).await?.ok_or("seeded user missing")?;
            Ok(())
        }
    })
    .await?;
    let first_page = audit::AuditFilter { limit: PAGE, ..Default::default() };
    measure("audit.list", iters, || async {
        let page = audit::list(&db, &first_page).await?;
        if page.len() != PAGE as usize {
            return Err("short first page".into());
        }
        Ok(())
    })
    .await?;
    measure("audit.list_cursor", iters, || {
        let filter = audit::AuditFilter {
            before_seq: Some(i64::try_from(PAGE as u64 + 1 + keys.next(rows - PAGE as u64)).unwrap_or(i64::MAX)),
            limit: PAGE,
            ..Default::default()
        };
        let db = &db;
        async move {
            audit::list(db, &filter).await?;
            Ok(())
        }
    })
    .await?;
    measure("audit.list_by_actor", iters, || {
        let filter = audit::AuditFilter {
            actor_id: Some(format!("user-{}", 1 + keys.next(AUDIT_ACTORS))),
            limit: PAGE,
            ..Default::default()
        };
        let db = &db;
        async move {
            let page = audit::list(db, &filter).await?;
            if page.len() != PAGE as usize {
                return Err("short actor page".into());
            }
            Ok(())
        }
    })
    .await?;
    db.close().await;
    Ok(())
}

/// What is cached of a user in this benchmark: the whole row (as JSON in Redis).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CachedUser {
    id: String,
    email: String,
    role: String,
    created_at: i64,
    updated_at: i64,
    password_changed_at: i64,
    disabled_at: Option<i64>,
}

async fn load_user(db: &Db, id: &str) -> std::result::Result<Option<CachedUser>, sqlx::Error> {
    Ok(users::by_id(db, id).await?.map(|u| CachedUser {
        id: u.id,
        email: u.email,
        role: u.role,
        created_at: u.created_at,
        updated_at: u.updated_at,
        password_changed_at: u.password_changed_at,
        disabled_at: u.disabled_at,
    }))
}

/// Prints `cache.<backend>.miss`, `cache.<backend>.hit` and, for reference, `users.by_id`
/// (the loader alone). Misses are of `iters` distinct users never cached before; hits read
/// the same users again.
pub async fn cache(rows: u64, iters: usize, redis_url: Option<&String>, prefix: Option<&String>) -> Result<()> {
    let (_, db) = open().await?;
    let config = CacheConfig { ttl_secs: 600, max_entries: 1_000_000 };
    let redis = match redis_url {
        Some(url) => {
            let prefix = prefix.map_or("atom-bench-data", String::as_str);
            let timeout = Duration::from_secs(2);
            let redis = Redis::new(&secrecy::SecretString::from(url.as_str()), prefix, timeout, timeout)?;
            redis.ping().await?;
            Some(Arc::new(redis))
        }
        None => None,
    };
    let cache = Cache::from_config(&config, redis);
    let backend = cache.backend();
    let mut keys = Keys(rows ^ 0x5eed);
    let ids: Vec<String> = (0..iters).map(|_| format!("user-{}", 1 + keys.next(rows))).collect();
    // Warm the connections and the prepared statements on other users than the measured ones.
    for _ in 0..iters / 10 {
        load_user(&db, &format!("user-{}", 1 + keys.next(rows))).await?;
    }
    let mut misses = Vec::with_capacity(iters);
    let mut reference = Vec::with_capacity(iters);
    for id in &ids {
        let at = Instant::now();
        load_user(&db, id).await?.ok_or("seeded user missing")?;
        reference.push(at.elapsed());
    }
    // Distinct ids only: a repeated one would be a hit counted as a miss.
    let mut fresh = ids.clone();
    fresh.sort();
    fresh.dedup();
    for id in &fresh {
        let at = Instant::now();
        cache.get_or_load(Namespace::USER, id, None, || load_user(&db, id)).await?.ok_or("seeded user missing")?;
        misses.push(at.elapsed());
    }
    let mut hits = Vec::with_capacity(iters);
    for id in &ids {
        let at = Instant::now();
        cache
            .get_or_load(Namespace::USER, id, None, || async { Err::<Option<CachedUser>, _>("a hit was expected") })
            .await?
            .ok_or("seeded user missing")?;
        hits.push(at.elapsed());
    }
    report("users.by_id", reference);
    report(&format!("cache.{backend}.miss"), misses);
    report(&format!("cache.{backend}.hit"), hits);
    db.close().await;
    Ok(())
}

async fn size_bytes(db: &Db) -> Result<i64> {
    Ok(match db {
        Db::Sqlite(pool) => {
            sqlx::query_scalar("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
                .fetch_one(pool)
                .await?
        }
        Db::Postgres(pool, ..) => {
            sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(pool).await?
        }
    })
}

pub async fn fill(mb: i64) -> Result<()> {
    let (_, db) = open().await?;
    let target = mb * 1024 * 1024;
    let batch = 20_000u64;
    // Hex of random bytes: 4 bits of entropy per character, so compression halves it at most,
    // as it would real audit details no better than text.
    let details = match db {
        Db::Sqlite(_) => "'{\"pad\":\"' || hex(randomblob(1536)) || '\"}'",
        Db::Postgres(..) => {
            "'{\"pad\":\"' || (SELECT string_agg(md5(random()::text || s.n || g), '') \
             FROM generate_series(1, 96) AS g) || '\"}'"
        }
    };
    let mut next: u64 = match &db {
        Db::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT coalesce(max(seq), 0) FROM audit_log").fetch_one(pool).await?
        }
        Db::Postgres(pool, ..) => {
            sqlx::query_scalar::<_, i64>("SELECT coalesce(max(seq), 0) FROM audit_log").fetch_one(pool).await?
        }
    }
    .try_into()
    .unwrap_or(0);
    while size_bytes(&db).await? < target {
        let series = series(&db, next + 1, next + batch);
        execute(
            &db,
            format!(
                "INSERT INTO audit_log (id, at, actor_type, actor_id, action, outcome, details, prev_hash, hash) \
                 SELECT 'fill-' || n, 1700000000000 + n * 1000, 'user', 'user-' || (1 + n % {AUDIT_ACTORS}), \
                 'bench.fill', 'success', {details}, 'h', 'h' FROM {series}"
            ),
        )
        .await?;
        next += batch;
    }
    if let Db::Sqlite(pool) = &db {
        // The backup reads the database file; leave the WAL empty as a stopped server would.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await?;
    }
    println!("{}", size_bytes(&db).await?);
    db.close().await;
    Ok(())
}

/// `iters` write transactions one after another on the configured database, each appending
/// one audit row (the hash-chained insert every account change commits with); prints
/// `commit p50_us p99_us`. Run once per `database.sqlite_synchronous` to see what FULL costs.
pub async fn commits(iters: usize) -> Result<()> {
    use atom::audit::{self as audit_log, Actor, AuditEvent, Outcome, RequestContext};
    let (_, db) = open().await?;
    let context = RequestContext::default();
    measure("commit", iters, || async {
        let mut tx = db.begin().await?;
        audit_log::record(&mut tx, AuditEvent::new(Actor::System, "bench.commit", Outcome::Success, &context)).await?;
        tx.commit().await?;
        Ok(())
    })
    .await?;
    db.close().await;
    Ok(())
}
