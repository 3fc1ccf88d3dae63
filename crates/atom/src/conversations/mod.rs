//! Conversations: members, persisted messages numbered per conversation, and each member's
//! delivery position. Plain functions over [`Db`] and [`Bus`], shared by the REST routes
//! ([`routes`]) and the Socket.io events ([`socket`]), so a send is the same whichever way
//! it arrives.
//!
//! Invariants:
//! - Only members read, send to or acknowledge in a conversation; anything else is
//!   [`ConversationError::Forbidden`], whether the conversation exists or not, and stores
//!   nothing.
//! - A message's `seq` is gapless and unique within its conversation under concurrent
//!   senders (see [`crate::storage::conversations`]); when seq n is committed, so is every
//!   seq below it, which is what live delivery's gap filling relies on ([`delivery`]).
//! - A send with a `client_msg_id` the sender already used in that conversation stores
//!   nothing and returns the first message.
//! - Events are published on the bus only after the commit, so nobody hears of a message
//!   that a rollback could take back.

pub mod agent;
pub mod agent_events;
pub mod delivery;
pub mod echo;
pub mod presence;
pub mod retention;
pub mod routes;
pub mod socket;
pub mod streams;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::bus::{Bus, Event, EventKind};
use crate::config::ConversationsConfig;
use crate::error::{ApiError, FieldError};
use crate::storage::conversations::{self as sql, ConversationRow, MembershipRow, MessageRow};
use crate::storage::{Db, now_ms, users};
use crate::wire::rfc3339;

/// A stored message, as clients receive it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    /// Its number in the conversation: 1, 2, 3, … without gaps.
    pub seq: i64,
    pub sender_id: String,
    /// The sender's id for the send, which makes a retried send idempotent.
    pub client_msg_id: String,
    pub body: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Who spoke: a user, or an agent (a connection with an `agent`-scoped key).
    #[serde(default)]
    pub sender_kind: SenderKind,
    /// For an agent's streamed reply, the `stream_id` of its `agent:streaming` chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    #[default]
    User,
    Agent,
}

impl SenderKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
        }
    }

    /// What a caller's messages are: an agent's when it acts through an `agent`-scoped key.
    pub fn of(principal: &crate::identity::Principal) -> Self {
        if principal.is_agent() { Self::Agent } else { Self::User }
    }
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Self {
            id: row.id,
            conversation_id: row.conversation_id,
            seq: row.seq,
            sender_id: row.sender_id,
            client_msg_id: row.client_msg_id,
            body: row.body,
            created_at: rfc3339(row.created_at),
            sender_kind: if row.sender_kind == "agent" { SenderKind::Agent } else { SenderKind::User },
            stream_id: row.stream_id,
        }
    }
}

/// A conversation as one of its members sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationView {
    pub id: String,
    pub title: Option<String>,
    pub owner_id: String,
    /// The seq of its latest message (0: none yet).
    pub last_seq: i64,
    /// The caller's delivery position: everything up to it was acknowledged.
    pub ack_seq: i64,
    /// Messages after `ack_seq`.
    pub unread: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Present on `GET /v1/conversations/{id}` and on creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_ids: Option<Vec<String>>,
}

impl From<MembershipRow> for ConversationView {
    fn from(row: MembershipRow) -> Self {
        Self {
            unread: (row.last_seq - row.ack_seq).max(0),
            id: row.id,
            title: row.title,
            owner_id: row.owner_id,
            last_seq: row.last_seq,
            ack_seq: row.ack_seq,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            member_ids: None,
        }
    }
}

/// Why a conversation operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// Not a member (or no such conversation): nothing is said about which.
    #[error("only members of the conversation may do this")]
    Forbidden,
    /// An agent's event from a credential without the `agent` scope.
    #[error("only an API key with the agent scope may act as an agent")]
    NotAgent,
    /// Fields that fail validation, all of them.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// The user to add or remove does not exist or is not a member.
    #[error("no such user or member")]
    NotFound,
    #[error("storage failed")]
    Storage(#[from] sqlx::Error),
}

impl ConversationError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<ConversationError> for ApiError {
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::Forbidden => Self::Forbidden("Only members of the conversation may do this.".to_owned()),
            ConversationError::NotAgent => {
                Self::Forbidden("Only an API key with the agent scope may act as an agent.".to_owned())
            }
            ConversationError::Invalid(errors) => Self::Validation(errors),
            ConversationError::NotFound => Self::NotFound,
            ConversationError::Storage(e) => Self::from(e),
        }
    }
}

/// Who acts: a user, and whether the account is an admin.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user_id: &'a str,
    pub is_admin: bool,
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str, max_bytes: usize) {
    if value.len() > max_bytes {
        errors.push(FieldError::new(field, format!("must be at most {max_bytes} bytes")));
    }
    if value.chars().any(|c| c == '\0') {
        errors.push(FieldError::new(field, "must not contain NUL"));
    }
}

/// Creates a conversation owned by `owner` with `member_ids` (the owner is always a member).
pub async fn create(
    db: &Db,
    bus: &Bus,
    limits: &ConversationsConfig,
    owner: &str,
    title: Option<&str>,
    member_ids: &[String],
) -> Result<ConversationView, ConversationError> {
    let mut errors = Vec::new();
    let title = title.map(str::trim).filter(|t| !t.is_empty());
    if let Some(title) = title {
        check_text(&mut errors, "title", title, limits.max_title_bytes);
    }
    let mut members: Vec<String> = Vec::with_capacity(member_ids.len() + 1);
    members.push(owner.to_owned());
    for id in member_ids {
        if id.is_empty() || id.len() > 64 {
            errors.push(FieldError::new("member_ids", "each must be a user id"));
            break;
        }
        if !members.contains(id) {
            members.push(id.clone());
        }
    }
    if members.len() > limits.max_members as usize {
        errors.push(FieldError::new("member_ids", format!("at most {} members", limits.max_members)));
    }
    if !errors.is_empty() {
        return Err(ConversationError::Invalid(errors));
    }
    for id in &members[1..] {
        if !is_active_user(db, id).await? {
            return Err(ConversationError::invalid("member_ids", format!("no such user: {id}")));
        }
    }
    let now = now_ms();
    let row = ConversationRow {
        id: uuid::Uuid::new_v4().to_string(),
        title: title.map(str::to_owned),
        owner_id: owner.to_owned(),
        last_seq: 0,
        created_at: now,
        updated_at: now,
    };
    let mut tx = db.begin().await?;
    sql::insert_conversation(&mut tx, &row).await?;
    for member in &members {
        sql::insert_member(&mut tx, &row.id, member, 0, now).await?;
    }
    tx.commit().await?;
    let mut view = ConversationView::from(MembershipRow {
        id: row.id,
        title: row.title,
        owner_id: row.owner_id,
        last_seq: 0,
        created_at: now,
        updated_at: now,
        ack_seq: 0,
    });
    members.sort();
    view.member_ids = Some(members.clone());
    let change = Change::Created { member_ids: members };
    publish_change(bus, &view.id, owner, change).await;
    Ok(view)
}

async fn is_active_user(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    Ok(users::by_id(db, id).await?.is_some_and(|u| u.disabled_at.is_none()))
}

/// The caller's membership, or [`ConversationError::Forbidden`].
pub async fn membership(db: &Db, conversation_id: &str, user_id: &str) -> Result<MembershipRow, ConversationError> {
    if conversation_id.is_empty() || conversation_id.len() > 64 {
        return Err(ConversationError::Forbidden);
    }
    sql::membership(db, conversation_id, user_id).await?.ok_or(ConversationError::Forbidden)
}

/// One conversation with its members, for a member.
pub async fn get(db: &Db, conversation_id: &str, user_id: &str) -> Result<ConversationView, ConversationError> {
    let row = membership(db, conversation_id, user_id).await?;
    let mut view = ConversationView::from(row);
    view.member_ids = Some(sql::member_ids(db, conversation_id).await?);
    Ok(view)
}

/// A page of the user's conversations by id, after `cursor` (the last id of the previous page).
pub async fn list(
    db: &Db,
    user_id: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Vec<ConversationView>, Option<String>), ConversationError> {
    let rows = sql::list_for_user(db, user_id, cursor.unwrap_or(""), i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    let views: Vec<ConversationView> = rows.into_iter().take(limit as usize).map(ConversationView::from).collect();
    let next = if more { views.last().map(|v| v.id.clone()) } else { None };
    Ok((views, next))
}

/// Every conversation of the user with its positions, for `sync` and for joining rooms.
pub async fn all_of(db: &Db, user_id: &str) -> Result<Vec<MembershipRow>, sqlx::Error> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = sql::list_for_user(db, user_id, &after, 500).await?;
        let done = page.len() < 500;
        if let Some(last) = page.last() {
            after = last.id.clone();
        }
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// What changed in a conversation's membership, as `conversation:updated` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// The conversation was created with these members.
    Created {
        member_ids: Vec<String>,
    },
    MemberAdded {
        user_id: String,
    },
    MemberRemoved {
        user_id: String,
    },
}

/// Adds `user_id` to the conversation (a member or an admin may). A new member's delivery
/// position starts at the conversation's latest message: it is not sent the history, which
/// it can read page by page. Returns false when the user already was a member.
pub async fn add_member(
    db: &Db,
    bus: &Bus,
    limits: &ConversationsConfig,
    actor: Actor<'_>,
    conversation_id: &str,
    user_id: &str,
) -> Result<bool, ConversationError> {
    if user_id.is_empty() || user_id.len() > 64 {
        return Err(ConversationError::invalid("user_id", "must be a user id"));
    }
    if !actor.is_admin {
        membership(db, conversation_id, actor.user_id).await?;
    }
    if !is_active_user(db, user_id).await? {
        return Err(ConversationError::invalid("user_id", "no such user"));
    }
    let mut tx = db.begin().await?;
    let Some(conversation) = sql::lock(&mut tx, conversation_id).await? else {
        return Err(ConversationError::Forbidden);
    };
    if sql::member_count(&mut tx, conversation_id).await? >= i64::from(limits.max_members) {
        return Err(ConversationError::invalid("user_id", format!("at most {} members", limits.max_members)));
    }
    let added = sql::insert_member(&mut tx, conversation_id, user_id, conversation.last_seq, now_ms()).await?;
    tx.commit().await?;
    if added {
        let change = Change::MemberAdded { user_id: user_id.to_owned() };
        publish_change(bus, conversation_id, user_id, change).await;
    }
    Ok(added)
}

/// Removes `user_id`: a member may leave; the owner or an admin removes others.
pub async fn remove_member(
    db: &Db,
    bus: &Bus,
    actor: Actor<'_>,
    conversation_id: &str,
    user_id: &str,
) -> Result<(), ConversationError> {
    let leaving = actor.user_id == user_id;
    if !actor.is_admin {
        let own = membership(db, conversation_id, actor.user_id).await?;
        if !leaving && own.owner_id != actor.user_id {
            return Err(ConversationError::Forbidden);
        }
    }
    let mut tx = db.begin().await?;
    if !sql::remove_member(&mut tx, conversation_id, user_id).await? {
        return Err(ConversationError::NotFound);
    }
    tx.commit().await?;
    let change = Change::MemberRemoved { user_id: user_id.to_owned() };
    publish_change(bus, conversation_id, user_id, change).await;
    Ok(())
}

async fn publish_change(bus: &Bus, conversation_id: &str, user_id: &str, change: Change) {
    let kind = EventKind::ConversationChanged { conversation_id: conversation_id.to_owned(), change };
    bus.publish(Event { user_id: user_id.to_owned(), kind }).await;
}

/// A send's input, before validation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The sender's own id for this send (at most 128 bytes): a retry with the same one
    /// stores nothing and returns the first message.
    pub client_msg_id: String,
    pub body: String,
}

/// A stored send: the message, and whether this call stored it (false: a retry).
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    pub created: bool,
}

/// Who sends: the account, and whether it speaks as an agent.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub user_id: &'a str,
    pub kind: SenderKind,
}

/// Validates and stores a message from the user `sender`, then publishes it on the bus.
pub async fn send(
    db: &Db,
    bus: &Bus,
    limits: &ConversationsConfig,
    sender: &str,
    conversation_id: &str,
    input: &SendMessage,
) -> Result<Sent, ConversationError> {
    send_from(db, bus, limits, Sender { user_id: sender, kind: SenderKind::User }, conversation_id, input).await
}

/// [`send`] for a sender of either kind: the REST route and `message:send` mark what an
/// `agent`-scoped key sends as the agent's.
pub async fn send_from(
    db: &Db,
    bus: &Bus,
    limits: &ConversationsConfig,
    sender: Sender<'_>,
    conversation_id: &str,
    input: &SendMessage,
) -> Result<Sent, ConversationError> {
    let mut errors = Vec::new();
    if input.client_msg_id.is_empty() {
        errors.push(FieldError::new("client_msg_id", "must not be empty"));
    }
    check_text(&mut errors, "client_msg_id", &input.client_msg_id, limits.max_client_msg_id_bytes);
    if input.body.trim().is_empty() {
        errors.push(FieldError::new("body", "must not be empty"));
    }
    check_text(&mut errors, "body", &input.body, limits.max_body_bytes);
    if !errors.is_empty() {
        return Err(ConversationError::Invalid(errors));
    }
    let stored = Stored { sender, client_msg_id: &input.client_msg_id, body: &input.body, stream_id: None };
    store(db, bus, conversation_id, stored).await
}

/// A validated message to store.
struct Stored<'a> {
    sender: Sender<'a>,
    client_msg_id: &'a str,
    body: &'a str,
    stream_id: Option<&'a str>,
}

/// Stores a validated message (or finds the first one with its client id), then publishes it.
async fn store(db: &Db, bus: &Bus, conversation_id: &str, input: Stored<'_>) -> Result<Sent, ConversationError> {
    let sender = input.sender.user_id;
    membership(db, conversation_id, sender).await?;
    // Senders of one conversation take turns here before they take a pooled connection:
    // waiting on the row lock instead would hold a connection each, and a burst into one
    // conversation would exhaust the pool for everyone. The row lock still orders senders
    // on different nodes.
    let _turn = send_turn(conversation_id).lock().await;
    let now = now_ms();
    let mut tx = db.begin().await?;
    // The number first: it takes the lock that serialises this conversation's senders, after
    // which an earlier send with the same client id is committed and visible.
    let Some(seq) = sql::next_seq(&mut tx, conversation_id, now).await? else {
        return Err(ConversationError::Forbidden);
    };
    if let Some(first) = sql::by_client_id(&mut tx, conversation_id, sender, input.client_msg_id).await? {
        // Dropping the transaction rolls the number back.
        if first.stream_id.as_deref() != input.stream_id {
            // A plain send and a streamed reply never share a client id.
            let field = if input.stream_id.is_some() { "stream_id" } else { "client_msg_id" };
            return Err(ConversationError::invalid(field, "is already used by another message"));
        }
        return Ok(Sent { message: Message::from(first), created: false });
    }
    if sql::membership_in(&mut tx, conversation_id, sender).await?.is_none() {
        // Removed since the check above.
        return Err(ConversationError::Forbidden);
    }
    let row = MessageRow {
        id: uuid::Uuid::new_v4().to_string(),
        conversation_id: conversation_id.to_owned(),
        seq,
        sender_id: sender.to_owned(),
        client_msg_id: input.client_msg_id.to_owned(),
        body: input.body.to_owned(),
        created_at: now,
        sender_kind: input.sender.kind.as_str().to_owned(),
        stream_id: input.stream_id.map(str::to_owned),
    };
    sql::insert_message(&mut tx, &row).await?;
    tx.commit().await?;
    metrics::counter!("conversation_messages_stored_total").increment(1);
    let message = Message::from(row);
    bus.publish(Event { user_id: sender.to_owned(), kind: EventKind::MessageStored { message: message.clone() } })
        .await;
    Ok(Sent { message, created: true })
}

/// The turn of a conversation's senders on this node: one of a fixed set of locks, by hash
/// of the conversation id (two conversations may share one, which only costs a wait).
fn send_turn(conversation_id: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    static TURNS: std::sync::LazyLock<Vec<tokio::sync::Mutex<()>>> =
        std::sync::LazyLock::new(|| (0..256).map(|_| tokio::sync::Mutex::new(())).collect());
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(conversation_id);
    &TURNS[(hash % TURNS.len() as u64) as usize]
}

/// A page of messages for a member, ascending by seq: after `after` (default 0), or, with
/// only `before`, the page just before it; `has_more` says whether the range goes on.
pub async fn page(
    db: &Db,
    user_id: &str,
    conversation_id: &str,
    after: Option<i64>,
    before: Option<i64>,
    limit: u32,
) -> Result<(Vec<Message>, bool), ConversationError> {
    membership(db, conversation_id, user_id).await?;
    let fetch = i64::from(limit) + 1;
    let mut rows = match (after, before) {
        (None, Some(before)) => {
            let rows = sql::before(db, conversation_id, before, fetch).await?;
            let more = rows.len() > limit as usize;
            let rows = rows.into_iter().skip(usize::from(more)).map(Message::from).collect();
            return Ok((rows, more));
        }
        (after, before) => {
            sql::range(db, conversation_id, after.unwrap_or(0), before.unwrap_or(i64::MAX), fetch).await?
        }
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows.into_iter().map(Message::from).collect(), more))
}

/// Records that the member's clients have everything up to `seq`; the stored position only
/// moves forward. Returns the position now stored.
pub async fn acknowledge(db: &Db, user_id: &str, conversation_id: &str, seq: i64) -> Result<i64, ConversationError> {
    let member = membership(db, conversation_id, user_id).await?;
    if seq < 0 || seq > member.last_seq {
        return Err(ConversationError::invalid("seq", format!("must be between 0 and {}", member.last_seq)));
    }
    if seq <= member.ack_seq {
        return Ok(member.ack_seq);
    }
    sql::ack(db, conversation_id, user_id, seq).await?;
    Ok(seq)
}
