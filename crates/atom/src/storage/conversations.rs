//! SQL of conversations, their members and their messages.
//!
//! A message's `seq` is taken by [`next_seq`] (an `UPDATE … RETURNING` of the conversation's
//! `last_seq`) in the transaction that inserts it: on PostgreSQL the row lock serialises
//! senders of one conversation until commit; on SQLite the transaction holds the database's
//! write lock from `BEGIN IMMEDIATE`. So when `seq` n is committed every seq below it is too.

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: String,
    pub title: Option<String>,
    pub owner_id: String,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A conversation as one member sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub id: String,
    pub title: Option<String>,
    pub owner_id: String,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub ack_seq: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub client_msg_id: String,
    pub body: String,
    pub created_at: i64,
    /// `user` or `agent`.
    pub sender_kind: String,
    /// The stream an agent's reply was streamed as.
    pub stream_id: Option<String>,
}

macro_rules! membership_columns {
    () => {
        "conversations.id, conversations.title, conversations.owner_id, conversations.last_seq, \
         conversations.created_at, conversations.updated_at, conversation_members.ack_seq"
    };
}

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, sender_id, client_msg_id, body, created_at, sender_kind, stream_id"
    };
}

/// Hot: every send, read and sync checks membership this way.
pub const MEMBERSHIP_SQL: &str = concat!(
    "SELECT ",
    membership_columns!(),
    " FROM conversation_members JOIN conversations ON conversations.id = conversation_members.conversation_id \
     WHERE conversation_members.conversation_id = $1 AND conversation_members.user_id = $2"
);
/// Hot: `GET /v1/conversations` and every `sync`, a page of one user's conversations by id
/// after the cursor `$2` (the first page starts after `''`).
pub const LIST_FOR_USER_SQL: &str = concat!(
    "SELECT ",
    membership_columns!(),
    " FROM conversation_members JOIN conversations ON conversations.id = conversation_members.conversation_id \
     WHERE conversation_members.user_id = $1 AND conversation_members.conversation_id > $2 \
     ORDER BY conversation_members.conversation_id LIMIT $3"
);
/// Hot: reading pages, replays and live gap fills, by `(conversation_id, seq)`, ascending.
pub const RANGE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4"
);
/// Hot: the page just before `$2`, newest first (the caller reverses it).
pub const BEFORE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
);
/// Hot: every send looks for an earlier one with the same client id.
pub const BY_CLIENT_ID_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND client_msg_id = $3"
);
/// Hot: every send takes the next number, locking the conversation's row until commit.
pub const NEXT_SEQ_SQL: &str =
    "UPDATE conversations SET last_seq = last_seq + 1, updated_at = $2 WHERE id = $1 RETURNING last_seq";
/// Hot: every `messages:ack`; the position only moves forward.
pub const ACK_SQL: &str = "UPDATE conversation_members SET ack_seq = $3 \
     WHERE conversation_id = $1 AND user_id = $2 AND ack_seq < $3";
/// Hot: the echo agent's claim of each message stored in one of its conversations.
pub const ADVANCE_ACK_SQL: &str = "UPDATE conversation_members SET ack_seq = $4 \
     WHERE conversation_id = $1 AND user_id = $2 AND ack_seq = $3";
/// Hot: presence, the users who share a conversation with `$1`.
pub const CO_MEMBERS_SQL: &str = "SELECT DISTINCT o.user_id FROM conversation_members m \
     JOIN conversation_members o ON o.conversation_id = m.conversation_id \
     WHERE m.user_id = $1 AND o.user_id <> $1";

pub async fn insert_conversation(tx: &mut Tx, row: &ConversationRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "conversations.insert", |conn| {
        sqlx::query(
            "INSERT INTO conversations (id, title, owner_id, last_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.title)
        .bind(&row.owner_id)
        .bind(row.last_seq)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Adds a member at delivery position `ack_seq`; false when it already was one.
pub async fn insert_member(
    tx: &mut Tx,
    conversation_id: &str,
    user_id: &str,
    ack_seq: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "conversation_members.insert", |conn| {
        sqlx::query(
            "INSERT INTO conversation_members (conversation_id, user_id, ack_seq, joined_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, conversation_id) DO NOTHING",
        )
        .bind(conversation_id)
        .bind(user_id)
        .bind(ack_seq)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

pub async fn remove_member(tx: &mut Tx, conversation_id: &str, user_id: &str) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "conversation_members.delete", |conn| {
        sqlx::query("DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2")
            .bind(conversation_id)
            .bind(user_id)
            .execute(conn)
            .await
            .map(|r| r.rows_affected() == 1)
    })
}

/// The conversation's row, locked (PostgreSQL) until the transaction ends: membership
/// changes of one conversation are serialised, so the member cap holds.
pub async fn lock(tx: &mut Tx, conversation_id: &str) -> Result<Option<ConversationRow>, sqlx::Error> {
    with_tx!(tx, "conversations.lock", |conn| {
        sqlx::query_as(
            "UPDATE conversations SET updated_at = updated_at WHERE id = $1 \
             RETURNING id, title, owner_id, last_seq, created_at, updated_at",
        )
        .bind(conversation_id)
        .fetch_optional(conn)
        .await
    })
}

pub async fn member_count(tx: &mut Tx, conversation_id: &str) -> Result<i64, sqlx::Error> {
    with_tx!(tx, "conversation_members.count", |conn| {
        sqlx::query_scalar("SELECT count(*) FROM conversation_members WHERE conversation_id = $1")
            .bind(conversation_id)
            .fetch_one(conn)
            .await
    })
}

pub async fn membership(db: &Db, conversation_id: &str, user_id: &str) -> Result<Option<MembershipRow>, sqlx::Error> {
    with_pool!(db, "conversation_members.membership", |conn| {
        sqlx::query_as(MEMBERSHIP_SQL).bind(conversation_id).bind(user_id).fetch_optional(conn).await
    })
}

pub async fn membership_in(
    tx: &mut Tx,
    conversation_id: &str,
    user_id: &str,
) -> Result<Option<MembershipRow>, sqlx::Error> {
    with_tx!(tx, "conversation_members.membership", |conn| {
        sqlx::query_as(MEMBERSHIP_SQL).bind(conversation_id).bind(user_id).fetch_optional(conn).await
    })
}

pub async fn list_for_user(
    db: &Db,
    user_id: &str,
    after_id: &str,
    limit: i64,
) -> Result<Vec<MembershipRow>, sqlx::Error> {
    with_pool!(db, "conversations.list_for_user", |conn| {
        sqlx::query_as(LIST_FOR_USER_SQL).bind(user_id).bind(after_id).bind(limit).fetch_all(conn).await
    })
}

pub async fn member_ids(db: &Db, conversation_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, "conversation_members.of_conversation", |conn| {
        sqlx::query_scalar("SELECT user_id FROM conversation_members WHERE conversation_id = $1 ORDER BY user_id")
            .bind(conversation_id)
            .fetch_all(conn)
            .await
    })
}

pub async fn co_member_ids(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_pool!(db, "conversation_members.co_members", |conn| {
        sqlx::query_scalar(CO_MEMBERS_SQL).bind(user_id).fetch_all(conn).await
    })
}

/// The next `seq` of the conversation, or `None` when it does not exist.
pub async fn next_seq(tx: &mut Tx, conversation_id: &str, now: i64) -> Result<Option<i64>, sqlx::Error> {
    with_tx!(tx, "conversations.next_seq", |conn| {
        sqlx::query_scalar(NEXT_SEQ_SQL).bind(conversation_id).bind(now).fetch_optional(conn).await
    })
}

pub async fn by_client_id(
    tx: &mut Tx,
    conversation_id: &str,
    sender_id: &str,
    client_msg_id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    with_tx!(tx, "messages.by_client_id", |conn| {
        sqlx::query_as(BY_CLIENT_ID_SQL)
            .bind(conversation_id)
            .bind(sender_id)
            .bind(client_msg_id)
            .fetch_optional(conn)
            .await
    })
}

pub async fn insert_message(tx: &mut Tx, row: &MessageRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "messages.insert", |conn| {
        sqlx::query(
            "INSERT INTO messages \
             (id, conversation_id, seq, sender_id, client_msg_id, body, created_at, sender_kind, stream_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.id)
        .bind(&row.conversation_id)
        .bind(row.seq)
        .bind(&row.sender_id)
        .bind(&row.client_msg_id)
        .bind(&row.body)
        .bind(row.created_at)
        .bind(&row.sender_kind)
        .bind(&row.stream_id)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Moves the member's delivery position from exactly `from` to `to`: false when it was not at
/// `from` any more (another node claimed those messages first).
pub async fn advance_ack(
    db: &Db,
    conversation_id: &str,
    user_id: &str,
    from: i64,
    to: i64,
) -> Result<bool, sqlx::Error> {
    with_pool!(db, "conversation_members.advance_ack", |conn| {
        sqlx::query(ADVANCE_ACK_SQL)
            .bind(conversation_id)
            .bind(user_id)
            .bind(from)
            .bind(to)
            .execute(conn)
            .await
            .map(|r| r.rows_affected() == 1)
    })
}

/// Messages with `after < seq < before`, ascending, at most `limit`.
pub async fn range(
    db: &Db,
    conversation_id: &str,
    after: i64,
    before: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    with_pool!(db, "messages.range", |conn| {
        sqlx::query_as(RANGE_SQL).bind(conversation_id).bind(after).bind(before).bind(limit).fetch_all(conn).await
    })
}

/// The `limit` messages just before `before`, ascending.
pub async fn before(db: &Db, conversation_id: &str, before: i64, limit: i64) -> Result<Vec<MessageRow>, sqlx::Error> {
    let mut rows: Vec<MessageRow> = with_pool!(db, "messages.before", |conn| {
        sqlx::query_as(BEFORE_SQL).bind(conversation_id).bind(before).bind(limit).fetch_all(conn).await
    })?;
    rows.reverse();
    Ok(rows)
}

/// Moves the member's delivery position forward to `seq`; false when it was already there.
pub async fn ack(db: &Db, conversation_id: &str, user_id: &str, seq: i64) -> Result<bool, sqlx::Error> {
    with_pool!(db, "conversation_members.ack", |conn| {
        sqlx::query(ACK_SQL)
            .bind(conversation_id)
            .bind(user_id)
            .bind(seq)
            .execute(conn)
            .await
            .map(|r| r.rows_affected() == 1)
    })
}

/// Deletes up to `limit` messages created before `cutoff`; how many it deleted.
pub async fn delete_older_than(db: &Db, cutoff: i64, limit: i64) -> Result<u64, sqlx::Error> {
    with_pool!(db, "messages.retention", |conn| {
        sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT id FROM messages WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })
}
