//! The built-in echo agent: the worked example of an agent worker, and something to talk to
//! out of the box. `POST /v1/conversations` with `with_agent: true` adds its account; it
//! answers each person's message by streaming it back word by word (`agent:streaming`), then
//! storing it (`agent:streaming_complete`), which members receive as `message:new`.
//!
//! It runs in process but holds no privilege: it acts through an [`AgentLink`] with its own
//! agent [`Principal`] (its account, the `agent` scope), so each chunk and the reply pass the
//! same scope check, membership check, ordering, timeouts and storage as an external worker's
//! socket events. Instead of a socket's `message:new` it reads the same bus events that
//! produce them (`MessageStored`), on every node.
//!
//! Invariants:
//! - It answers only messages with `sender_kind: "user"`: never its own replies, nor any other
//!   agent's, so two agents in one conversation cannot set each other off.
//! - Each message is answered once, whatever the number of nodes: a node answers the messages
//!   it claims by moving the echo account's delivery position (`ack_seq`) from the value it
//!   read to the message's seq in one conditional UPDATE, which only one node can do. A
//!   claim covers the messages skipped since the last one (a lagging bus, a restart), and
//!   one conversation's claims are answered in order on a node.
//! - Its account (fixed id [`ECHO_AGENT_ID`]) is created at start-up when missing, by
//!   whichever node gets there first ([`ensure_account`]); it has no usable password.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::oneshot;

use super::agent::{StreamChunk, StreamComplete};
use super::socket::Hub;
use super::streams::{AgentLink, Job, Origin, Reply};
use super::{ConversationError, Message, SenderKind};
use crate::bus::EventKind;
use crate::config::ConversationsConfig;
use crate::identity::api_keys::AGENT_SCOPE;
use crate::identity::{Credential, Principal, Role, passwords};
use crate::storage::conversations as sql;
use crate::storage::{Db, now_ms, users};

/// The echo agent's account id: the member `with_agent` adds.
pub const ECHO_AGENT_ID: &str = "echo-agent";
/// Its account's email, in the reserved domain of built-in accounts
/// ([`users::BUILTIN_EMAIL_DOMAIN`]), which the bootstrap admin's "empty installation" ignores.
pub const ECHO_AGENT_EMAIL: &str = "echo-agent@agents.atom.invalid";

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("could not create the echo agent's account")]
    Storage(#[from] sqlx::Error),
    #[error("could not create the echo agent's account")]
    Hash(#[from] passwords::HashError),
    #[error("the echo agent's email {ECHO_AGENT_EMAIL} belongs to another account")]
    EmailTaken,
}

/// Creates the echo agent's account unless it exists (several nodes may start at once).
pub async fn ensure_account(db: &Db) -> Result<(), EchoError> {
    if users::by_id(db, ECHO_AGENT_ID).await?.is_some() {
        return Ok(());
    }
    // A hash of a secret that is dropped at once: nobody can sign in as the agent.
    let unusable = passwords::hash(SecretString::from(crate::identity::random_secret())).await?;
    if users::ensure_account(db, ECHO_AGENT_ID, ECHO_AGENT_EMAIL, &unusable, now_ms()).await? {
        tracing::info!("created the echo agent's account");
    }
    match users::by_id(db, ECHO_AGENT_ID).await? {
        Some(_) => Ok(()),
        None => Err(EchoError::EmailTaken),
    }
}

/// The member `with_agent: true` adds, or why there is none.
pub fn member(limits: &ConversationsConfig) -> Result<&'static str, ConversationError> {
    if limits.echo_agent {
        Ok(ECHO_AGENT_ID)
    } else {
        Err(ConversationError::invalid("with_agent", "no agent is enabled on this server"))
    }
}

/// The echo agent's principal: its account acting with the `agent` scope. Its key id names
/// no stored key: it is in process and never presents a credential.
fn principal() -> Principal {
    Principal {
        user_id: ECHO_AGENT_ID.to_owned(),
        role: Role::User,
        credential: Credential::ApiKey {
            key_id: "builtin:echo-agent".to_owned(),
            scopes: vec![AGENT_SCOPE.to_owned()],
            providers: None,
            expires_at: None,
        },
    }
}

/// Starts this node's echo agent; it runs until aborted.
pub fn start<A: Adapter>(hub: &Arc<Hub<A>>, io: &SocketIo<A>) -> Result<tokio::task::AbortHandle, ConversationError> {
    let link = AgentLink::open(hub, &principal(), Origin::Server(io.clone()))?;
    let mut events = hub.bus.subscribe();
    let hub = Arc::clone(hub);
    let task = tokio::spawn(async move {
        // Aborted at shutdown: the link's streams end and its task with them.
        let _closing = CloseOnDrop(Arc::clone(&hub), Arc::clone(&link));
        loop {
            match events.recv().await {
                Ok(event) => {
                    let EventKind::MessageStored { message } = event.kind else { continue };
                    if message.sender_kind != SenderKind::User {
                        continue;
                    }
                    let (hub, link) = (Arc::clone(&hub), Arc::clone(&link));
                    tokio::spawn(async move {
                        if let Err(e) = answer_up_to(&hub, &link, &message.conversation_id, message.seq).await {
                            tracing::warn!(target: "atom::realtime", error = %crate::error::ErrorChain(&e), "the echo agent could not answer");
                        }
                    });
                }
                // The next message of each conversation claims the ones missed.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    Ok(task.abort_handle())
}

/// Closes the echo agent's link when its task ends, as a socket's is closed when it goes.
struct CloseOnDrop<A: Adapter>(Arc<Hub<A>>, Arc<AgentLink<A>>);

impl<A: Adapter> Drop for CloseOnDrop<A> {
    fn drop(&mut self) {
        self.1.close(&self.0.streams);
    }
}

/// Claims and answers the conversation's messages up to `seq` that no node has claimed.
async fn answer_up_to<A: Adapter>(
    hub: &Hub<A>,
    link: &AgentLink<A>,
    conversation_id: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let _turn = turn(conversation_id).lock().await;
    let Some(from) = claim(&hub.db, conversation_id, seq).await? else { return Ok(()) };
    let mut after = from;
    while after < seq {
        let rows = sql::range(&hub.db, conversation_id, after, seq + 1, i64::from(hub.limits.replay_batch)).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for message in rows.into_iter().map(Message::from) {
            if message.sender_kind == SenderKind::User && !echo(hub, link, &message).await {
                // No longer a member (or gone): nothing more to answer here.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Moves the echo agent's position in the conversation to `seq`; the position it moved from,
/// or `None` when it is not a member or another node got there first.
async fn claim(db: &Db, conversation_id: &str, seq: i64) -> Result<Option<i64>, sqlx::Error> {
    loop {
        let Some(member) = sql::membership(db, conversation_id, ECHO_AGENT_ID).await? else { return Ok(None) };
        if member.ack_seq >= seq {
            return Ok(None);
        }
        if sql::advance_ack(db, conversation_id, ECHO_AGENT_ID, member.ack_seq, seq).await? {
            return Ok(Some(member.ack_seq));
        }
    }
}

/// Streams `message`'s body back word by word, then completes it; false when refused for
/// good (the agent is no longer a member).
async fn echo<A: Adapter>(hub: &Hub<A>, link: &AgentLink<A>, message: &Message) -> bool {
    let stream_id = format!("echo-{}", message.id);
    let delay = Duration::from_millis(hub.limits.echo_word_delay_ms);
    for (index, delta) in words(&message.body, hub.limits.max_delta_bytes).enumerate() {
        if index > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let chunk = StreamChunk {
            conversation_id: message.conversation_id.clone(),
            stream_id: stream_id.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            delta: delta.to_owned(),
        };
        let answer = submit(link, |reply| Job::Chunk(chunk, reply)).await;
        if refused_for_good(&answer) {
            return false;
        }
    }
    let complete =
        StreamComplete { conversation_id: message.conversation_id.clone(), stream_id, body: message.body.clone() };
    let answer = submit(link, |reply| Job::Complete(complete, reply)).await;
    !refused_for_good(&answer)
}

/// Queues a job and waits for its answer.
async fn submit<A: Adapter>(link: &AgentLink<A>, job: impl FnOnce(Reply<A>) -> Job<A>) -> Value {
    let (reply, answer) = oneshot::channel();
    let mut job = job(Reply::Wait(reply));
    // Waiting for room: the echo agent is the only one that waits rather than is refused.
    let mut pause = Duration::from_millis(5);
    loop {
        match link.submit(job) {
            Ok(()) => break,
            Err(back) => {
                job = *back;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
    answer.await.unwrap_or(Value::Null)
}

fn refused_for_good(answer: &Value) -> bool {
    answer["ok"] != true && answer["error"]["code"] == "forbidden"
}

/// `body` in words, each with the white space after it (so the chunks add up to the body),
/// a word longer than `max_bytes` cut at character boundaries.
fn words(body: &str, max_bytes: usize) -> impl Iterator<Item = &str> {
    body.split_inclusive(char::is_whitespace).flat_map(move |word| {
        let mut rest = word;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let mut end = rest.len().min(max_bytes.max(4));
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let (piece, tail) = rest.split_at(end);
            rest = tail;
            Some(piece)
        })
    })
}

/// The turn of one conversation's answers on this node: one of a fixed set of locks, by hash
/// of the conversation id.
fn turn(conversation_id: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    static TURNS: std::sync::LazyLock<Vec<tokio::sync::Mutex<()>>> =
        std::sync::LazyLock::new(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(conversation_id);
    &TURNS[(hash % TURNS.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::{ECHO_AGENT_EMAIL, words};

    #[test]
    fn the_echo_agent_is_a_built_in_account() {
        assert!(ECHO_AGENT_EMAIL.ends_with(&format!("@{}", crate::storage::users::BUILTIN_EMAIL_DOMAIN)));
    }

    #[test]
    fn words_add_up_to_the_body_and_respect_the_size() {
        let body = "hello  big wide\nworld ééééé";
        assert_eq!(words(body, 100).collect::<Vec<_>>(), ["hello ", " ", "big ", "wide\n", "world ", "ééééé"]);
        assert_eq!(words(body, 100).collect::<String>(), body);
        let long = "é".repeat(10);
        let pieces: Vec<&str> = words(&long, 5).collect();
        assert!(pieces.iter().all(|p| p.len() <= 5), "{pieces:?}");
        assert_eq!(pieces.concat(), long);
    }
}
