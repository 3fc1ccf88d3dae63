//! The agent's Socket.io events, each acknowledged like the others (`{ok: true, …}` or
//! `{ok: false, error: {code, message, errors?}}`):
//!
//! - `agent:streaming` `{conversation_id, stream_id, index, delta}` -> `{ok}` once broadcast
//!   (volatile, never stored) to the conversation's room as `agent:streaming`, with
//!   `sender_id`;
//! - `agent:streaming_complete` `{conversation_id, stream_id, body}` -> `{ok, message,
//!   duplicate}` after the commit; the reply reaches the room as `message:new`;
//! - `agent:streaming_error` `{conversation_id, stream_id, error}` (`error`: a message, or
//!   `{code, message}`) -> `{ok}` once broadcast as `agent:streaming_error`
//!   `{conversation_id, stream_id, sender_id, error: {code, message}}`.
//!
//! Refusals: `forbidden` (the credential lacks the `agent` scope, or the account is not a
//! member; nothing is sent or stored), `invalid_payload`, `invalid` (sizes, ids, an `index`
//! not above the previous one, an ended stream), `rate_limited` (too many waiting).
//!
//! The handlers are not async functions: socketioxide spawns those, one task per event, and
//! a stream's chunks could then overtake each other. These check the credential and the
//! payload's shape as the packet arrives and queue it on the connection's
//! [`AgentLink`](super::streams::AgentLink), whose task does the rest in order.

use std::sync::Arc;

use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;
use socketioxide_core::Value;

use super::agent::{StreamChunk, StreamComplete, StreamFailure};
use super::socket::{Hub, answer, conversation_refusal, payload};
use super::streams::{AgentLink, Job, Origin, Reply, queue_full};
use crate::identity::Principal;
use crate::realtime::Events;

/// Registers the three agent events.
pub fn register<A: Adapter>(events: &mut Events<A>) {
    events.on("agent:streaming", AgentEvent(Kind::Chunk));
    events.on("agent:streaming_complete", AgentEvent(Kind::Complete));
    events.on("agent:streaming_error", AgentEvent(Kind::Fail));
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Chunk,
    Complete,
    Fail,
}

impl Kind {
    fn event(self) -> &'static str {
        match self {
            Self::Chunk => "agent:streaming",
            Self::Complete => "agent:streaming_complete",
            Self::Fail => "agent:streaming_error",
        }
    }
}

/// One agent event's handler, run inline in the socket's receive order.
#[derive(Debug, Clone, Copy)]
struct AgentEvent(Kind);

impl<A: Adapter> MessageHandler<A, ()> for AgentEvent {
    fn call(&self, socket: Arc<Socket<A>>, mut data: Value, ack_id: Option<i64>) {
        let event = self.0.event();
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut data, &ack_id);
        let Ok(TryData(data)) = TryData::<serde_json::Value>::from_message_parts(&socket, &mut data, &ack_id);
        let socket = SocketRef::from(socket);
        let link = match link(&socket) {
            Ok(link) => link,
            Err(refused) => return answer(&socket, ack, event, &refused),
        };
        let input = match self.0 {
            Kind::Chunk => payload(data).map(Input::Chunk),
            Kind::Complete => payload(data).map(Input::Complete),
            Kind::Fail => payload(data).map(Input::Fail),
        };
        let reply = Reply::Ack(ack, socket.clone());
        let job = match input {
            Ok(Input::Chunk(input)) => Job::Chunk(input, reply),
            Ok(Input::Complete(input)) => Job::Complete(input, reply),
            Ok(Input::Fail(input)) => Job::Fail(input, reply),
            Err(refused) => return reply.send(event, &refused),
        };
        if let Err(job) = link.submit(job) {
            (*job).refuse(event, &queue_full());
        }
    }
}

/// An agent event's payload.
enum Input {
    Chunk(StreamChunk),
    Complete(StreamComplete),
    Fail(StreamFailure),
}

/// The socket's agent link, opened at its first agent event; a refusal when its credential
/// does not act as an agent.
fn link<A: Adapter>(socket: &SocketRef<A>) -> Result<Arc<AgentLink<A>>, serde_json::Value> {
    if let Some(link) = socket.extensions.get::<Arc<AgentLink<A>>>() {
        return Ok(link);
    }
    let internal = || super::socket::refusal("internal", "the connection is not set up");
    let hub = socket.extensions.get::<Arc<Hub<A>>>().ok_or_else(internal)?;
    let principal = socket.extensions.get::<Principal>().ok_or_else(internal)?;
    let link =
        AgentLink::open(&hub, &principal, Origin::Socket(socket.clone())).map_err(|e| conversation_refusal(&e))?;
    socket.extensions.insert(Arc::clone(&link));
    Ok(link)
}
