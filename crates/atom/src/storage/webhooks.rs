//! SQL of incoming webhooks: each provider's signing secret (`provider_webhook_secrets`,
//! encrypted), the verified events (`webhook_events`, unique per provider event id) and their
//! deliveries to owning connections (`webhook_deliveries`, the outbox).
//!
//! Ordering per connection rests on two locks: the transaction that stores an event locks
//! the owning connections' rows first ([`owners`], `FOR UPDATE` on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` serialises every writer), so a connection's deliveries commit in `seq`
//! order; and on PostgreSQL the publisher locks a connection's pending deliveries
//! ([`pending_for_connection`]) until it has published and marked them, so two nodes never
//! publish one connection's events out of order (on SQLite, one node, a lock per connection
//! in the process does, so that the bus is never waited on under the write lock).

use super::monitor::timed;
use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub provider: String,
    /// Encrypted.
    pub secret: String,
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub provider: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub payload: String,
    pub owners: i64,
    pub received_at: i64,
}

/// An event as delivered to one connection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    /// The delivery's sequence number: the order per connection, and the listing's cursor.
    pub seq: i64,
    /// The stored event's id.
    pub id: String,
    pub provider: String,
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: String,
    pub user_id: String,
    pub payload: String,
    pub received_at: i64,
    pub published_at: Option<i64>,
}

macro_rules! delivery_columns {
    () => {
        "webhook_deliveries.seq, webhook_events.id, webhook_events.provider, webhook_events.event_id, \
         webhook_events.event_type, webhook_deliveries.connection_id, webhook_deliveries.user_id, \
         webhook_events.payload, webhook_events.received_at, webhook_deliveries.published_at \
         FROM webhook_deliveries JOIN webhook_events ON webhook_events.seq = webhook_deliveries.event_seq"
    };
}

/// Hot: `GET /v1/webhooks/events`, a user's events newest first from the cursor.
pub const LIST_FOR_USER_SQL: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " WHERE webhook_deliveries.user_id = $1 AND webhook_deliveries.seq < $2 ORDER BY webhook_deliveries.seq DESC LIMIT $3"
);
/// Hot: a connection's events (its history), newest first.
pub const LIST_FOR_CONNECTION_SQL: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " WHERE webhook_deliveries.connection_id = $1 AND webhook_deliveries.seq < $2 ORDER BY webhook_deliveries.seq DESC LIMIT $3"
);
const PENDING_SQL: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " WHERE webhook_deliveries.connection_id = $1 AND webhook_deliveries.published_at IS NULL ORDER BY webhook_deliveries.seq LIMIT $2"
);
/// Hot: every received event, the replay check and the store in one statement.
pub const INSERT_EVENT_SQL: &str = "INSERT INTO webhook_events \
     (id, provider, event_id, event_type, payload, owners, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (provider, event_id) DO NOTHING RETURNING seq";

// ---- signing secrets ----

pub async fn secret(db: &Db, provider: &str) -> Result<Option<SecretRow>, sqlx::Error> {
    with_pool!(db, "provider_webhook_secrets.by_provider", |conn| {
        sqlx::query_as("SELECT provider, secret FROM provider_webhook_secrets WHERE provider = $1")
            .bind(provider)
            .fetch_optional(conn)
            .await
    })
}

pub async fn upsert_secret(tx: &mut Tx, provider: &str, sealed: &str, now: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, "provider_webhook_secrets.upsert", |conn| {
        sqlx::query(
            "INSERT INTO provider_webhook_secrets (provider, secret, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (provider) DO UPDATE SET secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(provider)
        .bind(sealed)
        .bind(now)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn delete_secret(tx: &mut Tx, provider: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, "provider_webhook_secrets.delete", |conn| {
        sqlx::query("DELETE FROM provider_webhook_secrets WHERE provider = $1")
            .bind(provider)
            .execute(conn)
            .await
            .map(drop)
    })
}

// ---- receiving ----

/// `(connection id, user id)` of `provider`'s connections whose parameter or kept value
/// `param` is `value`, locked for this transaction (PostgreSQL), in id order so that two
/// events of the same owners never wait on each other crosswise.
///
/// The one place that says where routing values live: the connection's `params` JSON, which
/// holds its parameters and the values kept from the flow.
pub async fn owners(
    tx: &mut Tx,
    provider: &str,
    param: &str,
    value: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    const SQLITE: &str = "SELECT id, user_id FROM connections WHERE provider = $1 \
                          AND CAST(json_extract(params, '$.' || $2) AS TEXT) = $3 ORDER BY id";
    // `->>` gives a number's text too, so `installation.id` 42 matches a kept "42".
    const POSTGRES: &str = "SELECT id, user_id FROM connections WHERE provider = $1 \
                            AND (params::jsonb ->> $2::text) = $3 ORDER BY id FOR UPDATE";
    match tx {
        Tx::Sqlite(tx) => {
            timed(
                "connections.webhook_owners",
                sqlx::query_as(SQLITE).bind(provider).bind(param).bind(value).fetch_all(&mut **tx),
            )
            .await
        }
        Tx::Postgres(tx) => {
            timed(
                "connections.webhook_owners",
                sqlx::query_as(POSTGRES).bind(provider).bind(param).bind(value).fetch_all(&mut **tx),
            )
            .await
        }
    }
}

/// The connection `id` of `provider`, locked like [`owners`]: the owner of an event sent to
/// a connection's own URL.
pub async fn owner_by_id(tx: &mut Tx, provider: &str, id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    const SQLITE: &str = "SELECT id, user_id FROM connections WHERE id = $1 AND provider = $2";
    const POSTGRES: &str = "SELECT id, user_id FROM connections WHERE id = $1 AND provider = $2 FOR UPDATE";
    match tx {
        Tx::Sqlite(tx) => {
            timed("connections.webhook_owner", sqlx::query_as(SQLITE).bind(id).bind(provider).fetch_optional(&mut **tx))
                .await
        }
        Tx::Postgres(tx) => {
            timed(
                "connections.webhook_owner",
                sqlx::query_as(POSTGRES).bind(id).bind(provider).fetch_optional(&mut **tx),
            )
            .await
        }
    }
}

/// Stores `event` unless the provider's event id was seen: its `seq`, or `None` for a replay.
pub async fn insert_event(tx: &mut Tx, e: &NewEvent) -> Result<Option<i64>, sqlx::Error> {
    with_tx!(tx, "webhook_events.insert", |conn| {
        sqlx::query_scalar(INSERT_EVENT_SQL)
            .bind(&e.id)
            .bind(&e.provider)
            .bind(&e.event_id)
            .bind(&e.event_type)
            .bind(&e.payload)
            .bind(e.owners)
            .bind(e.received_at)
            .fetch_optional(conn)
            .await
    })
}

pub async fn insert_delivery(
    tx: &mut Tx,
    event_seq: i64,
    connection_id: &str,
    user_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    with_tx!(tx, "webhook_deliveries.insert", |conn| {
        sqlx::query(
            "INSERT INTO webhook_deliveries (event_seq, connection_id, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(event_seq)
        .bind(connection_id)
        .bind(user_id)
        .bind(now)
        .execute(conn)
        .await
        .map(drop)
    })
}

// ---- publishing (the outbox) ----

/// The connection's unpublished deliveries in order, locked (PostgreSQL) until `tx` ends.
pub async fn pending_for_connection(
    tx: &mut Tx,
    connection_id: &str,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    const POSTGRES: &str = concat!(
        "SELECT ",
        delivery_columns!(),
        " WHERE webhook_deliveries.connection_id = $1 AND webhook_deliveries.published_at IS NULL \
         ORDER BY webhook_deliveries.seq LIMIT $2 FOR UPDATE OF webhook_deliveries"
    );
    match tx {
        Tx::Sqlite(tx) => {
            timed(
                "webhook_deliveries.pending",
                sqlx::query_as(PENDING_SQL).bind(connection_id).bind(limit).fetch_all(&mut **tx),
            )
            .await
        }
        Tx::Postgres(tx) => {
            timed(
                "webhook_deliveries.pending",
                sqlx::query_as(POSTGRES).bind(connection_id).bind(limit).fetch_all(&mut **tx),
            )
            .await
        }
    }
}

pub async fn mark_published(tx: &mut Tx, seq: i64, now: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, "webhook_deliveries.mark_published", |conn| {
        sqlx::query("UPDATE webhook_deliveries SET published_at = $2 WHERE seq = $1")
            .bind(seq)
            .bind(now)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Connections with a delivery still unpublished that was stored before `before`: what a
/// node that stopped between commit and publish left behind.
pub async fn connections_with_stale_pending(db: &Db, before: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, "webhook_deliveries.stale_pending", |conn| {
        sqlx::query_scalar(
            "SELECT DISTINCT connection_id FROM webhook_deliveries WHERE published_at IS NULL AND created_at < $1 \
             LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(conn)
        .await
    })
}

// ---- reading ----

pub async fn list_for_user(
    db: &Db,
    user_id: &str,
    before_seq: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    with_pool!(db, "webhook_deliveries.list_for_user", |conn| {
        sqlx::query_as(LIST_FOR_USER_SQL).bind(user_id).bind(before_seq).bind(limit).fetch_all(conn).await
    })
}

pub async fn list_for_connection(
    db: &Db,
    connection_id: &str,
    before_seq: i64,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    with_pool!(db, "webhook_deliveries.list_for_connection", |conn| {
        sqlx::query_as(LIST_FOR_CONNECTION_SQL).bind(connection_id).bind(before_seq).bind(limit).fetch_all(conn).await
    })
}

/// Whether an event of `provider` with the provider's id `event_id` is stored.
pub async fn event_exists(db: &Db, provider: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    with_pool!(db, "webhook_events.exists", |conn| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_events WHERE provider = $1 AND event_id = $2")
            .bind(provider)
            .bind(event_id)
            .fetch_one(conn)
            .await
            .map(|n| n > 0)
    })
}

// ---- retention ----

/// Deletes up to `limit` events received before `cutoff`, with their deliveries; how many.
pub async fn delete_events_before(db: &Db, cutoff: i64, limit: i64) -> Result<u64, sqlx::Error> {
    with_pool!(db, "webhook_events.purge", |conn| {
        sqlx::query(
            "DELETE FROM webhook_events WHERE seq IN \
             (SELECT seq FROM webhook_events WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })
}
