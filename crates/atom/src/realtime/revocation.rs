//! Closing the live connections whose credentials ended: every node subscribes to the
//! [`crate::bus`] and disconnects its own sockets that an event names.
//!
//! Each admitted socket joins its user's room ([`user_room`]), so an event looks only at that
//! user's sockets on this node. What an event closes:
//!
//! - `account_disabled`: every socket of the user, whatever its credential;
//! - `sessions_revoked` (a password change): every socket opened with an access token;
//! - `session_revoked` (logout): the sockets opened with an access token of that session;
//! - `api_key_revoked`: the sockets opened with that key.
//!
//! The server sends `session:closing` with code `credential_revoked`, then a Socket.io
//! disconnect, so the client sees `disconnect` with the reason `io server disconnect` and, by
//! socket.io-client's rules, does not reconnect on its own: it must get a valid credential
//! first. Each node closes its own sockets (the event reaches every node through the bus), so
//! this works the same over either Socket.io adapter.
//!
//! A connection whose credential is checked just before a revocation commits and which joins
//! its room just after this node handled the event stays open until it closes: the window is
//! the few instructions between the check and the join in `admit`, too narrow to be worth a
//! second check on every connect.

use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::broadcast::error::RecvError;

use crate::bus::{Bus, Event, EventKind};
use crate::identity::{Credential, Principal};

/// The room of a user's sockets on this node.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// Starts closing this node's sockets as the bus reports ended credentials; runs until aborted.
pub(super) fn start<A: Adapter>(io: SocketIo<A>, bus: &Bus) -> tokio::task::AbortHandle {
    let mut events = bus.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => close_ended(&io, &event),
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("realtime_bus_events_missed_total").increment(missed);
                    tracing::warn!(target: "atom::realtime", missed, "bus events missed: some revoked sockets stay open");
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
    .abort_handle()
}

fn close_ended<A: Adapter>(io: &SocketIo<A>, event: &Event) {
    // This node's sockets only: every node handles the event for its own.
    for socket in io.local().to(user_room(&event.user_id)).sockets() {
        let Some(principal) = socket.extensions.get::<Principal>() else { continue };
        if !ends(&event.kind, &principal) {
            continue;
        }
        tracing::info!(
            target: "atom::realtime",
            sid = %socket.id,
            user_id = %event.user_id,
            reason = ?event.kind,
            "socket.io connection closed: its credential ended"
        );
        super::close_socket(socket, super::Closing::CredentialRevoked);
    }
}

/// Whether `kind` ends the credential `principal` connected with.
fn ends(kind: &EventKind, principal: &Principal) -> bool {
    match (kind, &principal.credential) {
        (EventKind::AccountDisabled, _) | (EventKind::SessionsRevoked, Credential::AccessToken { .. }) => true,
        (EventKind::SessionRevoked { session_id }, Credential::AccessToken { claims }) => {
            claims.sid.as_deref() == Some(session_id.as_str())
        }
        (EventKind::ApiKeyRevoked { key_id }, Credential::ApiKey { key_id: used, .. }) => used == key_id,
        _ => false,
    }
}
