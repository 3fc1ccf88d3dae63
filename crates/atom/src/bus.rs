//! The event bus: events addressed to a user, published by one module and received by the
//! subscribers of every node.
//!
//! [`Bus::Local`] (the default) delivers within this process. [`Bus::Redis`] (with
//! `ATOM_REDIS_URL`) delivers here at once and publishes on one Redis pub/sub channel,
//! `<prefix>:bus`; every node subscribes to it and passes on what other nodes published. The
//! subscription is re-made whenever Redis drops it, with a back-off of up to
//! [`MAX_BACKOFF`].
//!
//! Invariants:
//! - A publisher never waits on a failing Redis for longer than the Redis command timeout, and
//!   its own node always receives the event: local delivery does not depend on Redis.
//! - A node receives each event once: events carry the id of the bus that published them, and
//!   a node drops its own when they come back from Redis.
//! - Delivery is at most once. Events published while a node's subscription is down (Redis
//!   unreachable) do not reach that node; [`Bus::publish`] logs and counts a failed publish in
//!   `bus_publish_errors_total`. Subscribers that must not miss state (sockets of a disabled
//!   account) also re-check it when a client next authenticates.
//! - Events hold ids, never credentials: they travel through Redis.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::sync::broadcast;

use crate::config::Config;

/// Events buffered per subscriber; one that falls further behind loses the oldest.
const CAPACITY: usize = 1024;
/// The longest wait between two attempts to subscribe to a Redis that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a publish may wait on Redis.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// An event for one user's live connections.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub user_id: String,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The account was disabled: none of its credentials is accepted any more.
    AccountDisabled,
    /// Every session (access and refresh tokens) of the account ended, as a password change
    /// does; its API keys stay valid.
    SessionsRevoked,
    /// One session ended (logout, or a stolen refresh token seen): the access tokens that
    /// carry its `sid`.
    SessionRevoked { session_id: String },
    /// One API key was revoked.
    ApiKeyRevoked { key_id: String },
    /// A notification for the user's live connections, delivered to them as the Socket.io
    /// event `notification` `{type, data}` (e.g. a connection needing re-authorisation, a
    /// webhook received). `data` holds ids, never secrets: it travels through Redis.
    Notification { notification_type: String, data: serde_json::Value },
    /// A message was stored (`user_id` is its sender): every node delivers it to its own
    /// sockets in the conversation's room, in order ([`crate::conversations::delivery`]).
    MessageStored { message: crate::conversations::Message },
    /// A conversation's membership changed (`user_id` is the member added or removed).
    ConversationChanged { conversation_id: String, change: crate::conversations::Change },
}

/// An event on the wire: the event and the bus that published it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Envelope {
    origin: String,
    event: Event,
}

/// The bus, by backend. Cheap to clone: clones share the channel and the subscription.
#[derive(Debug, Clone)]
pub enum Bus {
    Local(LocalBus),
    Redis(RedisBus),
}

impl Bus {
    /// Redis when `redis.url` is set, otherwise in process. Within a Tokio runtime: the Redis
    /// backend starts its subscription task, which ends when the last clone is dropped.
    pub fn from_config(config: &Config) -> Result<Self, redis::RedisError> {
        match &config.redis.url {
            Some(url) => {
                let client = redis::Client::open(url.expose_secret())?;
                let channel = format!("{}:bus", config.redis.key_prefix);
                let timeout = Duration::from_millis(config.http.ready_check_timeout_ms).max(PUBLISH_TIMEOUT);
                Ok(Self::Redis(RedisBus::start(client, channel, timeout)))
            }
            None => Ok(Self::Local(LocalBus::new())),
        }
    }

    /// Receives every event published from now on, on any node this bus reaches.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local().sender.subscribe()
    }

    /// Delivers `event` to this node's subscribers and, with Redis, to every other node's.
    /// Never fails: a Redis failure is logged and counted.
    pub async fn publish(&self, event: Event) {
        // No subscriber is fine: nothing on this node listens for that.
        let _ = self.local().sender.send(event.clone());
        if let Self::Redis(redis) = self {
            redis.publish(event).await;
        }
    }

    fn local(&self) -> &LocalBus {
        match self {
            Self::Local(local) => local,
            Self::Redis(redis) => &redis.local,
        }
    }
}

/// The in-process bus: a broadcast channel.
#[derive(Debug, Clone)]
pub struct LocalBus {
    sender: broadcast::Sender<Event>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self { sender: broadcast::channel(CAPACITY).0 }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        Self::new()
    }
}

/// The bus over Redis pub/sub.
#[derive(Clone)]
pub struct RedisBus {
    local: LocalBus,
    inner: Arc<RedisInner>,
}

struct RedisInner {
    client: redis::Client,
    channel: String,
    /// Random per bus, so that a node recognises its own events.
    origin: String,
    timeout: Duration,
    publisher: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    subscription: tokio::task::AbortHandle,
}

impl Drop for RedisInner {
    fn drop(&mut self) {
        self.subscription.abort();
    }
}

impl std::fmt::Debug for RedisBus {
    // Not the client: its connection info holds the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").field("channel", &self.inner.channel).finish_non_exhaustive()
    }
}

impl RedisBus {
    fn start(client: redis::Client, channel: String, timeout: Duration) -> Self {
        let local = LocalBus::new();
        let origin = uuid::Uuid::new_v4().to_string();
        let task =
            tokio::spawn(subscribe_forever(client.clone(), channel.clone(), origin.clone(), local.sender.downgrade()));
        let inner = RedisInner {
            client,
            channel,
            origin,
            timeout,
            publisher: tokio::sync::Mutex::new(None),
            subscription: task.abort_handle(),
        };
        Self { local, inner: Arc::new(inner) }
    }

    async fn publish(&self, event: Event) {
        let inner = &self.inner;
        let payload = match serde_json::to_string(&Envelope { origin: inner.origin.clone(), event }) {
            Ok(payload) => payload,
            Err(e) => return tracing::error!(error = %e, "bus: event not serializable"),
        };
        let sent = tokio::time::timeout(inner.timeout, async {
            let mut slot = inner.publisher.lock().await;
            let connection = match slot.as_mut() {
                Some(connection) => connection,
                None => slot.insert(inner.client.get_multiplexed_async_connection().await?),
            };
            let result: redis::RedisResult<i64> =
                redis::cmd("PUBLISH").arg(&inner.channel).arg(&payload).query_async(connection).await;
            if result.is_err() {
                // Made again on the next publish.
                *slot = None;
            }
            result.map(drop)
        })
        .await;
        let error = match sent {
            Ok(Ok(())) => return,
            Ok(Err(e)) => crate::error::ErrorChain(&e).to_string(),
            Err(_) => "timed out".to_owned(),
        };
        metrics::counter!("bus_publish_errors_total").increment(1);
        tracing::warn!(error, "bus: an event reached this node only (Redis publish failed)");
    }
}

/// Subscribes to `channel` and passes other nodes' events on to `local`, re-subscribing
/// after every failure, until the bus is gone.
async fn subscribe_forever(
    client: redis::Client,
    channel: String,
    origin: String,
    local: broadcast::WeakSender<Event>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Bounded: a Redis that does not answer at all would otherwise hold this attempt for
        // the operating system's connect timeout.
        let connected = tokio::time::timeout(MAX_BACKOFF, client.get_async_pubsub())
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        match connected {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    tracing::debug!(channel, "bus: subscribed");
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Some(sender) = local.upgrade() else { return };
                        deliver(&sender, &origin, message.get_payload_bytes());
                    }
                    tracing::warn!(channel, "bus: the Redis subscription ended; subscribing again");
                }
                Err(e) => tracing::warn!(error = %crate::error::ErrorChain(&e), "bus: could not subscribe"),
            },
            Err(e) => tracing::warn!(error = %crate::error::ErrorChain(&e), "bus: could not connect to Redis"),
        }
        if local.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Passes an event published by another node to this node's subscribers.
fn deliver(local: &broadcast::Sender<Event>, origin: &str, payload: &[u8]) {
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(envelope) if envelope.origin == origin => {}
        Ok(envelope) => {
            let _ = local.send(envelope.event);
        }
        // A node of another version may publish kinds this one does not know.
        Err(e) => tracing::debug!(error = %e, "bus: undecodable event ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disabled(user: &str) -> Event {
        Event { user_id: user.to_owned(), kind: EventKind::AccountDisabled }
    }

    #[tokio::test]
    async fn a_local_event_reaches_every_subscriber_once() {
        let bus = Bus::Local(LocalBus::new());
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        bus.publish(disabled("u1")).await;
        assert_eq!(a.recv().await.ok(), Some(disabled("u1")));
        assert_eq!(b.recv().await.ok(), Some(disabled("u1")));
        assert!(a.try_recv().is_err(), "once");
    }

    #[test]
    fn a_node_drops_its_own_events_and_undecodable_ones() {
        let local = LocalBus::new();
        let mut receiver = local.sender.subscribe();
        let wire = |origin: &str| {
            serde_json::to_vec(&Envelope { origin: origin.to_owned(), event: disabled("u1") }).expect("json")
        };
        deliver(&local.sender, "me", &wire("me"));
        deliver(&local.sender, "me", b"{\"origin\":\"other\",\"event\":{\"type\":\"unknown\"}}");
        assert!(receiver.try_recv().is_err(), "nothing delivered");
        deliver(&local.sender, "me", &wire("other"));
        assert_eq!(receiver.try_recv().ok(), Some(disabled("u1")));
    }

    #[test]
    fn events_have_a_stable_wire_form() {
        let event = Event { user_id: "u1".to_owned(), kind: EventKind::SessionRevoked { session_id: "s1".to_owned() } };
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(
            json,
            serde_json::json!({ "user_id": "u1", "kind": { "type": "session_revoked", "session_id": "s1" } })
        );
    }
}
