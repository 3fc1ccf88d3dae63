//! A user's live connections on every node, and disconnecting them.
//!
//! socketioxide's cross-node socket query (`fetch_sockets`) tells a socket's id and node but
//! nothing else, so each socket also sits in a room of its own that names what an operator
//! wants to see: `conn:{socket id}:{node id}:{transport}:{connected since, Unix ms}`. A user's
//! connections are then the rooms of the sockets in the user's room ([`super::user_room`]),
//! one query that the adapter answers from every node (with Redis) or from this one. The room
//! goes when its socket goes. The transport is the one the socket last used: a client that
//! upgrades from polling to websocket moves to a new room at its next event.

use std::sync::Arc;

use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::TransportType;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use utoipa::ToSchema;

use super::{Closing, user_room};

const PREFIX: &str = "conn:";

/// One live connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Connection {
    /// The Socket.io socket id.
    pub socket_id: String,
    /// The node serving it (its Socket.io server id, as `/status` shows it).
    pub node_id: String,
    /// `websocket` or `polling`.
    pub transport: String,
    /// RFC 3339.
    pub connected_at: String,
    #[serde(skip)]
    room: String,
}

/// What a socket's connection room was made from, kept in its extensions.
#[derive(Debug, Clone)]
pub(super) struct ConnectionRoom {
    room: Arc<str>,
    node_id: Arc<str>,
    transport: TransportType,
    since_ms: i64,
}

fn transport_name(transport: TransportType) -> &'static str {
    match transport {
        TransportType::Websocket => "websocket",
        TransportType::Polling => "polling",
    }
}

fn room_name<A: Adapter>(socket: &SocketRef<A>, node_id: &str, transport: TransportType, since_ms: i64) -> String {
    format!("{PREFIX}{}:{node_id}:{}:{since_ms}", socket.id, transport_name(transport))
}

/// Puts a new socket into its connection room.
pub(super) fn join<A: Adapter>(socket: &SocketRef<A>, node_id: &str) {
    let (transport, since_ms) = (socket.transport_type(), crate::storage::now_ms());
    let room: Arc<str> = room_name(socket, node_id, transport, since_ms).into();
    socket.join(room.to_string());
    socket.extensions.insert(ConnectionRoom { room, node_id: node_id.into(), transport, since_ms });
}

/// Moves the socket to the room of its current transport, if it changed since it joined.
pub(super) fn note_transport<A: Adapter>(socket: &SocketRef<A>) {
    let Some(joined) = socket.extensions.get::<ConnectionRoom>() else { return };
    let transport = socket.transport_type();
    if transport == joined.transport {
        return;
    }
    let room: Arc<str> = room_name(socket, &joined.node_id, transport, joined.since_ms).into();
    socket.leave(joined.room.to_string());
    socket.join(room.to_string());
    socket.extensions.insert(ConnectionRoom { room, transport, ..joined });
}

fn parse(room: &str) -> Option<Connection> {
    let mut parts = room.strip_prefix(PREFIX)?.split(':');
    let (socket_id, node_id, transport, since) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let since_ms: i64 = since.parse().ok()?;
    Some(Connection {
        socket_id: socket_id.to_owned(),
        node_id: node_id.to_owned(),
        transport: transport.to_owned(),
        connected_at: crate::wire::rfc3339(since_ms),
        room: room.to_owned(),
    })
}

/// Why the connections could not be listed or closed.
#[derive(Debug, thiserror::Error)]
#[error("the Socket.io adapter failed: {0}")]
pub struct AdapterFailed(pub(super) String);

/// The live connections of `user_id` on every node the adapter reaches, oldest first.
pub async fn list<A: Adapter>(io: &SocketIo<A>, user_id: &str) -> Result<Vec<Connection>, AdapterFailed> {
    let rooms = io.to(user_room(user_id)).rooms().await.map_err(|e| AdapterFailed(e.to_string()))?;
    let mut connections: Vec<Connection> = rooms.iter().filter_map(|room| parse(room)).collect();
    connections.sort_by(|a, b| (&a.connected_at, &a.socket_id).cmp(&(&b.connected_at, &b.socket_id)));
    connections.dedup_by(|a, b| a.socket_id == b.socket_id);
    Ok(connections)
}

/// Tells the sockets in `room` (on every node) why, then disconnects them.
pub async fn close_room<A: Adapter>(io: &SocketIo<A>, room: String, closing: Closing) -> Result<(), AdapterFailed> {
    let failed = |e: &dyn std::fmt::Display| AdapterFailed(e.to_string());
    metrics::counter!("realtime_events_out_total", "event" => super::CLOSING_EVENT).increment(1);
    io.to(room.clone()).emit(super::CLOSING_EVENT, &closing.payload()).await.map_err(|e| failed(&e))?;
    io.to(room).disconnect().await.map_err(|e| failed(&e))
}

/// Tells `connection`, on whichever node it is, that an admin closes it, and closes it.
pub async fn disconnect<A: Adapter>(io: &SocketIo<A>, connection: &Connection) -> Result<(), AdapterFailed> {
    close_room(io, connection.room.clone(), Closing::ByAdmin).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_room_reads_back_and_other_rooms_are_ignored() {
        let connection = parse("conn:AbC-_12:node1:websocket:1700000000000").expect("parsed");
        assert_eq!((connection.socket_id.as_str(), connection.node_id.as_str()), ("AbC-_12", "node1"));
        assert_eq!(connection.transport, "websocket");
        assert!(connection.connected_at.starts_with("2023-11-14T22:13:20"), "{}", connection.connected_at);
        for other in ["user:u1", "conn:", "conn:a:b:c", "conn:a:b:c:notanumber", "conversation:c1"] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
