//! The plan harness: every query in `storage::hot::HOT_QUERIES` is served by its index.
//!
//! On PostgreSQL (always: the suite's server or the local one) each hot table gets 100,000
//! rows and fresh statistics; then each query is prepared and explained twice, as a custom
//! plan (for its sample values) and as the generic plan PostgreSQL may cache for a prepared
//! statement after a few runs. Both must use the named index and neither may scan the
//! table. On SQLite, with fewer rows, `EXPLAIN QUERY PLAN` must search by the index.
//!
//! A new hot query needs only its line in `HOT_QUERIES`; a query on a new table also needs
//! that table's seed in [`SEEDS`].

use std::time::Instant;

use atom::Db;
use atom::storage::hot::{HOT_QUERIES, HotQuery, Index, Sample};
use serde_json::Value;
use sqlx::{Connection, Row};

use crate::common::{TestDb, connect_pg, test_config};

const PG_ROWS: i64 = 100_000;
const SQLITE_ROWS: i64 = 20_000;

/// One statement per hot table, over `{series}` (a row `n` for 1..=rows), in SQL both engines
/// accept. The rows match the sample values of `HOT_QUERIES` (`user-4242`, `pfx-4242`, …)
/// and spread like real data: up to 5 API keys per user, 20 audit rows per actor,
/// 50 members per conversation, 1,000 messages in each of 100 conversations, and
/// audit actions as skewed as in a live log (60 % logins, 30 % refreshes, the rest spread
/// over 50 rarer actions, which are what an operator filters for).
const SEEDS: &[(&str, &str)] = &[
    (
        "connections",
        "INSERT INTO connections (id, user_id, provider, auth_kind, account_id, label, status, scopes, params, \
         credentials, expires_at, created_at, updated_at) \
         SELECT 'conn-' || n, 'user-' || (1 + n % 20000), 'provider-' || (n % 40), 'oauth2', 'acct-' || n, 'label', \
           'active', '', '{}', 'sealed', 1800000000000 + n * 1000, n, n FROM {series}",
    ),
    (
        "connection_authorizations",
        "INSERT INTO connection_authorizations (state_hash, user_id, provider, secrets, scopes, params, return_to, \
         created_at, expires_at) \
         SELECT 'state-' || n, 'user-' || (1 + n % 20000), 'provider-1', 'sealed', '', '{}', '', n, n + 600000 \
         FROM {series}",
    ),
    (
        "users",
        "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, password_changed_at) \
         SELECT 'user-' || n, 'user' || n || '@example.com', 'x', 'user', n, n, n FROM {series}",
    ),
    (
        "refresh_tokens",
        "INSERT INTO refresh_tokens (id, token_hash, family_id, user_id, created_at, expires_at) \
         SELECT 'rt-' || n, 'rthash-' || n, 'family-' || (n / 4), 'user-' || (1 + n % {rows}), n, n + 1000 \
         FROM {series}",
    ),
    (
        "api_keys",
        "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes, created_at) \
         SELECT 'key-' || n, 'user-' || (1 + n % 20000), 'key ' || n, 'pfx-' || n, 'keyhash-' || n, 'api', n \
         FROM {series}",
    ),
    (
        "audit_log",
        "INSERT INTO audit_log (id, at, actor_type, actor_id, action, outcome, details, prev_hash, hash) \
         SELECT 'audit-' || n, n, 'user', 'user-' || (1 + n % 5000), \
           CASE WHEN n % 10 < 6 THEN 'auth.login' WHEN n % 10 < 9 THEN 'auth.refresh' \
             ELSE 'action-' || (n / 10 % 50) END, \
           'success', '{}', 'h', 'h' FROM {series}",
    ),
    (
        "conversations",
        "INSERT INTO conversations (id, title, owner_id, last_seq, created_at, updated_at) \
         SELECT 'conv-' || n, 't', 'user-' || n, 1000, n, n FROM {series}",
    ),
    (
        "conversation_members",
        "INSERT INTO conversation_members (conversation_id, user_id, ack_seq, joined_at) \
         SELECT 'conv-' || (1 + n / 50), 'user-' || n, 0, n FROM {series}",
    ),
    (
        // Its events first (the deliveries' foreign key): one delivery per event, 50,000
        // connections, 20,000 owners.
        "webhook_deliveries",
        "INSERT INTO webhook_events (id, provider, event_id, event_type, payload, owners, received_at) \
         SELECT 'whe-' || n, 'provider-' || (n % 40), 'evt-' || n, 'type', '{}', 1, n FROM {series}; \
         INSERT INTO webhook_deliveries (event_seq, connection_id, user_id, published_at, created_at) \
         SELECT n, 'conn-' || (1 + n % 50000), 'user-' || (1 + n % 20000), n, n FROM {series}",
    ),
    (
        "messages",
        "INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body, created_at) \
         SELECT 'msg-' || n, 'conv-' || (1 + n % 100), n / 100, 'user-' || (1 + n % 1000), 'cmid-' || n, 'x', n \
         FROM {series}",
    ),
];

fn seed_sql(table: &str, series: &str, rows: i64) -> String {
    let (_, sql) = SEEDS
        .iter()
        .find(|(t, _)| *t == table)
        .unwrap_or_else(|| panic!("hot table {table} has no seed: add one to SEEDS in tests/it/query_plans.rs"));
    sql.replace("{series}", series).replace("{rows}", &rows.to_string())
}

fn hot_tables() -> Vec<&'static str> {
    let mut tables: Vec<&str> = HOT_QUERIES.iter().map(|q| q.table).collect();
    // Parents first, for the foreign keys.
    tables.sort_by_key(|t| (*t != "users", *t != "conversations", *t));
    tables.dedup();
    tables
}

async fn migrated(test_db: &TestDb) -> Db {
    let config = test_config(test_db, &[]);
    let db = Db::connect(&config.database_target().expect("target"), &config.database).await.expect("connects");
    db.migrate().await.expect("migrates");
    db
}

#[tokio::test]
async fn hot_queries_use_their_index_on_postgres_with_100k_rows_per_table() {
    let started = Instant::now();
    let test_db = TestDb::postgres().await;
    migrated(&test_db).await.close().await;
    let mut conn = connect_pg(&test_db.pg.as_ref().expect("PostgreSQL").url).await;
    let migrated_at = started.elapsed();

    let series = format!("generate_series(1, {PG_ROWS}) AS s(n)");
    for table in hot_tables() {
        let sql = seed_sql(table, &series, PG_ROWS);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("seed {table}: {e}"));
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert!(count >= PG_ROWS, "{table} has {count} rows");
    }
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await.expect("analyze");
    let seeded_at = started.elapsed();

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (i, q) in HOT_QUERIES.iter().enumerate() {
        // Typed as sqlx binds them: PostgreSQL cannot infer `$2` from `$2 IS NULL`.
        let types: Vec<&str> = q.sample_params.iter().map(pg_type).collect();
        let types = if types.is_empty() { String::new() } else { format!(" ({})", types.join(", ")) };
        let prepare = format!("PREPARE hot_{i}{types} AS {}", q.sql);
        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.name));
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let plan = pg_explain(&mut conn, i, q, mode).await;
            let verdict = pg_verdict(q, &plan);
            report.push(format!(
                "{:<24} {:<18} {}",
                q.name,
                mode,
                verdict.as_ref().map_or_else(|e| e.clone(), |ok| ok.clone())
            ));
            if let Err(why) = verdict {
                failures.push(format!("{} ({mode}): {why}\n{plan:#}", q.name));
            }
        }
    }
    println!(
        "PostgreSQL plans ({PG_ROWS} rows per table; migrate {migrated_at:?}, seed+analyze {:?}, explain {:?}):\n  {}",
        seeded_at - migrated_at,
        started.elapsed() - seeded_at,
        report.join("\n  ")
    );
    let _ = conn.close().await;
    assert!(failures.is_empty(), "hot queries without their index:\n{}", failures.join("\n\n"));
}

async fn pg_explain(conn: &mut sqlx::PgConnection, i: usize, q: &HotQuery, mode: &str) -> Value {
    let args: Vec<String> = q.sample_params.iter().map(pg_literal).collect();
    let execute = if args.is_empty() { format!("hot_{i}") } else { format!("hot_{i}({})", args.join(", ")) };
    let sql = format!("SET plan_cache_mode = {mode}; EXPLAIN (FORMAT JSON) EXECUTE {execute}");
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", q.name));
    let text: String =
        rows.first().and_then(|r| r.try_get_unchecked(0).ok()).unwrap_or_else(|| panic!("{}: no plan", q.name));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: plan is not JSON: {e}", q.name))
}

fn pg_literal(sample: &Sample) -> String {
    match sample {
        Sample::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Sample::Int(n) => n.to_string(),
        Sample::NullText | Sample::NullInt => "NULL".to_owned(),
    }
}

fn pg_type(sample: &Sample) -> &'static str {
    match sample {
        Sample::Text(_) | Sample::NullText => "text",
        Sample::Int(_) | Sample::NullInt => "bigint",
    }
}

/// Ok with the access path, or why the plan fails its query.
fn pg_verdict(q: &HotQuery, plan: &Value) -> Result<String, String> {
    let index = match q.index {
        Index::PrimaryKey | Index::PrimaryKeyOrder => format!("{}_pkey", q.table),
        Index::Named(name) => name.to_owned(),
    };
    let mut nodes = Vec::new();
    collect_nodes(&plan[0]["Plan"], &mut nodes);
    if let Some(scan) = nodes.iter().find(|n| n["Node Type"] == "Seq Scan" && n["Relation Name"] == q.table) {
        return Err(format!("Seq Scan on {} (estimated {} rows)", q.table, scan["Plan Rows"]));
    }
    let by_index = nodes.iter().find(|n| {
        matches!(n["Node Type"].as_str(), Some("Index Scan" | "Index Only Scan" | "Bitmap Index Scan"))
            && n["Index Name"] == index.as_str()
    });
    match by_index {
        Some(n) => Ok(format!("{} using {index}", n["Node Type"].as_str().unwrap_or("?"))),
        None => {
            let used: Vec<String> = nodes.iter().map(|n| format!("{} {}", n["Node Type"], n["Index Name"])).collect();
            Err(format!("does not use {index}: {}", used.join(", ")))
        }
    }
}

fn collect_nodes<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    if node.is_null() {
        return;
    }
    out.push(node);
    for child in node["Plans"].as_array().into_iter().flatten() {
        collect_nodes(child, out);
    }
}

#[tokio::test]
async fn hot_queries_use_their_index_on_sqlite() {
    let test_db = TestDb::sqlite();
    let db = migrated(&test_db).await;
    let Db::Sqlite(pool) = &db else { unreachable!("a TestDb without PostgreSQL is SQLite") };
    let series = format!(
        "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {SQLITE_ROWS}) SELECT n FROM s) AS s"
    );
    for table in hot_tables() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(seed_sql(table, &series, SQLITE_ROWS)))
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("seed {table}: {e}"));
    }
    sqlx::raw_sql("ANALYZE").execute(pool).await.expect("analyze");

    let mut failures = Vec::new();
    let mut report = Vec::new();
    for q in HOT_QUERIES {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", q.sql)));
        for sample in q.sample_params {
            query = match sample {
                Sample::Text(s) => query.bind(*s),
                Sample::Int(n) => query.bind(*n),
                Sample::NullText => query.bind(None::<String>),
                Sample::NullInt => query.bind(None::<i64>),
            };
        }
        let rows = query.fetch_all(pool).await.unwrap_or_else(|e| panic!("{}: {e}", q.name));
        let details: Vec<String> = rows.iter().filter_map(|r| r.try_get::<String, _>("detail").ok()).collect();
        let verdict = sqlite_verdict(q, &details);
        report.push(format!("{:<24} {}", q.name, details.join(" / ")));
        if let Err(why) = verdict {
            failures.push(format!("{}: {why}: {details:?}", q.name));
        }
    }
    println!("SQLite plans ({SQLITE_ROWS} rows per table):\n  {}", report.join("\n  "));
    db.close().await;
    assert!(failures.is_empty(), "hot queries without their index:\n{}", failures.join("\n"));
}

fn sqlite_verdict(q: &HotQuery, details: &[String]) -> Result<(), String> {
    let table = q.table;
    let on_table: Vec<&String> = details
        .iter()
        .filter(|d| d.starts_with(&format!("SEARCH {table} ")) || d.starts_with(&format!("SCAN {table}")))
        .collect();
    let accepted: Vec<String> = match q.index {
        Index::PrimaryKey => {
            vec!["USING INTEGER PRIMARY KEY".to_owned(), format!("USING INDEX sqlite_autoindex_{table}_")]
        }
        Index::Named(name) => vec![format!("USING INDEX {name} "), format!("USING COVERING INDEX {name} ")],
        // The rowid table itself, walked in order: a SCAN that needs no sort stops at the LIMIT.
        Index::PrimaryKeyOrder => {
            let sorted = details.iter().any(|d| d.contains("TEMP B-TREE"));
            return if on_table.iter().any(|d| d.as_str() == format!("SCAN {table}")) && !sorted {
                Ok(())
            } else {
                Err("does not walk the rowid table in order".to_owned())
            };
        }
    };
    if let Some(scan) = on_table.iter().find(|d| d.starts_with("SCAN ")) {
        return Err(format!("scans the table: {scan}"));
    }
    if on_table.iter().any(|d| accepted.iter().any(|a| format!("{d} ").contains(a.as_str()))) {
        Ok(())
    } else {
        Err(format!("does not search by {accepted:?}"))
    }
}
