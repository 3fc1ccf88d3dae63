//! Presence: `presence` `{user_id, status: "online"|"offline"}` to the users who share a
//! conversation with `user_id`, without flapping.
//!
//! This node counts each user's open sockets. The first one announces `online`, unless the
//! user's last socket here closed less than the grace period ago (a reconnect), in which case
//! nothing is said. When the last one closes, `offline` waits for the grace period and is
//! announced only if by then the user has no socket here and none on any other node (asked
//! through the adapter). A user connected on two nodes may be announced `online` twice, never
//! `offline` while a socket is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::realtime::user_room;
use crate::storage::Db;
use crate::storage::conversations as sql;

#[derive(Debug, Default)]
struct UserSockets {
    open: usize,
    /// The pending `offline` announcement, cancelled by a reconnect.
    going_offline: Option<tokio::task::AbortHandle>,
}

/// This node's presence book-keeping.
#[derive(Debug)]
pub struct Presence {
    grace: Duration,
    users: Mutex<HashMap<String, UserSockets>>,
}

impl Presence {
    pub fn new(grace: Duration) -> Self {
        Self { grace, users: Mutex::default() }
    }

    /// A socket of `user_id` opened.
    pub fn opened<A: Adapter>(&self, io: &SocketIo<A>, db: &Db, user_id: &str) {
        let announce = {
            let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = users.entry(user_id.to_owned()).or_default();
            entry.open += 1;
            match entry.going_offline.take() {
                Some(pending) => {
                    pending.abort();
                    false
                }
                None => entry.open == 1,
            }
        };
        if announce {
            let (io, db, user_id) = (io.clone(), db.clone(), user_id.to_owned());
            tokio::spawn(async move { announce_status(&io, &db, &user_id, "online").await });
        }
    }

    /// A socket of `user_id` closed.
    pub fn closed<A: Adapter>(self: &Arc<Self>, io: &SocketIo<A>, db: &Db, user_id: &str) {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = users.get_mut(user_id) else { return };
        entry.open = entry.open.saturating_sub(1);
        if entry.open > 0 {
            return;
        }
        let (presence, io, db, user) = (Arc::clone(self), io.clone(), db.clone(), user_id.to_owned());
        let task = tokio::spawn(async move {
            tokio::time::sleep(presence.grace).await;
            {
                let mut users = presence.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match users.get(&user) {
                    Some(entry) if entry.open == 0 => {
                        users.remove(&user);
                    }
                    _ => return,
                }
            }
            let elsewhere = io.to(user_room(&user)).fetch_sockets().await.map(|s| !s.is_empty()).unwrap_or(false);
            if !elsewhere {
                announce_status(&io, &db, &user, "offline").await;
            }
        });
        entry.going_offline = Some(task.abort_handle());
    }
}

async fn announce_status<A: Adapter>(io: &SocketIo<A>, db: &Db, user_id: &str, status: &'static str) {
    let others = match sql::co_member_ids(db, user_id).await {
        Ok(others) => others,
        Err(e) => {
            return tracing::warn!(target: "atom::realtime", error = %crate::error::ErrorChain(&e), "presence not announced");
        }
    };
    if others.is_empty() {
        return;
    }
    let rooms: Vec<String> = others.iter().map(|id| user_room(id)).collect();
    let payload = serde_json::json!({ "user_id": user_id, "status": status });
    if io.to(rooms).emit("presence", &payload).await.is_ok() {
        metrics::counter!("realtime_events_out_total", "event" => "presence").increment(1);
    }
}
