//! Agents' streams on this node: each agent connection's events go out in the order it sent
//! them, and no stream is left open for ever.
//!
//! An agent connection (a socket with an `agent`-scoped key, or the built-in echo agent) has
//! one [`AgentLink`]: a queue and the task that works through it, one event at a time. Each
//! event is authorised again there (membership, read from the database, so an agent removed
//! from a conversation stops at its next chunk), then broadcast to the conversation's room
//! through the adapter (every node) or stored. socketioxide runs each event's handler in a
//! task of its own, which would let chunks overtake each other; the handlers only check and
//! enqueue, in the order the client's packets arrived ([`super::agent_events`]).
//!
//! [`Streams`] is this node's book of open streams: per link, conversation and stream id, the
//! last chunk's `index` (each must be greater) and when the agent was last heard of. A stream
//! ends with `agent:streaming_complete` or `agent:streaming_error` from its agent; when the
//! agent disconnects, or sends nothing on it for `conversations.agent_stream_timeout_secs`,
//! the server ends it with `agent:streaming_error` (`agent_disconnected`, `agent_timeout`),
//! after anything the agent had queued. An ended stream id stays refused on that connection
//! for a while, so a late chunk cannot reopen it.
//!
//! Broadcast payloads carry `sender_id`, the agent's account, besides the event's fields.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::operators::BroadcastOperators;
use tokio::sync::{mpsc, oneshot};

use super::agent::{self, StreamChunk, StreamComplete, StreamFailure};
use super::delivery::conversation_room;
use super::socket::{Hub, answer, conversation_refusal, refusal};
use super::{ConversationError, membership};
use crate::identity::Principal;

/// Events an agent connection may have waiting; more are refused with `rate_limited`.
const MAX_QUEUED: usize = 256;
/// How long an ended stream's id stays refused on its connection.
const ENDED_KEPT: Duration = Duration::from_secs(600);

/// Where an agent's broadcasts leave from: its socket (which does not hear its own chunks) or,
/// for the built-in agent, the server.
#[derive(Debug, Clone)]
pub enum Origin<A: Adapter> {
    Socket(SocketRef<A>),
    Server(SocketIo<A>),
}

impl<A: Adapter> Origin<A> {
    fn to(&self, room: String) -> BroadcastOperators<A> {
        match self {
            Self::Socket(socket) => socket.to(room),
            Self::Server(io) => io.to(room),
        }
    }
}

/// Where the answer to an event goes: the client's ack, or an in-process agent waiting.
pub enum Reply<A: Adapter> {
    Ack(AckSender<A>, SocketRef<A>),
    Wait(oneshot::Sender<Value>),
}

impl<A: Adapter> std::fmt::Debug for Reply<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ack(..) => "Reply::Ack",
            Self::Wait(_) => "Reply::Wait",
        })
    }
}

impl<A: Adapter> Reply<A> {
    pub fn send(self, event: &'static str, value: &Value) {
        match self {
            Self::Ack(ack, socket) => answer(&socket, ack, event, value),
            Self::Wait(waiting) => {
                let _ = waiting.send(value.clone());
            }
        }
    }
}

/// An event for a link's task.
#[derive(Debug)]
pub enum Job<A: Adapter> {
    Chunk(StreamChunk, Reply<A>),
    Complete(StreamComplete, Reply<A>),
    Fail(StreamFailure, Reply<A>),
    /// The server ends a stream: `(conversation_id, stream_id, code)`.
    End(String, String, &'static str),
    /// The connection went: the task stops after what is queued.
    Close,
}

impl<A: Adapter> Job<A> {
    /// Answers a job that will not run with `refusal`.
    pub fn refuse(self, event: &'static str, refusal: &Value) {
        match self {
            Self::Chunk(_, reply) | Self::Complete(_, reply) | Self::Fail(_, reply) => reply.send(event, refusal),
            Self::End(..) | Self::Close => {}
        }
    }
}

/// One agent connection's ordered queue.
#[derive(Debug)]
pub struct AgentLink<A: Adapter> {
    id: u64,
    user_id: String,
    jobs: mpsc::UnboundedSender<Job<A>>,
    queued: Arc<AtomicUsize>,
}

impl<A: Adapter> AgentLink<A> {
    /// A link for `principal`, which must act as an agent, and its task.
    pub fn open(hub: &Arc<Hub<A>>, principal: &Principal, origin: Origin<A>) -> Result<Arc<Self>, ConversationError> {
        agent::authorise(principal)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (jobs, queue) = mpsc::unbounded_channel();
        let link = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            user_id: principal.user_id.clone(),
            jobs,
            queued: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(run(Arc::clone(hub), Arc::clone(&link), origin, queue));
        Ok(link)
    }

    /// Queues an agent's event, or gives it back when too many are waiting.
    pub fn submit(&self, job: Job<A>) -> Result<(), Box<Job<A>>> {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Box::new(job));
        }
        self.jobs.send(job).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            Box::new(e.0)
        })
    }

    /// Queues a server event (never refused).
    fn push(&self, job: Job<A>) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The connection went: its open streams end, then its task.
    pub fn close(self: &Arc<Self>, streams: &Streams<A>) {
        for (conversation_id, stream_id) in streams.take_link(self.id) {
            self.push(Job::End(conversation_id, stream_id, "agent_disconnected"));
        }
        self.push(Job::Close);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StreamKey {
    link: u64,
    conversation_id: String,
    stream_id: String,
}

#[derive(Debug)]
struct OpenStream<A: Adapter> {
    last_index: u32,
    last_seen: Instant,
    link: Arc<AgentLink<A>>,
}

/// This node's open streams.
pub struct Streams<A: Adapter> {
    timeout: Duration,
    // A std mutex: held to look up or change the map, never across an await.
    open: Mutex<HashMap<StreamKey, OpenStream<A>>>,
    ended: moka::sync::Cache<StreamKey, ()>,
}

impl<A: Adapter> std::fmt::Debug for Streams<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl<A: Adapter> Streams<A> {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            open: Mutex::default(),
            ended: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(ENDED_KEPT).build(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, OpenStream<A>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a chunk: opens the stream or moves it on, or says why the chunk is refused.
    fn chunk(&self, link: &Arc<AgentLink<A>>, key: StreamKey, index: u32) -> Result<(), ConversationError> {
        if self.ended.contains_key(&key) {
            return Err(ConversationError::invalid("stream_id", "this stream has ended"));
        }
        let mut open = self.lock();
        match open.get_mut(&key) {
            Some(stream) if index <= stream.last_index => Err(ConversationError::invalid(
                "index",
                format!("must be greater than the previous chunk's ({})", stream.last_index),
            )),
            Some(stream) => {
                stream.last_index = index;
                stream.last_seen = Instant::now();
                Ok(())
            }
            None => {
                let stream = OpenStream { last_index: index, last_seen: Instant::now(), link: Arc::clone(link) };
                open.insert(key, stream);
                metrics::gauge!("agent_streams_open").increment(1.0);
                Ok(())
            }
        }
    }

    /// The stream ended; whether it was open.
    fn end(&self, key: StreamKey) -> bool {
        let was_open = self.lock().remove(&key).is_some();
        if was_open {
            metrics::gauge!("agent_streams_open").decrement(1.0);
        }
        self.ended.insert(key, ());
        was_open
    }

    /// Removes a link's open streams: `(conversation_id, stream_id)`.
    fn take_link(&self, link: u64) -> Vec<(String, String)> {
        let mut open = self.lock();
        let keys: Vec<StreamKey> = open.keys().filter(|k| k.link == link).cloned().collect();
        for key in &keys {
            open.remove(key);
            metrics::gauge!("agent_streams_open").decrement(1.0);
        }
        drop(open);
        keys.into_iter()
            .map(|key| {
                self.ended.insert(key.clone(), ());
                (key.conversation_id, key.stream_id)
            })
            .collect()
    }

    /// Ends the streams silent for longer than the timeout, through their links (after what
    /// their agents queued).
    fn expire(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.lock().retain(|key, stream| {
            let live = now.duration_since(stream.last_seen) < self.timeout;
            if !live {
                expired.push((key.clone(), Arc::clone(&stream.link)));
            }
            live
        });
        for (key, link) in expired {
            metrics::gauge!("agent_streams_open").decrement(1.0);
            self.ended.insert(key.clone(), ());
            link.push(Job::End(key.conversation_id, key.stream_id, "agent_timeout"));
        }
    }

    /// Checks for silent streams until aborted: often enough that a stream ends within a
    /// quarter of the timeout (at most a second) after it.
    pub fn start_expiry(self: &Arc<Self>) -> tokio::task::AbortHandle {
        let streams = Arc::clone(self);
        let every = (self.timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                streams.expire();
            }
        })
        .abort_handle()
    }
}

/// A link's task: its events, one at a time, in order.
async fn run<A: Adapter>(
    hub: Arc<Hub<A>>,
    link: Arc<AgentLink<A>>,
    origin: Origin<A>,
    mut queue: mpsc::UnboundedReceiver<Job<A>>,
) {
    while let Some(job) = queue.recv().await {
        link.queued.fetch_sub(1, Ordering::AcqRel);
        match job {
            Job::Chunk(input, reply) => {
                let outcome = chunk(&hub, &link, &origin, &input).await;
                reply.send("agent:streaming", &outcome.map_or_else(|e| conversation_refusal(&e), |()| ok()));
            }
            Job::Complete(input, reply) => {
                let outcome = agent::complete(&hub.db, &hub.bus, &hub.limits, &link.user_id, &input).await;
                let answer = match outcome {
                    Ok(sent) => {
                        hub.streams.end(key(&link, &input.conversation_id, &input.stream_id));
                        json!({ "ok": true, "message": sent.message, "duplicate": !sent.created })
                    }
                    Err(e) => conversation_refusal(&e),
                };
                reply.send("agent:streaming_complete", &answer);
            }
            Job::Fail(input, reply) => {
                let outcome = fail(&hub, &link, &origin, &input).await;
                reply.send("agent:streaming_error", &outcome.map_or_else(|e| conversation_refusal(&e), |()| ok()));
            }
            Job::End(conversation_id, stream_id, code) => {
                let message = match code {
                    "agent_timeout" => "the agent sent nothing on this stream for too long",
                    _ => "the agent disconnected before finishing this stream",
                };
                let payload = json!({
                    "conversation_id": conversation_id,
                    "stream_id": stream_id,
                    "sender_id": link.user_id,
                    "error": { "code": code, "message": message },
                });
                // From the server: the agent, if still connected, hears that its stream ended.
                if let Some(io) = hub.io.get() {
                    broadcast(&Origin::Server(io.clone()), &conversation_id, "agent:streaming_error", &payload).await;
                }
            }
            Job::Close => return,
        }
    }
}

fn ok() -> Value {
    json!({ "ok": true })
}

fn key<A: Adapter>(link: &AgentLink<A>, conversation_id: &str, stream_id: &str) -> StreamKey {
    StreamKey { link: link.id, conversation_id: conversation_id.to_owned(), stream_id: stream_id.to_owned() }
}

async fn chunk<A: Adapter>(
    hub: &Hub<A>,
    link: &Arc<AgentLink<A>>,
    origin: &Origin<A>,
    input: &StreamChunk,
) -> Result<(), ConversationError> {
    input.validate(&hub.limits)?;
    membership(&hub.db, &input.conversation_id, &link.user_id).await?;
    hub.streams.chunk(link, key(link, &input.conversation_id, &input.stream_id), input.index)?;
    let payload = json!({
        "conversation_id": input.conversation_id,
        "stream_id": input.stream_id,
        "index": input.index,
        "delta": input.delta,
        "sender_id": link.user_id,
    });
    broadcast(origin, &input.conversation_id, "agent:streaming", &payload).await;
    Ok(())
}

async fn fail<A: Adapter>(
    hub: &Hub<A>,
    link: &Arc<AgentLink<A>>,
    origin: &Origin<A>,
    input: &StreamFailure,
) -> Result<(), ConversationError> {
    input.validate()?;
    membership(&hub.db, &input.conversation_id, &link.user_id).await?;
    // A stream that never opened may fail too: an agent can fail before its first chunk.
    hub.streams.end(key(link, &input.conversation_id, &input.stream_id));
    let (code, message) = input.error.parts();
    let payload = json!({
        "conversation_id": input.conversation_id,
        "stream_id": input.stream_id,
        "sender_id": link.user_id,
        "error": { "code": code, "message": message },
    });
    broadcast(origin, &input.conversation_id, "agent:streaming_error", &payload).await;
    Ok(())
}

/// A broadcast to the conversation's room, on every node. Never stored, but not socket.io's
/// `volatile` either: that bypasses each socket's buffer, so a chunk could be dropped or
/// overtake the one before it (and the reply's `message:new`).
async fn broadcast<A: Adapter>(origin: &Origin<A>, conversation_id: &str, event: &'static str, payload: &Value) {
    match origin.to(conversation_room(conversation_id)).emit(event, payload).await {
        Ok(()) => metrics::counter!("realtime_events_out_total", "event" => event).increment(1),
        Err(e) => {
            tracing::warn!(target: "atom::realtime", event, error = %e, "agent broadcast failed");
        }
    }
}

/// The refusal of an event when its link's queue is full.
pub fn queue_full() -> Value {
    refusal("rate_limited", "too many agent events are waiting to be sent: slow down")
}
