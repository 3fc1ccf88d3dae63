//! Conversations over Socket.io with the official socket.io-client (tests/peers), over
//! websocket and polling: two users chat; a third can neither send, read nor sync; missed
//! messages arrive in order on reconnect, exactly once, also while new ones arrive during the
//! replay; a retried send is stored once; 20 concurrent senders get gapless seqs; malformed
//! payloads and unknown events get error acks; typing, presence, membership changes and the
//! bus's notifications reach the right sockets.
//!
//! "No duplicate" is checked without waiting for silence: after the expected messages a
//! sentinel message is sent, and the next `message:new` must be exactly that one.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser};
use crate::conversations::{create_conversation, stored};
use crate::identity_support::post;
use crate::socket_peer::{Open, SocketPeer};

pub(crate) const TRANSPORTS: [&str; 2] = ["websocket", "polling"];

/// The application with room for many sockets and many polling requests from loopback.
pub(crate) async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "600000"),
        ("RATE_LIMIT_ANONYMOUS_BURST", "100000"),
        ("RATE_LIMIT_API_PER_MINUTE", "600000"),
        ("RATE_LIMIT_API_BURST", "100000"),
        ("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "200"),
        ("REALTIME_MAX_CONNECTIONS_PER_USER", "20"),
        ("DATABASE_POOL_SIZE", "8"),
    ];
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(&pairs, axum::Router::new()).await
}

fn open<'a>(app_url: &'a str, transport: &'a str, user: &'a TestUser) -> Open<'a> {
    Open { url: app_url, transport, token: &user.access_token, reconnection: false }
}

/// Stores a message through the domain, as a worker on this node would.
pub(crate) async fn store(app: &TestApp, sender: &TestUser, conversation: &str, client_msg_id: &str) -> i64 {
    let input = atom::conversations::SendMessage {
        client_msg_id: client_msg_id.to_owned(),
        body: format!("body of {client_msg_id}"),
    };
    let sent = atom::conversations::send(
        &app.state.db,
        &app.state.bus,
        &app.state.config.conversations,
        &sender.id,
        conversation,
        &input,
    )
    .await
    .expect("stored");
    sent.message.seq
}

/// The next `message:new` of `id`: its message.
pub(crate) async fn next_message(peer: &mut SocketPeer, id: &str) -> Value {
    peer.server_event(id, "message:new").await["message"].clone()
}

/// Receives `message:new` on `id` until seq `last` of `conversation` and returns the seqs.
pub(crate) async fn receive_until(peer: &mut SocketPeer, id: &str, conversation: &str, last: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < last {
        let message = next_message(peer, id).await;
        assert_eq!(message["conversation_id"], json!(conversation), "{message}");
        seqs.push(message["seq"].as_i64().expect("seq"));
        assert!(seqs.len() as i64 <= last + 1, "more messages than exist: {seqs:?}");
    }
    seqs
}

/// Sends a sentinel and asserts that the next `message:new` of `id` is exactly it: nothing
/// was delivered twice or late before it.
pub(crate) async fn assert_nothing_more(
    peer: &mut SocketPeer,
    id: &str,
    app: &TestApp,
    sender: &TestUser,
    conversation: &str,
) {
    let seq = store(app, sender, conversation, &format!("sentinel-{}", uuid::Uuid::new_v4())).await;
    let message = next_message(peer, id).await;
    assert_eq!(message["seq"], seq, "{id}: the next message after the expected ones is the sentinel: {message}");
}

async fn sync(peer: &mut SocketPeer, id: &str, positions: Value) -> Value {
    let ack = peer.call(id, "sync", json!({ "positions": positions })).await;
    assert_eq!(ack["ok"], true, "{id}: sync: {ack}");
    ack["positions"].clone()
}

fn range(from: i64, to: i64) -> Vec<i64> {
    (from..=to).collect()
}

#[tokio::test]
async fn two_users_chat_over_both_transports() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let (a, b) = (app.user("user").await, app.user("user").await);
        let conversation = create_conversation(&app, &a, &[&b]).await;
        let (ia, ib) = (format!("a-{transport}"), format!("b-{transport}"));
        peer.connected(&ia, open(&url, transport, &a)).await;
        peer.connected(&ib, open(&url, transport, &b)).await;
        assert_eq!(sync(&mut peer, &ia, json!({})).await, json!({ conversation.clone(): 0 }));
        sync(&mut peer, &ib, json!({})).await;

        let ack = peer
            .call(&ia, "message:send", json!({ "conversation_id": conversation, "client_msg_id": "1", "body": "hi b" }))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
        let sent = &ack["message"];
        assert_eq!(
            (sent["seq"].as_i64(), sent["sender_id"].as_str(), sent["body"].as_str()),
            (Some(1), Some(a.id.as_str()), Some("hi b"))
        );
        for field in ["id", "conversation_id", "client_msg_id", "created_at"] {
            assert!(sent[field].is_string(), "{field}: {sent}");
        }
        let received = next_message(&mut peer, &ib).await;
        assert_eq!(&received, sent, "b receives the message as stored");
        assert_eq!(&next_message(&mut peer, &ia).await, sent, "a's own socket gets it too (its other devices do)");

        let ack = peer
            .call(&ib, "message:send", json!({ "conversation_id": conversation, "client_msg_id": "1", "body": "hi a" }))
            .await;
        assert_eq!(ack["message"]["seq"], 2, "{ack}");
        assert_eq!(next_message(&mut peer, &ia).await["body"], "hi a");
        assert_eq!(next_message(&mut peer, &ib).await["seq"], 2);

        let ack = peer.call(&ib, "messages:ack", json!({ "conversation_id": conversation, "seq": 2 })).await;
        assert_eq!(ack, json!({ "ok": true, "ack_seq": 2 }));
        let view: Value =
            app.get_as(&b.access_token, &format!("/v1/conversations/{conversation}")).await.json().await.expect("json");
        assert_eq!((view["ack_seq"].as_i64(), view["unread"].as_i64()), (Some(2), Some(0)));
        peer.close(&ia).await;
        peer.close(&ib).await;
    }
}

#[tokio::test]
async fn a_third_user_cannot_join_read_or_send_and_nothing_is_stored() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let id = format!("c-{transport}");
        peer.connected(&id, open(&url, transport, &c)).await;
        assert_eq!(sync(&mut peer, &id, json!({})).await, json!({}), "c has no conversation");
        for (event, payload) in [
            ("message:send", json!({ "conversation_id": conversation, "client_msg_id": "x", "body": "intrusion" })),
            ("sync", json!({ "positions": { conversation.clone(): 0 } })),
            ("messages:ack", json!({ "conversation_id": conversation, "seq": 0 })),
            ("typing", json!({ "conversation_id": conversation })),
            ("message:send", json!({ "conversation_id": "no-such-conversation", "client_msg_id": "x", "body": "x" })),
        ] {
            let ack = peer.call(&id, event, payload).await;
            assert_eq!(ack["ok"], false, "{event}: {ack}");
            assert_eq!(ack["error"]["code"], "forbidden", "{event}: {ack}");
        }
    }
    // c's sockets are in no room of the conversation: a's message reaches b, not c.
    peer.connected("b", open(&url, "websocket", &b)).await;
    sync(&mut peer, "b", json!({})).await;
    store(&app, &a, &conversation, "for-b").await;
    assert_eq!(next_message(&mut peer, "b").await["seq"], 1);
    let leaked = peer.drain_server_events("c-websocket", "message:new", Duration::from_millis(300)).await;
    assert!(leaked.is_empty(), "{leaked:?}");
    assert_eq!(stored(&app, &conversation).await, 1);
}

#[tokio::test]
async fn messages_sent_while_offline_arrive_on_connect_and_a_new_device_gets_what_is_unacknowledged() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let (a, b) = (app.user("user").await, app.user("user").await);
        let first = create_conversation(&app, &a, &[&b]).await;
        let second = create_conversation(&app, &b, &[&a]).await;
        for i in 1..=5 {
            store(&app, &a, &first, &format!("f{i}")).await;
        }
        for i in 1..=3 {
            store(&app, &a, &second, &format!("s{i}")).await;
        }
        let id = format!("b-{transport}");
        peer.connected(&id, open(&url, transport, &b)).await;
        let positions = sync(&mut peer, &id, json!({})).await;
        assert_eq!(positions, json!({ first.clone(): 5, second.clone(): 3 }));
        let mut by_conversation: HashMap<String, Vec<i64>> = HashMap::new();
        for _ in 0..8 {
            let message = next_message(&mut peer, &id).await;
            by_conversation
                .entry(message["conversation_id"].as_str().expect("id").to_owned())
                .or_default()
                .push(message["seq"].as_i64().expect("seq"));
        }
        assert_eq!(by_conversation[&first], range(1, 5));
        assert_eq!(by_conversation[&second], range(1, 3));
        let ack = peer.call(&id, "messages:ack", json!({ "conversation_id": first, "seq": 4 })).await;
        assert_eq!(ack["ack_seq"], 4);
        peer.close(&id).await;

        // A new device: `{positions: {}}` replays what the account has not acknowledged.
        let device = format!("b2-{transport}");
        peer.connected(&device, open(&url, transport, &b)).await;
        let positions = sync(&mut peer, &device, json!({ second.clone(): 3 })).await;
        assert_eq!(positions, json!({ first.clone(): 5, second.clone(): 3 }));
        assert_eq!(next_message(&mut peer, &device).await["seq"], 5);
        assert_nothing_more(&mut peer, &device, &app, &a, &first).await;
        peer.close(&device).await;
    }
}

#[tokio::test]
async fn a_client_that_drops_mid_stream_reconnects_and_gets_exactly_the_missed_messages_in_order() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let (a, b) = (app.user("user").await, app.user("user").await);
        let conversation = create_conversation(&app, &a, &[&b]).await;
        let id = format!("b-{transport}");
        peer.connected(&id, Open { url: &url, transport, token: &b.access_token, reconnection: true }).await;
        sync(&mut peer, &id, json!({})).await;
        for i in 1..=10 {
            store(&app, &a, &conversation, &format!("m{i}")).await;
        }
        let got = receive_until(&mut peer, &id, &conversation, 10).await;
        assert_eq!(got, range(1, 10));

        // The network goes; the client's own reconnection brings it back.
        peer.drop_connection(&id).await;
        for i in 11..=25 {
            store(&app, &a, &conversation, &format!("m{i}")).await;
        }
        peer.reconnected(&id).await;
        let positions = sync(&mut peer, &id, json!({ conversation.clone(): 10 })).await;
        assert_eq!(positions[&conversation], 25);
        assert_eq!(receive_until(&mut peer, &id, &conversation, 25).await, range(11, 25));
        assert_nothing_more(&mut peer, &id, &app, &a, &conversation).await;
        peer.close(&id).await;
    }
}

#[tokio::test]
async fn live_messages_arriving_during_a_replay_leave_no_gap_and_no_duplicate() {
    let app = spawn(&[("CONVERSATIONS_REPLAY_BATCH", "50")]).await;
    let url = app.url("");
    let (a, b) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    for i in 1..=1000 {
        store(&app, &a, &conversation, &format!("old{i}")).await;
    }
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let id = format!("b-{transport}");
        peer.connected(&id, open(&url, transport, &b)).await;
        let before = stored(&app, &conversation).await as i64;
        // New messages keep arriving, from another task, while the replay runs.
        let writer = {
            let (state, a_id, conversation) = (app.state.clone(), a.id.clone(), conversation.clone());
            let transport = transport.to_owned();
            tokio::spawn(async move {
                for i in 1..=100 {
                    let input = atom::conversations::SendMessage {
                        client_msg_id: format!("new-{transport}-{i}"),
                        body: "live".to_owned(),
                    };
                    atom::conversations::send(
                        &state.db,
                        &state.bus,
                        &state.config.conversations,
                        &a_id,
                        &conversation,
                        &input,
                    )
                    .await
                    .expect("stored");
                    tokio::task::yield_now().await;
                }
            })
        };
        peer.send(json!({ "op": "emit", "id": id, "event": "sync", "data": { "positions": {} }, "ack": true, "timeout_ms": 60_000, "tag": "s" })).await;
        writer.await.expect("writer");
        let last = before + 100;
        let got = receive_until(&mut peer, &id, &conversation, last).await;
        assert_eq!(got, range(1, last), "{transport}: in order, no gap, no duplicate");
        let ack = peer.next_where(&id, "sync ack", |e| e["event"] == "ack" && e["tag"] == "s").await;
        assert_eq!(ack["ack"]["ok"], true, "{ack}");
        assert_nothing_more(&mut peer, &id, &app, &a, &conversation).await;
        peer.close(&id).await;
    }
}

#[tokio::test]
async fn a_retried_send_is_stored_and_delivered_once() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a)).await;
    peer.connected("b", open(&url, "polling", &b)).await;
    sync(&mut peer, "b", json!({})).await;
    let payload = json!({ "conversation_id": conversation, "client_msg_id": "retry-me", "body": "once" });
    let first = peer.call("a", "message:send", payload.clone()).await;
    let second = peer.call("a", "message:send", payload).await;
    assert_eq!((first["ok"].as_bool(), first["duplicate"].as_bool()), (Some(true), Some(false)), "{first}");
    assert_eq!((second["ok"].as_bool(), second["duplicate"].as_bool()), (Some(true), Some(true)), "{second}");
    assert_eq!(first["message"], second["message"]);
    assert_eq!(next_message(&mut peer, "b").await["seq"], 1);
    assert_nothing_more(&mut peer, "b", &app, &a, &conversation).await;
    assert_eq!(stored(&app, &conversation).await, 2, "the message and the sentinel");
}

#[tokio::test]
async fn twenty_clients_sending_concurrently_into_one_conversation_get_gapless_sequences() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let mut users = Vec::new();
    for _ in 0..20 {
        users.push(app.user("user").await);
    }
    let others: Vec<&TestUser> = users[1..].iter().collect();
    let conversation = create_conversation(&app, &users[0], &others).await;
    let mut peer = SocketPeer::start().await;
    for (i, user) in users.iter().enumerate() {
        let transport = TRANSPORTS[i % 2];
        peer.connected(&format!("u{i}"), open(&url, transport, user)).await;
    }
    let mut listener = SocketPeer::start().await;
    listener.connected("listener", open(&url, "websocket", &users[0])).await;
    sync(&mut listener, "listener", json!({})).await;
    // Every client emits all its sends at once, without waiting for acks.
    const PER_CLIENT: usize = 10;
    for round in 0..PER_CLIENT {
        for i in 0..users.len() {
            peer.send(json!({ "op": "emit", "id": format!("u{i}"), "event": "message:send", "ack": true, "timeout_ms": 60_000,
                "tag": format!("{i}-{round}"),
                "data": { "conversation_id": conversation, "client_msg_id": format!("{i}-{round}"), "body": "concurrent" } })).await;
        }
    }
    let mut seqs = Vec::new();
    for round in 0..PER_CLIENT {
        for i in 0..users.len() {
            let tag = format!("{i}-{round}");
            let ack =
                peer.next_where(&format!("u{i}"), "send ack", |e| e["event"] == "ack" && e["tag"] == json!(tag)).await;
            assert_eq!(ack["ack"]["ok"], true, "{ack}");
            seqs.push(ack["ack"]["message"]["seq"].as_i64().expect("seq"));
        }
    }
    seqs.sort_unstable();
    let total = (users.len() * PER_CLIENT) as i64;
    assert_eq!(seqs, range(1, total), "gapless and unique");
    assert_eq!(stored(&app, &conversation).await as i64, total);
    assert_eq!(
        receive_until(&mut listener, "listener", &conversation, total).await,
        range(1, total),
        "delivered in order"
    );
}

#[tokio::test]
async fn malformed_payloads_and_unknown_events_get_error_acks_and_nothing_breaks() {
    let app = spawn(&[("CONVERSATIONS_MAX_BODY_BYTES", "100")]).await;
    let url = app.url("");
    let (a, b) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    let mut peer = SocketPeer::start().await;
    for transport in TRANSPORTS {
        let id = format!("a-{transport}");
        peer.connected(&id, open(&url, transport, &a)).await;
        let before = stored(&app, &conversation).await;
        let timeout = Duration::from_secs(10);
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("message:send", vec![], "invalid_payload"),
            ("message:send", vec![json!("a string")], "invalid_payload"),
            ("message:send", vec![json!({ "conversation_id": conversation })], "invalid_payload"),
            (
                "message:send",
                vec![json!({ "conversation_id": conversation, "client_msg_id": 5, "body": "x" })],
                "invalid_payload",
            ),
            (
                "message:send",
                vec![json!({ "conversation_id": conversation, "client_msg_id": "x", "body": "x", "more": true })],
                "invalid_payload",
            ),
            (
                "message:send",
                vec![json!({ "conversation_id": conversation, "client_msg_id": "x", "body": "b".repeat(101) })],
                "invalid",
            ),
            (
                "message:send",
                vec![json!({ "conversation_id": conversation, "client_msg_id": "", "body": "x" })],
                "invalid",
            ),
            ("sync", vec![json!({ "positions": { conversation.clone(): "five" } })], "invalid_payload"),
            ("sync", vec![json!({ "positions": { conversation.clone(): -1 } })], "invalid"),
            ("sync", vec![json!([1, 2])], "invalid_payload"),
            ("messages:ack", vec![json!({ "conversation_id": conversation, "seq": 99 })], "invalid"),
            ("messages:ack", vec![json!({ "conversation_id": conversation })], "invalid_payload"),
            ("typing", vec![json!(null)], "invalid_payload"),
            ("no:such:event", vec![json!({})], "unknown_event"),
        ];
        for (event, args, code) in cases {
            let outcome = peer.call_raw(&id, event, args.clone(), timeout).await;
            assert_eq!(outcome["event"], "ack", "{event} {args:?}: {outcome}");
            assert_eq!(outcome["ack"]["ok"], false, "{event} {args:?}: {outcome}");
            assert_eq!(outcome["ack"]["error"]["code"], code, "{event} {args:?}: {outcome}");
            assert!(outcome["ack"]["error"]["message"].is_string(), "{outcome}");
        }
        assert_eq!(stored(&app, &conversation).await, before, "nothing half stored");
        let ack = peer
            .call(
                &id,
                "message:send",
                json!({ "conversation_id": conversation, "client_msg_id": transport, "body": "still fine" }),
            )
            .await;
        assert_eq!(ack["ok"], true, "the connection still works: {ack}");
        peer.close(&id).await;
    }
}

#[tokio::test]
async fn typing_reaches_the_other_members_and_presence_does_not_flap() {
    let app = spawn(&[("CONVERSATIONS_PRESENCE_GRACE_MS", "1500")]).await;
    let url = app.url("");
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a)).await;
    peer.connected("c", open(&url, "websocket", &c)).await;

    peer.connected("b1", open(&url, "polling", &b)).await;
    assert_eq!(peer.server_event("a", "presence").await, json!({ "user_id": b.id, "status": "online" }));
    // A second device of b: b is already online.
    peer.connected("b2", open(&url, "websocket", &b)).await;

    let ack = peer.call("b1", "typing", json!({ "conversation_id": conversation })).await;
    assert_eq!(ack, json!({ "ok": true }));
    assert_eq!(peer.server_event("a", "typing").await, json!({ "conversation_id": conversation, "user_id": b.id }));

    // Both devices close and one reconnects within the grace period: no offline/online pair.
    // Past the grace period, b types: the next presence-or-typing event at a is that typing.
    peer.close("b1").await;
    peer.close("b2").await;
    peer.connected("b3", open(&url, "websocket", &b)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(peer.call("b3", "typing", json!({ "conversation_id": conversation })).await["ok"], true);
    let next = peer
        .next_where("a", "presence or typing", |e| {
            e["event"] == "server_event" && (e["name"] == "presence" || e["name"] == "typing")
        })
        .await;
    assert_eq!(next["name"], "typing", "no presence change was announced: {next}");
    // Then b goes for longer than the grace period.
    peer.close("b3").await;
    assert_eq!(peer.server_event("a", "presence").await, json!({ "user_id": b.id, "status": "offline" }));
    let typing_at_b = peer.drain_server_events("b3", "typing", Duration::ZERO).await;
    assert!(typing_at_b.is_empty(), "the typist's own sockets are not told: {typing_at_b:?}");
    let at_c = peer.drain_server_events("c", "presence", Duration::from_millis(200)).await;
    assert!(at_c.is_empty(), "c shares no conversation with b: {at_c:?}");
    let typing_at_c = peer.drain_server_events("c", "typing", Duration::ZERO).await;
    assert!(typing_at_c.is_empty(), "{typing_at_c:?}");
}

#[tokio::test]
async fn membership_changes_join_and_leave_live_sockets() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    store(&app, &a, &conversation, "before-c").await;
    let mut peer = SocketPeer::start().await;
    peer.connected("c", open(&url, "websocket", &c)).await;
    sync(&mut peer, "c", json!({})).await;
    peer.connected("a", open(&url, "polling", &a)).await;
    sync(&mut peer, "a", json!({})).await;
    assert_eq!(next_message(&mut peer, "a").await["seq"], 1);

    let members = format!("/v1/conversations/{conversation}/members");
    assert_eq!(post(&app, Some(&b.access_token), &members, &json!({ "user_id": c.id })).await.status(), 201);
    let update = peer.server_event("c", "conversation:updated").await;
    assert_eq!(
        update,
        json!({ "conversation_id": conversation, "change": { "type": "member_added", "user_id": c.id } })
    );
    assert_eq!(peer.server_event("a", "conversation:updated").await, update);
    store(&app, &a, &conversation, "after-c").await;
    assert_eq!(next_message(&mut peer, "c").await["seq"], 2, "c gets what is sent after it joined, not the history");
    assert_eq!(next_message(&mut peer, "a").await["seq"], 2);

    let response = crate::identity_support::delete_as(&app, &c.access_token, &format!("{members}/{}", c.id)).await;
    assert_eq!(response.status(), 204);
    let update = peer.server_event("c", "conversation:updated").await;
    assert_eq!(update["change"], json!({ "type": "member_removed", "user_id": c.id }));
    store(&app, &a, &conversation, "after-c-left").await;
    assert_eq!(next_message(&mut peer, "a").await["seq"], 3);
    let ack = peer
        .call("c", "message:send", json!({ "conversation_id": conversation, "client_msg_id": "x", "body": "x" }))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden");
    let leaked = peer.drain_server_events("c", "message:new", Duration::from_millis(200)).await;
    assert!(leaked.is_empty(), "{leaked:?}");

    // A conversation created while connected is joined at once.
    let new = create_conversation(&app, &b, &[&c]).await;
    let update = peer.server_event("c", "conversation:updated").await;
    assert_eq!(
        (update["conversation_id"].as_str(), update["change"]["type"].as_str()),
        (Some(new.as_str()), Some("created"))
    );
    store(&app, &b, &new, "hello-c").await;
    let message = next_message(&mut peer, "c").await;
    assert_eq!((message["conversation_id"].as_str(), message["seq"].as_i64()), (Some(new.as_str()), Some(1)));
}

#[tokio::test]
async fn notifications_published_on_the_bus_reach_only_their_users_sockets() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b) = (app.user("user").await, app.user("user").await);
    let mut peer = SocketPeer::start().await;
    peer.connected("a-ws", open(&url, "websocket", &a)).await;
    peer.connected("a-poll", open(&url, "polling", &a)).await;
    peer.connected("b", open(&url, "websocket", &b)).await;
    let kind = atom::bus::EventKind::Notification {
        notification_type: "connection.reauthorization_required".to_owned(),
        data: json!({ "connection_id": "conn-1" }),
    };
    app.state.bus.publish(atom::bus::Event { user_id: a.id.clone(), kind }).await;
    let expected = json!({ "type": "connection.reauthorization_required", "data": { "connection_id": "conn-1" } });
    assert_eq!(peer.server_event("a-ws", "notification").await, expected);
    assert_eq!(peer.server_event("a-poll", "notification").await, expected);
    let at_b = peer.drain_server_events("b", "notification", Duration::from_millis(200)).await;
    assert!(at_b.is_empty(), "{at_b:?}");
}
