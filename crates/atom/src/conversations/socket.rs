//! The conversation events on Socket.io, generic over the adapter. [`Hub::register`] adds
//! their handlers to realtime's event table when the server starts; [`Hub::attach`] runs in
//! realtime's connect middleware, before the client learns it is connected: it joins the
//! socket to the room of each of its user's conversations and gives it its
//! [`SocketDelivery`].
//!
//! Client to server, each acknowledged with `{ok: true, …}` or
//! `{ok: false, error: {code, message, errors?}}`:
//!
//! - `message:send` `{conversation_id, client_msg_id, body}` -> `{ok, message}`, after the
//!   commit; the message reaches the room as `message:new` through [`super::delivery`].
//! - `sync` `{positions: {conversation_id: last_seq}}` -> replays, then `{ok, positions}`.
//! - `messages:ack` `{conversation_id, seq}` -> `{ok, ack_seq}`.
//! - `typing` `{conversation_id}` -> `typing` `{conversation_id, user_id}` to the room's other
//!   sockets, volatile.
//! - `agent:streaming`, `agent:streaming_complete`, `agent:streaming_error`: an agent's
//!   streamed reply, registered here too ([`super::agent_events`]).
//!
//! Error codes: `invalid_payload` (not the event's shape), `invalid` (a field fails
//! validation; `errors` lists them), `forbidden` (not a member, or no such conversation;
//! nothing is stored), `unavailable` (the database cannot be reached), `internal`; realtime's
//! event budget adds `rate_limited` and `unknown_event` ([`crate::realtime::events`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, SocketRef, TryData};

use super::delivery::{self, Deliverer, SocketDelivery, SyncError, conversation_room};
use super::presence::Presence;
use super::streams::{AgentLink, Streams};
use super::{ConversationError, SendMessage};
use crate::bus::Bus;
use crate::config::ConversationsConfig;
use crate::error::database_unreachable;
use crate::identity::Principal;
use crate::realtime::Events;
use crate::storage::Db;

/// The most conversations a `sync` may name.
const MAX_SYNC_POSITIONS: usize = 10_000;

/// What the conversation handlers of one node share. Made before the Socket.io server
/// (whose state holds it) and bound to it once built.
pub struct Hub<A: Adapter = LocalAdapter> {
    pub(super) io: OnceLock<SocketIo<A>>,
    pub(super) db: Db,
    pub(super) bus: Bus,
    pub(super) limits: ConversationsConfig,
    presence: Arc<Presence>,
    /// Agents' open streams on this node.
    pub(super) streams: Arc<Streams<A>>,
}

impl<A: Adapter> std::fmt::Debug for Hub<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl<A: Adapter> Hub<A> {
    pub fn new(db: &Db, bus: &Bus, limits: &ConversationsConfig) -> Arc<Self> {
        Arc::new(Self {
            io: OnceLock::new(),
            db: db.clone(),
            bus: bus.clone(),
            limits: limits.clone(),
            presence: Arc::new(Presence::new(Duration::from_millis(limits.presence_grace_ms))),
            streams: Arc::new(Streams::new(Duration::from_secs(limits.agent_stream_timeout_secs))),
        })
    }

    /// Binds the server and starts this node's delivery of bus events to its sockets, the
    /// expiry of agents' silent streams and, when on, the echo agent: the returned tasks run
    /// until aborted (at shutdown).
    pub fn bind(self: &Arc<Self>, io: &SocketIo<A>) -> Vec<tokio::task::AbortHandle> {
        let _ = self.io.set(io.clone());
        let deliverer = Deliverer { db: self.db.clone(), replay_batch: self.limits.replay_batch };
        let mut tasks = vec![delivery::start(io.clone(), &self.bus, deliverer), self.streams.start_expiry()];
        if self.limits.echo_agent {
            match super::echo::start(self, io) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::error!(target: "atom::realtime", error = %e, "the echo agent did not start"),
            }
        }
        tasks
    }

    /// Registers the conversation events (behind realtime's event budget and metrics, which
    /// also answer unknown events).
    pub fn register(events: &mut Events<A>) {
        events.on("message:send", message_send::<A>);
        events.on("sync", sync::<A>);
        events.on("messages:ack", messages_ack::<A>);
        events.on("typing", typing::<A>);
        super::agent_events::register(events);
    }

    /// Sets up an admitted socket of `principal`: its rooms and its delivery.
    pub async fn attach(self: &Arc<Self>, socket: &SocketRef<A>, principal: &Principal) -> Result<(), sqlx::Error> {
        let conversations = super::all_of(&self.db, &principal.user_id).await?;
        socket.join(conversations.iter().map(|c| conversation_room(&c.id)).collect::<Vec<_>>());
        socket.extensions.insert(Arc::new(SocketDelivery::new(&principal.user_id)));
        socket.extensions.insert(Arc::clone(self));
        if let Some(io) = self.io.get() {
            self.presence.opened(io, &self.db, &principal.user_id);
        }
        Ok(())
    }

    /// A socket set up by [`Self::attach`] went away.
    pub fn detach(&self, socket: &SocketRef<A>) {
        if let Some(link) = socket.extensions.remove::<Arc<AgentLink<A>>>() {
            link.close(&self.streams);
        }
        if let (Some(io), Some(principal)) = (self.io.get(), socket.extensions.get::<Principal>()) {
            self.presence.closed(io, &self.db, &principal.user_id);
        }
    }
}

/// An error acknowledgement.
pub(super) fn refusal(code: &str, message: impl Into<String>) -> Value {
    json!({ "ok": false, "error": { "code": code, "message": message.into() } })
}

pub(super) fn conversation_refusal(error: &ConversationError) -> Value {
    match error {
        ConversationError::Forbidden => refusal("forbidden", "only members of the conversation may do this"),
        ConversationError::NotAgent => refusal("forbidden", "only an API key with the agent scope may act as an agent"),
        ConversationError::NotFound => refusal("not_found", "no such user or member"),
        ConversationError::Invalid(errors) => {
            let mut answer = refusal("invalid", format!("{} field(s) failed validation", errors.len()));
            answer["error"]["errors"] = json!(errors);
            answer
        }
        ConversationError::Storage(e) if database_unreachable(e) => {
            tracing::warn!(target: "atom::realtime", error = %crate::error::ErrorChain(e), "socket.io event: database unavailable");
            refusal("unavailable", "the database is unavailable; try again shortly")
        }
        ConversationError::Storage(e) => {
            tracing::error!(target: "atom::realtime", error = %crate::error::ErrorChain(e), "socket.io event failed");
            refusal("internal", "an internal error occurred")
        }
    }
}

pub(super) fn answer<A: Adapter>(socket: &SocketRef<A>, ack: AckSender<A>, event: &'static str, answer: &Value) {
    let outcome = if answer["ok"] == true { "ok" } else { answer["error"]["code"].as_str().unwrap_or("error") };
    metrics::counter!("realtime_acks_total", "event" => event, "outcome" => outcome.to_owned()).increment(1);
    if let Err(e) = ack.send(answer) {
        tracing::debug!(target: "atom::realtime", sid = %socket.id, event, error = %e, "acknowledgement not sent");
    }
}

/// The event's payload as `T`, or the `invalid_payload` refusal naming what is wrong.
pub(super) fn payload<T: DeserializeOwned>(data: Result<Value, impl std::fmt::Display>) -> Result<T, Value> {
    let value = data.map_err(|e| refusal("invalid_payload", format!("the payload is not JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| refusal("invalid_payload", e.to_string()))
}

fn context<A: Adapter>(socket: &SocketRef<A>) -> Option<(Arc<Hub<A>>, Principal)> {
    Some((socket.extensions.get::<Arc<Hub<A>>>()?, socket.extensions.get::<Principal>()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendPayload {
    conversation_id: String,
    client_msg_id: String,
    body: String,
}

async fn message_send<A: Adapter>(socket: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let Some((hub, principal)) = context(&socket) else { return };
    let input: SendPayload = match payload(data) {
        Ok(input) => input,
        Err(refused) => return answer(&socket, ack, "message:send", &refused),
    };
    let send = SendMessage { client_msg_id: input.client_msg_id, body: input.body };
    let sender = super::Sender { user_id: &principal.user_id, kind: super::SenderKind::of(&principal) };
    let result = super::send_from(&hub.db, &hub.bus, &hub.limits, sender, &input.conversation_id, &send).await;
    let reply = match result {
        Ok(sent) => json!({ "ok": true, "message": sent.message, "duplicate": !sent.created }),
        Err(e) => conversation_refusal(&e),
    };
    answer(&socket, ack, "message:send", &reply);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncPayload {
    #[serde(default)]
    positions: HashMap<String, i64>,
}

async fn sync<A: Adapter>(socket: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let Some((hub, _)) = context(&socket) else { return };
    let Some(delivery) = socket.extensions.get::<Arc<SocketDelivery>>() else { return };
    let input: SyncPayload = match payload(data) {
        Ok(input) => input,
        Err(refused) => return answer(&socket, ack, "sync", &refused),
    };
    if input.positions.len() > MAX_SYNC_POSITIONS {
        let refused = refusal("invalid", format!("positions: at most {MAX_SYNC_POSITIONS} conversations"));
        return answer(&socket, ack, "sync", &refused);
    }
    if let Some((id, _)) = input.positions.iter().find(|(id, seq)| **seq < 0 || id.is_empty() || id.len() > 64) {
        let refused = refusal("invalid", format!("positions: {id:?} needs a conversation id and a seq of 0 or more"));
        return answer(&socket, ack, "sync", &refused);
    }
    let reply = match delivery.sync(&socket, &hub.db, hub.limits.replay_batch, &input.positions).await {
        Ok(positions) => json!({ "ok": true, "positions": positions }),
        Err(SyncError::Conversation(e)) => conversation_refusal(&e),
        Err(SyncError::Gone) => return,
    };
    answer(&socket, ack, "sync", &reply);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckPayload {
    conversation_id: String,
    seq: i64,
}

async fn messages_ack<A: Adapter>(socket: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let Some((hub, principal)) = context(&socket) else { return };
    let input: AckPayload = match payload(data) {
        Ok(input) => input,
        Err(refused) => return answer(&socket, ack, "messages:ack", &refused),
    };
    let reply = match super::acknowledge(&hub.db, &principal.user_id, &input.conversation_id, input.seq).await {
        Ok(ack_seq) => json!({ "ok": true, "ack_seq": ack_seq }),
        Err(e) => conversation_refusal(&e),
    };
    answer(&socket, ack, "messages:ack", &reply);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TypingPayload {
    conversation_id: String,
}

async fn typing<A: Adapter>(socket: SocketRef<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let Some((_, principal)) = context(&socket) else { return };
    let input: TypingPayload = match payload(data) {
        Ok(input) => input,
        Err(refused) => return answer(&socket, ack, "typing", &refused),
    };
    let room = conversation_room(&input.conversation_id);
    // The socket's rooms are its user's conversations, kept current by membership changes.
    if !socket.rooms().iter().any(|r| *r == room) {
        return answer(&socket, ack, "typing", &refusal("forbidden", "only members of the conversation may do this"));
    }
    let event = json!({ "conversation_id": input.conversation_id, "user_id": principal.user_id });
    if socket.to(room).volatile().emit("typing", &event).await.is_ok() {
        metrics::counter!("realtime_events_out_total", "event" => "typing").increment(1);
    }
    answer(&socket, ack, "typing", &json!({ "ok": true }));
}
