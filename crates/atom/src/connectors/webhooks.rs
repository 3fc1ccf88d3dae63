//! Incoming webhooks: verify, store, route, publish.
//!
//! A request to `/v1/webhooks/{provider}[/{connection_id}]` is verified with the scheme the
//! provider's template names ([`super::webhook_schemes`]) and the provider's signing secret
//! ([`super::apps::webhook_secret`]), over the raw body. Then, in one transaction, its owning
//! connections are found by the template's route rule (or the URL's connection) and locked,
//! the event is stored once per provider event id, and one delivery per owner is queued.
//! Only after the commit does the provider get its 2xx; the deliveries are then published on
//! the bus to each owner (`notification` `webhook.received`).
//!
//! Invariants:
//! - Nothing is stored for a request that fails verification; it is answered 401, counted
//!   and audited (no secret, no body in the audit row).
//! - An event id already stored (a replay, or the provider's own retry of an event whose
//!   answer it lost) stores and publishes nothing more; it is answered 200 `duplicate`, so
//!   that a provider does not retry for days an event that is safe here.
//! - A stored event reaches each owner at least once, in order per connection: deliveries
//!   are published by `seq` under a lock on the connection's pending rows, and marked only
//!   after; a publish lost to a crash is made by the background pass ([`spawn_worker`]).
//! - An event no connection owns is kept (`owners = 0`) and counted, never dropped.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::service::Connectors;
use super::template::{WebhookScheme, Webhooks};
use super::webhook_schemes::{self, Rejection, RequestHeaders};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::{Event, EventKind};
use crate::error::ApiError;
use crate::storage::webhooks::{self as sql, DeliveryRow, NewEvent};
use crate::storage::{Db, Tx, now_ms};
use crate::wire::rfc3339;

/// The `type` of the notification an owner's sockets get for each event.
pub const RECEIVED: &str = "webhook.received";
/// How often the background pass looks for deliveries left unpublished.
const REPUBLISH_EVERY: Duration = Duration::from_secs(5);
/// How old an unpublished delivery must be before the background pass takes it over from
/// the request that stored it.
const REPUBLISH_AFTER_MS: i64 = 5_000;
/// How often retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Deliveries published per connection per transaction.
const PUBLISH_BATCH: i64 = 500;
/// The longest event id or type kept as sent; a longer id is replaced by its digest.
const MAX_ID_LEN: usize = 200;

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 404: the provider is not in the catalog, or its template receives no webhooks.
    #[error("this provider's webhooks are not received here")]
    NotReceived,
    /// 409: no signing secret is set for the provider, so nothing can be verified.
    #[error("no webhook signing secret is set for this provider")]
    NotConfigured,
    /// 401: the signature, its headers or its timestamp do not hold.
    #[error("the webhook was refused: {}", .0.verdict())]
    Rejected(Rejection),
    /// 400: verified, but not a body this server can keep (not UTF-8).
    #[error("{0}")]
    InvalidBody(&'static str),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(ApiError::from(e))
    }
}

/// What a verified request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Slack's URL verification: answer with the challenge; nothing is stored.
    Challenge(String),
    /// Stored (and published to its owners).
    Stored { id: String, event_id: String, owners: usize },
    /// Its event id was stored already: nothing more is stored or published.
    Duplicate { event_id: String },
}

/// A request as received.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub provider: &'a str,
    /// From the per-connection URL.
    pub connection_id: Option<&'a str>,
    pub headers: &'a RequestHeaders,
    pub body: &'a [u8],
}

fn count(provider: &str, verdict: &'static str) {
    metrics::counter!("connector_webhooks_total", "provider" => provider.to_owned(), "verdict" => verdict).increment(1);
}

impl Connectors {
    /// Verifies, stores and publishes one webhook request, as the module says.
    pub async fn receive_webhook(
        &self,
        webhooks: &Webhooks,
        incoming: &Incoming<'_>,
        context: &RequestContext,
    ) -> Result<Received, WebhookError> {
        let provider = incoming.provider;
        if webhooks.scheme == WebhookScheme::None {
            return Err(WebhookError::NotReceived);
        }
        let Some(secret) = super::apps::webhook_secret(self.db(), &self.keyring(), self.settings(), provider).await?
        else {
            count(provider, "not_configured");
            return Err(WebhookError::NotConfigured);
        };
        let now = now_ms();
        let verified =
            match webhook_schemes::verify(webhooks, incoming.headers, incoming.body, &secret, now.div_euclid(1000)) {
                Ok(verified) => verified,
                Err(rejection) => {
                    count(provider, rejection.verdict());
                    let event = AuditEvent::new(Actor::Anonymous, "webhook.rejected", Outcome::Denied, context)
                        .target(incoming.connection_id.unwrap_or(provider).to_owned())
                        .details(serde_json::json!({
                            "provider": provider,
                            "connection_id": incoming.connection_id,
                            "reason": rejection.verdict(),
                        }));
                    audit::record_alone(self.db(), event).await?;
                    return Err(WebhookError::Rejected(rejection));
                }
            };
        let payload =
            std::str::from_utf8(incoming.body).map_err(|_| WebhookError::InvalidBody("the body is not UTF-8"))?;
        let json: Option<serde_json::Value> = serde_json::from_str(payload).ok();
        if webhooks.scheme == WebhookScheme::SlackV0
            && let Some(json) = &json
            && json["type"] == "url_verification"
        {
            count(provider, "challenge");
            return Ok(Received::Challenge(json["challenge"].as_str().unwrap_or_default().to_owned()));
        }

        let event_id = event_id(webhooks, incoming, json.as_ref(), verified.signed_id.as_deref(), verified.timestamp);
        let event_type = value_at(
            webhooks.type_header.as_deref(),
            webhooks.type_pointer.as_deref(),
            incoming.headers,
            json.as_ref(),
        )
        .map(|t| t.chars().take(MAX_ID_LEN).collect::<String>());
        let mut tx = self.db().begin().await?;
        let owners = match incoming.connection_id {
            Some(id) => sql::owner_by_id(&mut tx, provider, id).await?.into_iter().collect(),
            None => match route_value(webhooks, incoming.headers, json.as_ref()) {
                Some((param, value)) => sql::owners(&mut tx, provider, param, &value).await?,
                None => Vec::new(),
            },
        };
        let id = uuid::Uuid::new_v4().to_string();
        let row = NewEvent {
            id: id.clone(),
            provider: provider.to_owned(),
            event_id: event_id.clone(),
            event_type,
            payload: payload.to_owned(),
            owners: i64::try_from(owners.len()).unwrap_or(i64::MAX),
            received_at: now,
        };
        let Some(seq) = sql::insert_event(&mut tx, &row).await? else {
            drop(tx);
            count(provider, "replay");
            return Ok(Received::Duplicate { event_id });
        };
        for (connection_id, user_id) in &owners {
            sql::insert_delivery(&mut tx, seq, connection_id, user_id, now).await?;
        }
        tx.commit().await?;
        count(provider, if owners.is_empty() { "unrouted" } else { "accepted" });
        if owners.is_empty() {
            tracing::info!(provider, event_id, "webhook: an event no connection owns was kept");
        }
        for (connection_id, _) in &owners {
            // Stored is what the provider needs to hear; a publish that fails here is made
            // by the background pass.
            if let Err(e) = self.publish_pending(connection_id).await {
                tracing::warn!(provider, connection_id, error = %crate::error::ErrorChain(&e),
                    "webhook: publish deferred to the background pass");
            }
        }
        Ok(Received::Stored { id, event_id, owners: owners.len() })
    }

    /// Publishes connection `connection_id`'s unpublished deliveries in order, each marked
    /// after its publish; how many.
    ///
    /// One publisher per connection at a time: in this process by a lock per connection; on
    /// PostgreSQL also across nodes, the pending rows staying locked (`FOR UPDATE`) until
    /// their marks commit. On SQLite (one node) the rows are read and marked in short
    /// transactions of their own, so that a slow bus (Redis not answering) never holds the
    /// database's single write lock.
    pub async fn publish_pending(&self, connection_id: &str) -> Result<usize, sqlx::Error> {
        let lock = {
            let mut locks = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(connection_id.to_owned()).or_default())
        };
        let result = {
            let _held = lock.lock().await;
            self.publish_pending_locked(connection_id).await
        };
        drop(lock);
        let mut locks = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map's own reference left: nobody waits on it.
        if locks.get(connection_id).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(connection_id);
        }
        result
    }

    async fn publish_pending_locked(&self, connection_id: &str) -> Result<usize, sqlx::Error> {
        let mut total = 0;
        loop {
            let mut tx = self.db().begin().await?;
            let pending = sql::pending_for_connection(&mut tx, connection_id, PUBLISH_BATCH).await?;
            if pending.is_empty() {
                return Ok(total);
            }
            let sqlite = matches!(tx, Tx::Sqlite(_));
            if sqlite {
                // The read ends here; this process's lock keeps the order while publishing,
                // and the marks take the write lock only afterwards.
                tx.commit().await?;
                for delivery in &pending {
                    self.bus().publish(notification(delivery)).await;
                }
                tx = self.db().begin().await?;
            }
            let now = now_ms();
            for delivery in &pending {
                if !sqlite {
                    self.bus().publish(notification(delivery)).await;
                }
                sql::mark_published(&mut tx, delivery.seq, now).await?;
            }
            tx.commit().await?;
            total += pending.len();
            if pending.len() < PUBLISH_BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// One background pass: deliveries a stopped node stored but did not publish.
    pub async fn republish_stale(&self) -> Result<usize, sqlx::Error> {
        let connections = sql::connections_with_stale_pending(self.db(), now_ms() - REPUBLISH_AFTER_MS, 100).await?;
        let mut total = 0;
        for connection_id in connections {
            total += self.publish_pending(&connection_id).await?;
        }
        Ok(total)
    }
}

/// The notification of one delivery: ids and names only (it travels through Redis); the
/// payload is read from `GET /v1/webhooks/events`.
fn notification(d: &DeliveryRow) -> Event {
    Event {
        user_id: d.user_id.clone(),
        kind: EventKind::Notification {
            notification_type: RECEIVED.to_owned(),
            data: serde_json::json!({
                "connection_id": d.connection_id,
                "provider": d.provider,
                "event_id": d.event_id,
                "id": d.id,
                "event_type": d.event_type,
                "seq": d.seq,
                "received_at": rfc3339(d.received_at),
            }),
        },
    }
}

/// The text at `header`, else at `pointer` of the JSON body (a number as its decimal text).
fn value_at(
    header: Option<&str>,
    pointer: Option<&str>,
    headers: &RequestHeaders,
    json: Option<&serde_json::Value>,
) -> Option<String> {
    if let Some(value) = header.and_then(|h| headers.get(h)).map(str::trim).filter(|v| !v.is_empty()) {
        return Some(value.to_owned());
    }
    match json?.pointer(pointer?)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The replay key: the template's id header or pointer, the id the scheme signs, or else a
/// digest of what was signed (the timestamp with the body).
fn event_id(
    webhooks: &Webhooks,
    incoming: &Incoming<'_>,
    json: Option<&serde_json::Value>,
    signed_id: Option<&str>,
    timestamp: Option<i64>,
) -> String {
    let given = value_at(webhooks.id_header.as_deref(), webhooks.id_pointer.as_deref(), incoming.headers, json)
        .or_else(|| signed_id.map(str::to_owned));
    match given {
        Some(id) if id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control) => id,
        other => {
            let mut digest = Sha256::new();
            if let Some(id) = other {
                digest.update(id.as_bytes());
            } else {
                digest.update(timestamp.unwrap_or_default().to_string().as_bytes());
                digest.update(b".");
                digest.update(incoming.body);
            }
            format!("sha256:{:x}", digest.finalize())
        }
    }
}

/// `(param, value)` of the template's route rule, when the event carries the value.
fn route_value<'w>(
    webhooks: &'w Webhooks,
    headers: &RequestHeaders,
    json: Option<&serde_json::Value>,
) -> Option<(&'w str, String)> {
    let route = webhooks.route.as_ref()?;
    let value = value_at(route.header.as_deref(), route.pointer.as_deref(), headers, json)?;
    let value = match &route.strip_suffix {
        Some(suffix) => value.strip_suffix(suffix.as_str()).map(str::to_owned).unwrap_or(value),
        None => value,
    };
    Some((route.param.as_str(), value))
}

/// A received event as its owner sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookEventView {
    /// The stored event's id.
    pub id: String,
    pub provider: String,
    /// The provider's id of the event (the replay key).
    pub event_id: String,
    pub event_type: Option<String>,
    pub connection_id: String,
    /// The body as the provider sent it: JSON when it is JSON, else the text.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub received_at: String,
    /// Whether it has been published to the owner's live connections.
    pub published: bool,
}

impl From<&DeliveryRow> for WebhookEventView {
    fn from(d: &DeliveryRow) -> Self {
        Self {
            id: d.id.clone(),
            provider: d.provider.clone(),
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            connection_id: d.connection_id.clone(),
            payload: serde_json::from_str(&d.payload).unwrap_or_else(|_| serde_json::Value::String(d.payload.clone())),
            received_at: rfc3339(d.received_at),
            published: d.published_at.is_some(),
        }
    }
}

/// Deletes every event received before `cutoff` (ms), a batch at a time; how many.
pub async fn purge(db: &Db, cutoff: i64) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 1000;
    let mut total = 0;
    loop {
        let deleted = sql::delete_events_before(db, cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Starts the background pass (unpublished deliveries every few seconds, retention every
/// hour when `connectors.webhook_retention_days` is set); the task ends when aborted.
pub fn spawn_worker(connectors: Arc<Connectors>) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let keep_ms = i64::from(connectors.settings().webhook_retention_days) * 86_400_000;
        let mut republish = tokio::time::interval(REPUBLISH_EVERY);
        let mut purge_tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tokio::select! {
                _ = republish.tick() => match connectors.republish_stale().await {
                    Ok(0) => {}
                    Ok(published) => tracing::info!(published, "webhooks: deliveries left unpublished were published"),
                    Err(e) => tracing::warn!(error = %crate::error::ErrorChain(&e), "webhooks: republish pass failed"),
                },
                _ = purge_tick.tick(), if keep_ms > 0 => match purge(connectors.db(), now_ms() - keep_ms).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "webhooks: events past retention deleted"),
                    Err(e) => tracing::warn!(error = %crate::error::ErrorChain(&e), "webhooks: retention sweep failed"),
                },
            }
        }
    })
    .abort_handle()
}
