//! PostgreSQL failing under a running server, on a real PostgreSQL: a busy connection the
//! server terminates (a fast stop, a failover, `pg_terminate_backend`) is a 503 `unavailable`
//! with `Retry-After`, logged as a warning, never a 500; while it refuses connections
//! (stopped), requests and `/ready` fail fast instead of waiting out the pool's acquire
//! timeout, until a probe finds it back. Each test kills only the backends of its own
//! database, or cuts its own proxy.

use std::time::{Duration, Instant};

use atom::AppState;
use atom::error::ApiError;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;

use crate::common::{CapturedLogs, TestApp, TestDb, assert_problem, connect_pg, pg_admin_url};

/// `/test/pg-sleep/{ms}`: one query that holds its connection busy for `ms`.
fn routes() -> Router<AppState> {
    Router::new().route(
        "/test/pg-sleep/{ms}",
        get(|State(state): State<AppState>, Path(ms): Path<u32>| async move {
            let atom::Db::Postgres(pool, ..) = &state.db else { unreachable!("a PostgreSQL test") };
            sqlx::query("SELECT pg_sleep($1)")
                .bind(f64::from(ms) / 1000.0)
                .execute(pool)
                .await
                .map(|_| "slept")
                .map_err(ApiError::from)
        }),
    )
}

/// Terminates every connection the application holds to `database`; how many it found.
async fn terminate_backends(admin: &mut sqlx::PgConnection, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'atom' AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("pg_terminate_backend")
}

async fn assert_unavailable(response: reqwest::Response) {
    let retry_after = response.headers().get("retry-after").cloned();
    let body = assert_problem(response, 503).await;
    assert_eq!(body["type"], "urn:atom:problem:unavailable", "{body}");
    assert!(retry_after.is_some(), "a 503 says when to retry");
}

fn error_lines(logs: &CapturedLogs) -> Vec<serde_json::Value> {
    logs.lines().into_iter().filter(|l| l["level"] == "ERROR").collect()
}

#[tokio::test]
async fn a_busy_connection_terminated_by_the_server_is_a_503_logged_as_a_warning() {
    let (logs, _guard) = CapturedLogs::install();
    let db = TestDb::postgres().await;
    let database = db.pg.as_ref().expect("postgres").name.clone();
    let app = TestApp::spawn_on(db, &[], routes()).await;
    let mut admin = connect_pg(&pg_admin_url()).await;

    let slow = tokio::spawn(app.client.get(app.url("/test/pg-sleep/30000")).send());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_activity");
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow query did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminate_backends(&mut admin, &database).await > 0);

    let response = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("answered").expect("task");
    assert_unavailable(response.expect("sent")).await;
    let logged = logs.lines();
    assert!(
        logged.iter().any(|l| l["level"] == "WARN" && l["fields"]["message"] == "dependency unavailable"),
        "logged as a warning: {logged:?}"
    );
    assert!(error_lines(&logs).is_empty(), "nothing logged as an error: {:?}", error_lines(&logs));

    // The pool replaces the dead connection: the next request is served.
    let response = app.get("/test/pg-sleep/1").await;
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn requests_under_a_terminate_loop_answer_200_or_503_never_500() {
    let (logs, _guard) = CapturedLogs::install();
    let db = TestDb::postgres().await;
    let database = db.pg.as_ref().expect("postgres").name.clone();
    // Many requests from one address: rate limits are not what this test is about.
    let app = TestApp::spawn_on(db, &[("RATE_LIMIT_ENABLED", "false")], routes()).await;
    let mut admin = connect_pg(&pg_admin_url()).await;

    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url) = (app.client.clone(), app.url("/test/pg-sleep/20"));
        clients.spawn(async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let response = client.get(&url).send().await.expect("sent");
                let status = response.status().as_u16();
                if status == 503 {
                    assert_unavailable(response).await;
                }
                statuses.push(status);
            }
            statuses
        });
    }
    let mut killed = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        killed += terminate_backends(&mut admin, &database).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut statuses = Vec::new();
    while let Some(joined) = clients.join_next().await {
        statuses.extend(joined.expect("client task"));
    }
    assert!(killed > 0, "backends were terminated");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "only 200 or 503: {statuses:?}");
    assert!(statuses.contains(&503), "some busy connection was terminated: {statuses:?}");
    assert!(error_lines(&logs).is_empty(), "nothing logged as an error: {:?}", error_lines(&logs));

    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/test/pg-sleep/1").await.status() != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn while_postgres_refuses_connections_requests_and_ready_fail_fast_until_it_is_back() {
    let (db, proxy, url) = TestDb::postgres_behind_proxy().await;
    let extra = [
        ("DATABASE_URL", url.as_str()),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "30"),
        ("HTTP_READY_CHECK_TIMEOUT_MS", "20000"),
        ("RATE_LIMIT_ENABLED", "false"),
    ];
    let app = TestApp::spawn_on(db, &extra, crate::errors::test_routes()).await;
    assert_eq!(app.get("/test/db").await.status(), 200);
    assert_eq!(app.get("/ready").await.status(), 200);

    proxy.set_refusing(true).await;
    // Where waiting would take the 20 s readiness timeout and the 30 s acquire timeout, each
    // answer comes within 10 s (in milliseconds on a quiet machine), the first one included.
    let started = Instant::now();
    let body = assert_problem(app.get("/ready").await, 503).await;
    assert!(started.elapsed() < Duration::from_secs(10), "/ready took {:?}", started.elapsed());
    assert_eq!(body["checks"]["database"]["status"], "failed", "{body}");
    assert!(body["checks"]["database"]["latency_ms"].as_f64().is_some_and(|ms| ms < 10_000.0), "{body}");
    assert!(body["checks"]["database"]["error"].is_string(), "{body}");
    for _ in 0..10 {
        let started = Instant::now();
        assert_unavailable(app.get("/test/db").await).await;
        assert!(started.elapsed() < Duration::from_secs(10), "a request took {:?}", started.elapsed());
    }
    assert_eq!(app.get("/health").await.status(), 200);

    proxy.set_refusing(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/test/db").await.status() != 200 {
        assert!(Instant::now() < deadline, "requests did not succeed again once PostgreSQL was back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.get("/ready").await.status(), 200);
    app.stop().await;
}
