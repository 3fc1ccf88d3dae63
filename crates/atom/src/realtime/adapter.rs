//! Socket.io across nodes: with `redis.url` set, socketioxide-redis's adapter carries room
//! broadcasts, remote joins and leaves, disconnects and socket queries between the nodes,
//! over Redis pub/sub; without it, socketioxide's local adapter keeps everything in process.
//!
//! The adapter talks to Redis through [`PubSub`], our implementation of its `Driver` trait,
//! rather than the crate's stock driver, whose single `MultiplexedConnection` is made once
//! and never re-made: a Redis restart would cut the node off from the others until the node
//! itself restarted, and a Redis down at start-up would leave the namespace unregistered
//! (socketioxide adds a namespace only once its adapter has subscribed). `PubSub` instead:
//!
//! - connects through a redis `ConnectionManager` (RESP3, whose push messages carry the
//!   subscriptions), which reconnects after a failure;
//! - never fails the adapter: a publish while Redis is unreachable is skipped (counted in
//!   `realtime_adapter_errors_total{op}`), so the adapter goes on to deliver on this node,
//!   and the node count falls back to this node alone, so a cross-node query answers at once
//!   with this node's part instead of waiting for nodes it cannot reach;
//! - re-asserts its subscriptions every [`KEEP_EVERY`] (SUBSCRIBE is idempotent), which also
//!   drives the manager's reconnection: within about that long after Redis answers again the
//!   node hears the others again. Messages published while a node could not hear them are
//!   lost for that node: cross-node delivery is at most once, like the bus's.
//!
//! Channels are prefixed with `redis.key_prefix`, so that installations (and tests) sharing a
//! Redis do not hear each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, RedisError};
use secrecy::{ExposeSecret, SecretString};
use socketioxide::adapter::Emitter;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;

/// How often the driver pings Redis and re-asserts its subscriptions.
const KEEP_EVERY: Duration = Duration::from_secs(1);

/// socketioxide-redis's adapter over [`PubSub`].
pub type RedisAdapter = CustomRedisAdapter<Emitter, PubSub>;

type Handlers = HashMap<String, mpsc::Sender<ChanItem>>;

/// The adapter's Redis driver (see the module documentation). Clones share everything.
#[derive(Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    /// The subscribed channels and where their messages go; shared with the push sender.
    handlers: Arc<RwLock<Handlers>>,
    reachable: AtomicBool,
    timeout: Duration,
    keeper: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl std::fmt::Debug for PubSub {
    // Not the connection: its info holds the URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub").field("reachable", &self.reachable()).finish_non_exhaustive()
    }
}

/// Why the driver failed; it never reaches the adapter (see [`PubSub`]), only logs.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    #[error(transparent)]
    Redis(#[from] RedisError),
}

impl PubSub {
    /// Parses `url`; connects lazily, and keeps connecting in the background. Within a Tokio
    /// runtime.
    pub fn new(url: &SecretString, timeout: Duration) -> Result<Self, RedisError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose_secret())?;
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let handlers: Arc<RwLock<Handlers>> = Arc::default();
        let on_push = Arc::clone(&handlers);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_push_sender(move |push: PushInfo| {
                route(&on_push, push);
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let keeper = tokio::spawn(keep(weak.clone())).abort_handle();
            Inner { conn, handlers, reachable: AtomicBool::new(false), timeout, keeper }
        });
        Ok(Self { inner })
    }

    /// The adapter's constructor state: channels under `prefix`, cross-node queries bounded
    /// by the driver's timeout.
    pub fn adapter_state(self, prefix: &str) -> RedisAdapterCtr<Self> {
        let config = RedisAdapterConfig::new()
            .with_prefix(format!("{prefix}:socket.io"))
            .with_request_timeout(self.inner.timeout);
        RedisAdapterCtr::new_with_driver(self, config)
    }

    /// Whether the last command reached Redis.
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    fn set_reachable(&self, op: &'static str, outcome: &Result<(), RedisError>) {
        self.inner.set_reachable(op, outcome);
    }

    /// Runs one command, bounded by the driver's timeout.
    async fn run<T: redis::FromRedisValue>(&self, op: &'static str, cmd: redis::Cmd) -> Result<T, RedisError> {
        let mut conn = self.inner.conn.clone();
        let outcome = tokio::time::timeout(self.inner.timeout, cmd.query_async::<T>(&mut conn))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        self.set_reachable(op, &outcome.as_ref().map(drop).map_err(Clone::clone));
        outcome
    }
}

impl Inner {
    fn set_reachable(&self, op: &'static str, outcome: &Result<(), RedisError>) {
        match outcome {
            Ok(()) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(target: "atom::realtime", "socket.io adapter: Redis reachable; rooms span every node");
                }
            }
            Err(e) => {
                metrics::counter!("realtime_adapter_errors_total", "op" => op).increment(1);
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "atom::realtime",
                        op,
                        error = %crate::error::ErrorChain(e),
                        "socket.io adapter: Redis unreachable; this node serves its own sockets only"
                    );
                }
            }
        }
    }
}

/// Passes a subscribed channel's message to the adapter's stream for it.
fn route(handlers: &RwLock<Handlers>, push: PushInfo) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(payload)) = (data.next(), data.next()) else { return };
    let (Ok(channel), Ok(payload)) =
        (redis::from_redis_value::<String>(channel), redis::from_redis_value::<Vec<u8>>(payload))
    else {
        return;
    };
    let handlers = handlers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sender) = handlers.get(&channel)
        && sender.try_send((channel, payload)).is_err()
    {
        metrics::counter!("realtime_adapter_errors_total", "op" => "receive").increment(1);
        tracing::warn!(target: "atom::realtime", "socket.io adapter: a message from another node was dropped (buffer full)");
    }
}

/// Every [`KEEP_EVERY`]: one `PING`, then `SUBSCRIBE` to every channel the adapter wants,
/// until the driver is gone.
async fn keep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(KEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let driver = PubSub { inner };
        if driver.run::<String>("ping", redis::cmd("PING")).await.is_err() {
            continue;
        }
        let channels: Vec<String> =
            driver.inner.handlers.read().unwrap_or_else(std::sync::PoisonError::into_inner).keys().cloned().collect();
        if !channels.is_empty() {
            let mut conn = driver.inner.conn.clone();
            let outcome = tokio::time::timeout(driver.inner.timeout, conn.subscribe(&channels))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
            driver.set_reachable("subscribe", &outcome);
        }
    }
}

impl Driver for PubSub {
    type Error = PubSubError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        // Skipped while Redis is known to be down: the keeper finds it back.
        if self.reachable() {
            let _ = self.run::<redis::Value>("publish", redis::cmd("PUBLISH").arg(chan).arg(val).clone()).await;
        } else {
            metrics::counter!("realtime_adapter_errors_total", "op" => "publish_skipped").increment(1);
        }
        Ok(())
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (sender, receiver) = mpsc::channel(size);
        self.inner.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(chan.clone(), sender);
        // Subscribed now if Redis answers, else by the keeper once it does.
        let mut conn = self.inner.conn.clone();
        let outcome = tokio::time::timeout(self.inner.timeout, conn.subscribe(&chan))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        self.set_reachable("subscribe", &outcome);
        Ok(MessageStream::new(receiver))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.inner.handlers.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&chan);
        let mut conn = self.inner.conn.clone();
        let outcome = tokio::time::timeout(self.inner.timeout, conn.unsubscribe(&chan))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()));
        self.set_reachable("unsubscribe", &outcome);
        Ok(())
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        // Unreachable: only this node is known, so no answer is awaited from the others.
        if !self.reachable() {
            return Ok(1);
        }
        let counted: Result<(String, u16), _> =
            self.run("numsub", redis::cmd("PUBSUB").arg("NUMSUB").arg(chan).clone()).await;
        Ok(counted.map_or(1, |(_, count)| count.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, channel: &str, payload: &[u8]) -> PushInfo {
        PushInfo {
            kind,
            data: vec![redis::Value::BulkString(channel.into()), redis::Value::BulkString(payload.to_vec())],
        }
    }

    #[test]
    fn a_message_goes_to_its_channels_stream_and_nothing_else_does() {
        let handlers: RwLock<Handlers> = RwLock::default();
        let (sender, mut receiver) = mpsc::channel(4);
        handlers.write().expect("lock").insert("p-request#/#".to_owned(), sender);
        route(&handlers, push(PushKind::Message, "p-request#/#", b"one"));
        route(&handlers, push(PushKind::Message, "another", b"two"));
        route(&handlers, push(PushKind::Subscribe, "p-request#/#", b"three"));
        route(&handlers, PushInfo { kind: PushKind::Message, data: vec![] });
        assert_eq!(receiver.try_recv().ok(), Some(("p-request#/#".to_owned(), b"one".to_vec())));
        assert!(receiver.try_recv().is_err(), "only the message of a subscribed channel");
    }
}
