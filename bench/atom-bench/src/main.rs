//! `atom-bench`: the measurements that need Atom's library rather than its HTTP surface.
//!
//! - `jwt [SECS]`: access-token verifications per second on one thread.
//! - `ratelimit-local [SECS]`: nanoseconds per local GCRA decision.
//! - `ratelimit-redis URL CONCURRENCY [SECS]`: shared decisions per second and their p50/p99
//!   latency with CONCURRENCY tasks on one Redis.
//! - `data-seed FROM TO`: migrates the configured database, makes sure the data directory
//!   has a master key, and bulk-inserts users and audit rows `FROM..=TO` (one statement each).
//! - `data-query ROWS ITERS`: p50/p99 of `users::by_email` and `audit::list` (first page of
//!   100, a page at a random cursor, one actor's first page) with random keys in `1..=ROWS`.
//! - `data-cache ROWS ITERS [REDIS_URL PREFIX]`: `Cache::get_or_load` of a user row, miss
//!   (the loader reads the database) against hit, in process or in Redis.
//! - `data-fill MB`: appends audit rows with ~3 KB of incompressible-ish details until the
//!   database is about MB megabytes; prints its size in bytes.
//! - `data-commits ITERS`: p50/p99 of a write transaction appending one audit row, one
//!   after another (`bench/sqlite-sync.sh` runs it per `database.sqlite_synchronous`).
//! - `serve ADDR DATA_DIR`: Atom with `/bench/public` and `/bench/protected` (both answer
//!   `ok`), for wrk; prints an access token (of a session, valid `auth.access_ttl_secs`) for
//!   the protected route on the first line.
//!
//! - `proxy-serve ADDR DATA_DIR PROVIDER`: Atom with one API-key connection to `PROVIDER`
//!   (a template in `ATOM_CONNECTORS_PROVIDERS_DIR`) owned by a fresh user; prints an API key
//!   of that user's with the `connections:use` scope (the agent's credential) and the
//!   connection id on the first line, for `bench/proxy.sh`.
//!
//! Configuration comes from `ATOM_*` variables as for `atom serve`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atom::Application;
use atom::edge::ratelimit::{Limiter, Policy};
use atom::identity::tokens::{AccessTokens, SigningKey, TokenConfig, TokenKeys};
use axum::Router;
use axum::routing::get;

mod data;

/// The allocator the `atom` binary uses, so that `serve` measures what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.get(1).map(String::as_str) {
        Some("jwt") => jwt(Duration::from_secs(arg(&args, 2, 5))),
        Some("ratelimit-local") => ratelimit_local(Duration::from_secs(arg(&args, 2, 5))),
        Some("ratelimit-redis") => runtime.block_on(ratelimit_redis(
            args.get(2).cloned().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            arg(&args, 3, 32),
            Duration::from_secs(arg(&args, 4, 5)),
        )),
        Some("serve") => runtime.block_on(serve(&args)),
        Some("proxy-serve") => runtime.block_on(proxy_serve(&args)),
        Some("data-seed") => runtime.block_on(data::seed(arg(&args, 2, 1), arg(&args, 3, 100_000))),
        Some("data-query") => runtime.block_on(data::query(arg(&args, 2, 100_000), arg(&args, 3, 2000))),
        Some("data-cache") => {
            runtime.block_on(data::cache(arg(&args, 2, 100_000), arg(&args, 3, 2000), args.get(4), args.get(5)))
        }
        Some("data-fill") => runtime.block_on(data::fill(arg(&args, 2, 256))),
        Some("data-commits") => runtime.block_on(data::commits(arg(&args, 2, 2000))),
        _ => Err(
            "usage: atom-bench jwt|ratelimit-local|ratelimit-redis|serve|proxy-serve|data-seed|data-query|data-cache|data-fill|data-commits …"
                .into(),
        ),
    }
}

fn jwt(duration: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let tokens = AccessTokens::new(TokenConfig::new("urn:atom", "atom-api"), TokenKeys::new(SigningKey::generate()?))?;
    let (token, _) = tokens.issue("00000000-0000-4000-8000-000000000000", vec!["user".to_owned()], None)?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for _ in 0..100 {
            tokens.verify(&token)?;
        }
        count += 100;
    }
    println!("jwt_verify_per_sec {:.0}", count as f64 / started.elapsed().as_secs_f64());
    Ok(())
}

fn policies() -> HashMap<&'static str, Policy> {
    // Generous, so that every decision is an allowed one doing the full update.
    HashMap::from([("bench", Policy { quota: 1_000_000_000, window_secs: 60, burst: 1_000_000 })])
}

fn ratelimit_local(duration: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let limiter = Limiter::new(policies(), None);
    let keys: Vec<String> = (0..1000).map(|i| format!("addr:10.0.{}.{}", i / 256, i % 256)).collect();
    let started = Instant::now();
    let mut count = 0u64;
    runtime.block_on(async {
        while started.elapsed() < duration {
            for key in &keys {
                limiter.check("bench", key).await;
            }
            count += keys.len() as u64;
        }
    });
    println!("ratelimit_local_ns_per_decision {:.0}", started.elapsed().as_nanos() as f64 / count as f64);
    Ok(())
}

async fn ratelimit_redis(
    url: String,
    concurrency: usize,
    duration: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    // Measures Redis itself: a timeout long enough that the breaker never skips it.
    let timeout = Duration::from_secs(2);
    let redis = atom::cache::Redis::new(&url.into(), "atom-bench", timeout, timeout)?;
    redis.ping().await?;
    let limiter = Arc::new(Limiter::new(policies(), Some(Arc::new(redis))));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let key = format!("addr:10.1.0.{t}");
                while started.elapsed() < duration {
                    let at = Instant::now();
                    limiter.check("bench", &key).await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    if limiter.degraded() {
        return Err("Redis failed during the run; the numbers would be local ones".into());
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "ratelimit_redis_decisions_per_sec {:.0} p50_us {} p99_us {}",
        latencies.len() as f64 / started.elapsed().as_secs_f64(),
        pct(0.50).as_micros(),
        pct(0.99).as_micros()
    );
    Ok(())
}

async fn serve(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let listen = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:8300".to_owned());
    let data_dir = args.get(3).cloned().ok_or("serve ADDR DATA_DIR")?;
    let mut config = atom::Config::load(None)?;
    config.listen = listen.parse()?;
    config.data_dir = data_dir.into();
    let app = Application::build(config).await?;
    let user = atom::identity::accounts::create_with_role(
        &app.state().db,
        "bench@example.com",
        "correct horse battery staple".into(),
        atom::identity::Role::User,
    )
    .await?;
    let token = session_token(app.state(), &user.id).await?;
    println!("{token}");
    let app = app
        .with_routes(Router::new().route("/bench/public", get(|| async { "ok" })))
        .with_protected_routes(Router::new().route("/bench/protected", get(|| async { "ok" })));
    app.run_until(atom::shutdown::signal()).await?;
    Ok(())
}

async fn proxy_serve(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let listen = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1:8300".to_owned());
    let data_dir = args.get(3).cloned().ok_or("proxy-serve ADDR DATA_DIR PROVIDER")?;
    let provider = args.get(4).cloned().ok_or("proxy-serve ADDR DATA_DIR PROVIDER")?;
    let mut config = atom::Config::load(None)?;
    config.listen = listen.parse()?;
    config.data_dir = data_dir.into();
    let app = Application::build(config).await?;
    let state = app.state().clone();
    let user = atom::identity::accounts::create_with_role(
        &state.db,
        "bench@example.com",
        "correct horse battery staple".into(),
        atom::identity::Role::User,
    )
    .await?;
    let key = agent_key(&state.db, &user.id).await?;
    let mut credentials = atom::connectors::vault::Credentials::default();
    credentials.fields.insert("api_key".to_owned(), "bench-key-0123456789".to_owned());
    let obtained = atom::connectors::vault::Obtained {
        user_id: user.id.clone(),
        provider,
        auth_kind: "api_key",
        account_id: "bench".to_owned(),
        label: "bench".to_owned(),
        scopes: Vec::new(),
        params: serde_json::json!({}),
        credentials,
        expires_at: None,
    };
    let mut tx = state.db.begin().await?;
    let (row, _) =
        atom::connectors::vault::store(&mut tx, &state.identity.keyring(), &obtained, atom::storage::now_ms())
            .await
            .map_err(|e| e.to_string())?;
    tx.commit().await?;
    println!("{key} {}", row.id);
    app.run_until(atom::shutdown::signal()).await?;
    Ok(())
}

/// An access token of `user_id`'s as a sign-in issues one: bound to a session (the server
/// refuses a token without one), for the configured lifetime (`auth.access_ttl_secs`).
async fn session_token(state: &atom::state::AppState, user_id: &str) -> Result<String, Box<dyn std::error::Error>> {
    let now = atom::storage::now_ms();
    let row = atom::storage::sessions::RefreshRow {
        id: uuid::Uuid::new_v4().to_string(),
        // Never presented: the session only has to exist for the token's `sid`.
        token_hash: atom::identity::secret_hash(&atom::identity::random_secret()),
        family_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        created_at: now,
        expires_at: now + 24 * 3600 * 1000,
        used_at: None,
        revoked_at: None,
        client_addr: None,
        user_agent: None,
    };
    let mut tx = state.db.begin().await?;
    atom::storage::sessions::insert(&mut tx, &row).await?;
    tx.commit().await?;
    let tokens = state.identity.tokens().await;
    let (token, _) = tokens.issue_for_session(user_id, &row.family_id, vec!["user".to_owned()])?;
    Ok(token)
}

/// An API key of `user_id`'s with the `connections:use` scope, stored as `POST /v1/api-keys`
/// stores one: the credential an agent calls the proxy with. (A bare access JWT is no
/// substitute: the server accepts only tokens bound to a session, which a sign-in makes.)
async fn agent_key(db: &atom::storage::Db, user_id: &str) -> Result<String, Box<dyn std::error::Error>> {
    use atom::identity::api_keys::{API_KEY_PREFIX, CONNECTIONS_USE};
    let prefix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let key = format!("{API_KEY_PREFIX}{prefix}_{}", atom::identity::random_secret());
    let row = atom::storage::api_keys::ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        name: "bench agent".to_owned(),
        prefix,
        key_hash: atom::identity::secret_hash(&key),
        scopes: CONNECTIONS_USE.to_owned(),
        created_at: atom::storage::now_ms(),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        providers: None,
    };
    let mut tx = db.begin().await?;
    atom::storage::api_keys::insert(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(key)
}
