//! The agent as a participant: what an agent may do in a conversation and how its streamed
//! reply is stored. The Socket.io side (chunks in order, timeouts) is in [`super::streams`]
//! and [`super::agent_events`]; the built-in agent in [`super::echo`].
//!
//! An agent is not a kind of account: it is any account acting through an API key with the
//! `agent` scope ([`crate::identity::api_keys::AGENT_SCOPE`]). Whoever may create keys for an
//! account may run an agent as it (typically a dedicated account that users add to their
//! conversations); authorisation stays the two checks every other event has: the credential
//! (here its scope) and membership of the conversation. What such a connection sends is
//! stored with `sender_kind: "agent"`, so clients, and agents, tell replies from people.
//!
//! Invariants:
//! - Only an `agent`-scoped credential sends `agent:*` events ([`ConversationError::NotAgent`]),
//!   and only in conversations its account is a member of.
//! - A streamed reply is stored once per `(conversation, agent, stream_id)`: its client id is
//!   derived from the stream id ([`stream_client_msg_id`]), so a retried
//!   `agent:streaming_complete` returns the first message, whichever node it reaches.

use serde::Deserialize;

use super::{ConversationError, Sender, SenderKind, Sent, Stored, check_text};
use crate::bus::Bus;
use crate::config::ConversationsConfig;
use crate::error::FieldError;
use crate::identity::Principal;
use crate::storage::Db;

/// The longest `stream_id`, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 64;
/// The longest error message of `agent:streaming_error`, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1000;

/// `agent:streaming`: one chunk of a reply being written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamChunk {
    pub conversation_id: String,
    pub stream_id: String,
    /// The chunk's position in its stream: each is greater than the one before.
    pub index: u32,
    pub delta: String,
}

/// `agent:streaming_complete`: the whole reply, to be stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamComplete {
    pub conversation_id: String,
    pub stream_id: String,
    pub body: String,
}

/// `agent:streaming_error`: the stream ends without a reply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFailure {
    pub conversation_id: String,
    pub stream_id: String,
    pub error: StreamErrorInput,
}

/// An agent's error: a message, or `{code, message}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StreamErrorInput {
    Message(String),
    Coded { code: String, message: String },
}

impl StreamErrorInput {
    /// `(code, message)`: an agent's message without a code is `agent_error`.
    pub fn parts(&self) -> (&str, &str) {
        match self {
            Self::Message(message) => ("agent_error", message),
            Self::Coded { code, message } => (code, message),
        }
    }
}

/// The caller acts as an agent, or [`ConversationError::NotAgent`].
pub fn authorise(principal: &Principal) -> Result<(), ConversationError> {
    if principal.is_agent() { Ok(()) } else { Err(ConversationError::NotAgent) }
}

/// The client id an agent's reply is stored under: one per stream.
pub fn stream_client_msg_id(stream_id: &str) -> String {
    format!("stream:{stream_id}")
}

fn check_ids(errors: &mut Vec<FieldError>, conversation_id: &str, stream_id: &str) {
    if conversation_id.is_empty() || conversation_id.len() > 64 {
        errors.push(FieldError::new("conversation_id", "must be a conversation id"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
    if stream_id.is_empty() || stream_id.len() > MAX_STREAM_ID_BYTES || !stream_id.bytes().all(allowed) {
        errors.push(FieldError::new(
            "stream_id",
            format!("must be 1 to {MAX_STREAM_ID_BYTES} letters, digits, '-', '_', '.' or ':'"),
        ));
    }
}

fn result(errors: Vec<FieldError>) -> Result<(), ConversationError> {
    if errors.is_empty() { Ok(()) } else { Err(ConversationError::Invalid(errors)) }
}

impl StreamChunk {
    pub fn validate(&self, limits: &ConversationsConfig) -> Result<(), ConversationError> {
        let mut errors = Vec::new();
        check_ids(&mut errors, &self.conversation_id, &self.stream_id);
        check_text(&mut errors, "delta", &self.delta, limits.max_delta_bytes);
        result(errors)
    }
}

impl StreamComplete {
    pub fn validate(&self, limits: &ConversationsConfig) -> Result<(), ConversationError> {
        let mut errors = Vec::new();
        check_ids(&mut errors, &self.conversation_id, &self.stream_id);
        if self.body.trim().is_empty() {
            errors.push(FieldError::new("body", "must not be empty"));
        }
        check_text(&mut errors, "body", &self.body, limits.max_body_bytes);
        result(errors)
    }
}

impl StreamFailure {
    pub fn validate(&self) -> Result<(), ConversationError> {
        let mut errors = Vec::new();
        check_ids(&mut errors, &self.conversation_id, &self.stream_id);
        let (code, message) = self.error.parts();
        if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            errors.push(FieldError::new("error.code", "must be 1 to 64 lowercase letters or '_'"));
        }
        check_text(&mut errors, "error.message", message, MAX_ERROR_MESSAGE_BYTES);
        result(errors)
    }
}

/// Stores the agent's whole reply as its message in the conversation (once per stream: a
/// retry returns the first), then publishes it like any other message.
pub async fn complete(
    db: &Db,
    bus: &Bus,
    limits: &ConversationsConfig,
    agent_id: &str,
    input: &StreamComplete,
) -> Result<Sent, ConversationError> {
    input.validate(limits)?;
    let client_msg_id = stream_client_msg_id(&input.stream_id);
    let stored = Stored {
        sender: Sender { user_id: agent_id, kind: SenderKind::Agent },
        client_msg_id: &client_msg_id,
        body: &input.body,
        stream_id: Some(&input.stream_id),
    };
    super::store(db, bus, &input.conversation_id, stored).await
}
