//! Ordered delivery: every socket receives each conversation's messages as `message:new` in
//! `seq` order, without a gap or a duplicate, whether they come from a replay (`sync`) or
//! live, and however the live events race each other.
//!
//! Each socket has a [`SocketDelivery`]: per conversation, the last `seq` sent to it on this
//! connection, behind one async mutex. Everything that sends `message:new` to the socket
//! holds that mutex:
//!
//! - `sync` replays, per conversation, from the client's position (or the stored delivery
//!   position for a conversation it does not name) until the database has no more, and
//!   records where it stopped. Live messages for this socket wait on the mutex meanwhile.
//! - A live message (from the bus, on every node: [`start`]) with `seq` at or below the
//!   socket's position was already sent and is dropped; one right after it is sent; one
//!   further on means the socket missed some (a concurrent sender's event not yet here, a
//!   node that lagged on the bus), and the gap is read from the database first. When seq n
//!   is committed so is every seq below it, so the read finds the whole gap.
//!
//! Before its first `sync` a socket gets no `message:new`: it cannot be told the missing
//! ones in order until it says what it has. Clients send `sync` on every connect.
//!
//! A live message is encoded once, whatever the size of its room. The common case (the
//! socket idle, synced, and this message the next one it should get) is sent in place by
//! [`SocketDelivery::try_live`]; only a socket that is busy, behind or full gets a task.
//!
//! The bus is also how membership changes reach each node's sockets (joining or leaving the
//! conversation's room) and how other modules' `notification`s reach a user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::broadcast::error::RecvError;

use super::{Change, ConversationError, Message};
use crate::bus::{Bus, Event, EventKind};
use crate::realtime::user_room;
use crate::storage::Db;
use crate::storage::conversations as sql;

/// How long a socket whose buffer stays full may hold up a send before it is disconnected
/// (it then resumes with `sync`, losing nothing).
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// The Socket.io room of a conversation's live sockets.
pub fn conversation_room(conversation_id: &str) -> String {
    format!("conversation:{conversation_id}")
}

/// What has been sent to one socket.
#[derive(Debug)]
pub struct SocketDelivery {
    user_id: String,
    state: tokio::sync::Mutex<DeliveryState>,
}

#[derive(Debug, Default)]
struct DeliveryState {
    synced: bool,
    /// Per conversation, the last seq sent to this socket.
    sent: HashMap<String, i64>,
}

/// The socket closed (or stalled) during a delivery.
#[derive(Debug)]
pub struct Gone;

impl SocketDelivery {
    pub fn new(user_id: &str) -> Self {
        Self { user_id: user_id.to_owned(), state: tokio::sync::Mutex::default() }
    }

    /// Replays what the client is missing, per conversation of its user, and returns where
    /// each now stands. `named` are the client's positions; a conversation it does not name
    /// starts at the stored delivery position. A named conversation the user is not a member
    /// of refuses the whole sync before anything is sent.
    pub async fn sync<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        db: &Db,
        batch: u32,
        named: &HashMap<String, i64>,
    ) -> Result<HashMap<String, i64>, SyncError> {
        let mut state = self.state.lock().await;
        let conversations = super::all_of(db, &self.user_id).await?;
        if named.keys().any(|id| !conversations.iter().any(|c| &c.id == id)) {
            return Err(SyncError::Conversation(ConversationError::Forbidden));
        }
        let mut positions = HashMap::with_capacity(conversations.len());
        for conversation in conversations {
            let client = named.get(&conversation.id).copied().unwrap_or(conversation.ack_seq);
            // A client cannot have more than exists; what is already on its way on this
            // connection is not sent twice.
            let mut from = client.clamp(0, conversation.last_seq);
            if let Some(sent) = state.sent.get(&conversation.id) {
                from = from.max(*sent);
            }
            let reached = send_range(socket, db, &conversation.id, from, i64::MAX, batch, "replay").await?;
            state.sent.insert(conversation.id.clone(), reached);
            positions.insert(conversation.id, reached);
        }
        state.synced = true;
        Ok(positions)
    }

    /// Delivers a live message now if that needs neither waiting nor the database: the socket
    /// is not being sent to, and the message is the next one it should get (or one it had, or
    /// it has not synced). False when it needs [`Self::live`]: the socket is busy, has missed
    /// some, joined the conversation since its sync, or its buffer is full.
    pub fn try_live<A: Adapter>(&self, socket: &SocketRef<A>, live: &Live) -> bool {
        let Ok(mut state) = self.state.try_lock() else { return false };
        if !state.synced {
            return true;
        }
        let Some(sent) = state.sent.get_mut(&live.message.conversation_id) else { return false };
        if live.message.seq <= *sent {
            return true;
        }
        if live.message.seq != *sent + 1 {
            return false;
        }
        match socket.emit("message:new", &*live.payload) {
            Ok(()) => {
                *sent = live.message.seq;
                count_out("live");
                true
            }
            Err(SendError::Socket(SocketError::InternalChannelFull)) => false,
            // Closed: its next connection syncs.
            Err(_) => true,
        }
    }

    /// Sends a live message, after any the socket has not had yet, unless it already had it.
    pub async fn live<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        db: &Db,
        batch: u32,
        live: &Live,
    ) -> Result<(), SyncError> {
        let mut state = self.state.lock().await;
        if !state.synced {
            return Ok(());
        }
        let message = &live.message;
        let conversation_id = &message.conversation_id;
        let from = match state.sent.get(conversation_id) {
            Some(sent) => *sent,
            // A conversation joined since the sync: from the member's stored position.
            None => match sql::membership(db, conversation_id, &self.user_id).await? {
                Some(member) => member.ack_seq.min(message.seq - 1),
                None => return Ok(()),
            },
        };
        if message.seq <= from {
            return Ok(());
        }
        let reached = if message.seq == from + 1 {
            emit(socket, &live.payload).await?;
            count_out("live");
            message.seq
        } else {
            let reached = send_range(socket, db, conversation_id, from, message.seq + 1, batch, "gap").await?;
            if reached < message.seq {
                // Not in the database any more (retention): sent as it came.
                emit(socket, &live.payload).await?;
                count_out("live");
            }
            message.seq
        };
        state.sent.insert(conversation_id.clone(), reached);
        Ok(())
    }
}

/// Why a sync or a delivery stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    #[error("the socket closed")]
    Gone,
}

impl From<sqlx::Error> for SyncError {
    fn from(e: sqlx::Error) -> Self {
        Self::Conversation(ConversationError::Storage(e))
    }
}

impl From<Gone> for SyncError {
    fn from(_: Gone) -> Self {
        Self::Gone
    }
}

/// A live message and its `message:new` payload, encoded once for all its sockets.
#[derive(Debug)]
pub struct Live {
    pub message: Message,
    payload: Box<RawValue>,
}

impl Live {
    pub fn new(message: Message) -> Result<Self, serde_json::Error> {
        let payload = serde_json::value::to_raw_value(&NewMessage { message: &message })?;
        Ok(Self { message, payload })
    }
}

/// The `message:new` payload: `{"message": …}`.
#[derive(Serialize)]
struct NewMessage<'a> {
    message: &'a Message,
}

fn count_out(how: &'static str) {
    metrics::counter!("conversation_messages_delivered_total", "how" => how).increment(1);
}

/// Sends the messages with `after < seq < before`, in order, reading `batch` at a time;
/// returns the last seq sent (`after` when none).
async fn send_range<A: Adapter>(
    socket: &SocketRef<A>,
    db: &Db,
    conversation_id: &str,
    after: i64,
    before: i64,
    batch: u32,
    how: &'static str,
) -> Result<i64, SyncError> {
    let mut reached = after;
    loop {
        let rows = sql::range(db, conversation_id, reached, before, i64::from(batch)).await?;
        let done = rows.len() < batch as usize;
        for row in rows {
            let seq = row.seq;
            emit(socket, &NewMessage { message: &Message::from(row) }).await?;
            count_out(how);
            if how == "replay" {
                metrics::counter!("conversation_messages_replayed_total").increment(1);
            }
            reached = seq;
        }
        if done {
            return Ok(reached);
        }
    }
}

/// Emits `message:new`, waiting while the socket's buffer is full.
async fn emit<A: Adapter, T: Serialize + ?Sized>(socket: &SocketRef<A>, payload: &T) -> Result<(), Gone> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match socket.emit("message:new", payload) {
            Ok(()) => return Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull)) if started.elapsed() < STALLED_AFTER => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                tracing::info!(target: "atom::realtime", sid = %socket.id, "socket.io client not reading: disconnected");
                let _ = socket.clone().disconnect();
                return Err(Gone);
            }
            Err(_) => return Err(Gone),
        }
    }
}

/// What the bus task needs.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub db: Db,
    pub replay_batch: u32,
}

/// Delivers the bus's conversation events and notifications to this node's sockets, until
/// aborted.
pub fn start<A: Adapter>(io: SocketIo<A>, bus: &Bus, deliverer: Deliverer) -> tokio::task::AbortHandle {
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => handle(&io, &deliverer, event).await,
                Err(RecvError::Lagged(missed)) => {
                    // The next message of each conversation fills its gap from the database.
                    metrics::counter!("realtime_bus_events_missed_total").increment(missed);
                    tracing::warn!(target: "atom::realtime", missed, "bus events missed by conversation delivery");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
    .abort_handle()
}

async fn handle<A: Adapter>(io: &SocketIo<A>, deliverer: &Deliverer, event: Event) {
    match event.kind {
        EventKind::MessageStored { message } => {
            let live = match Live::new(message) {
                Ok(live) => Arc::new(live),
                Err(e) => {
                    // Not reachable for a `Message`; its sockets would get it by gap or sync.
                    return tracing::error!(target: "atom::realtime", error = %e, "message not encoded");
                }
            };
            for socket in io.local().to(conversation_room(&live.message.conversation_id)).sockets() {
                let Some(delivery) = socket.extensions.get::<Arc<SocketDelivery>>() else { continue };
                if delivery.try_live(&socket, &live) {
                    continue;
                }
                let (live, deliverer) = (Arc::clone(&live), deliverer.clone());
                tokio::spawn(async move {
                    if let Err(SyncError::Conversation(e)) =
                        delivery.live(&socket, &deliverer.db, deliverer.replay_batch, &live).await
                    {
                        // The socket misses this one until its next message or sync.
                        tracing::warn!(target: "atom::realtime", sid = %socket.id, error = %crate::error::ErrorChain(&e), "live delivery failed");
                    }
                });
            }
        }
        EventKind::ConversationChanged { conversation_id, change } => {
            let room = conversation_room(&conversation_id);
            let payload = serde_json::json!({ "conversation_id": conversation_id, "change": change });
            match &change {
                Change::Created { member_ids } => {
                    for member in member_ids {
                        for socket in io.local().to(user_room(member)).sockets() {
                            socket.join(room.clone());
                        }
                    }
                    let _ = io.local().to(room).emit("conversation:updated", &payload).await;
                }
                Change::MemberAdded { user_id } => {
                    for socket in io.local().to(user_room(user_id)).sockets() {
                        socket.join(room.clone());
                    }
                    let _ = io.local().to(room).emit("conversation:updated", &payload).await;
                }
                Change::MemberRemoved { user_id } => {
                    let _ = io.local().to(room.clone()).emit("conversation:updated", &payload).await;
                    for socket in io.local().to(user_room(user_id)).sockets() {
                        socket.leave(room.clone());
                    }
                }
            }
        }
        EventKind::Notification { notification_type, data } => {
            let payload = serde_json::json!({ "type": notification_type, "data": data });
            if io.local().to(user_room(&event.user_id)).emit("notification", &payload).await.is_ok() {
                metrics::counter!("realtime_events_out_total", "event" => "notification").increment(1);
            }
        }
        _ => {}
    }
}
