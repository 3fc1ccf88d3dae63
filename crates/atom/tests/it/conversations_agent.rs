//! The agent as a participant, with the official socket.io-client (tests/peers): an agent
//! worker connects with an `agent`-scoped API key and streams a reply; every member gets the
//! chunks in order, then the reply as `message:new`, stored once however often `complete` is
//! retried; a member who joins late or reconnects mid-stream gets the reply by `sync`; an
//! agent cannot act where its account is not a member, nor a user's token or ordinary key as
//! an agent; bad input gets precise refusals; the server ends a stream whose agent goes silent
//! or disconnects; the built-in echo agent answers a `with_agent` conversation word by word
//! and never answers itself.

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser, assert_problem};
use crate::conversations::{create_conversation, stored};
use crate::conversations_socket::{assert_nothing_more, next_message, spawn};
use crate::identity_support::{create_api_key, post};
use crate::socket_peer::{Open, SocketPeer};

/// An `agent`-scoped API key of `owner`.
async fn agent_key(app: &TestApp, owner: &TestUser) -> String {
    let created = create_api_key(app, &owner.access_token, json!({ "name": "worker", "scopes": ["agent"] })).await;
    assert_eq!(created["scopes"], json!(["agent"]), "{created}");
    created["key"].as_str().expect("key").to_owned()
}

fn open<'a>(url: &'a str, transport: &'a str, token: &'a str) -> Open<'a> {
    Open { url, transport, token, reconnection: false }
}

async fn sync(peer: &mut SocketPeer, id: &str, positions: Value) -> Value {
    let ack = peer.call(id, "sync", json!({ "positions": positions })).await;
    assert_eq!(ack["ok"], true, "{id}: sync: {ack}");
    ack["positions"].clone()
}

fn chunk(conversation: &str, stream: &str, index: u32, delta: &str) -> Value {
    json!({ "conversation_id": conversation, "stream_id": stream, "index": index, "delta": delta })
}

fn complete(conversation: &str, stream: &str, body: &str) -> Value {
    json!({ "conversation_id": conversation, "stream_id": stream, "body": body })
}

/// The next `agent:streaming` of `id`.
async fn next_chunk(peer: &mut SocketPeer, id: &str) -> Value {
    peer.server_event(id, "agent:streaming").await
}

fn assert_refused(ack: &Value, code: &str) {
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], code, "{ack}");
    assert!(ack["error"]["message"].is_string(), "{ack}");
}

fn refused_fields(ack: &Value) -> Vec<String> {
    assert_refused(ack, "invalid");
    ack["error"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_owned())
        .collect()
}

#[tokio::test]
async fn chunks_reach_every_member_in_order_and_the_reply_is_stored_once() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b, agent) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b, &agent]).await;
    let key = agent_key(&app, &agent).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a.access_token)).await;
    peer.connected("b", open(&url, "polling", &b.access_token)).await;
    peer.connected("agent", open(&url, "websocket", &key)).await;
    for id in ["a", "b", "agent"] {
        sync(&mut peer, id, json!({})).await;
    }

    let deltas: Vec<String> = (0..30).map(|i| format!("word{i} ")).collect();
    // Fire and forget, as a worker streams: the order is the server's to keep.
    for (index, delta) in deltas.iter().enumerate() {
        peer.emit("agent", "agent:streaming", chunk(&conversation, "s-1", index as u32, delta)).await;
    }
    let body: String = deltas.concat();
    let first = peer.call("agent", "agent:streaming_complete", complete(&conversation, "s-1", &body)).await;
    assert_eq!((first["ok"].as_bool(), first["duplicate"].as_bool()), (Some(true), Some(false)), "{first}");
    let message = &first["message"];
    assert_eq!(
        (message["sender_id"].as_str(), message["sender_kind"].as_str(), message["stream_id"].as_str()),
        (Some(agent.id.as_str()), Some("agent"), Some("s-1")),
        "{message}"
    );
    assert_eq!(message["body"], json!(body));
    // The worker did not hear its ack: it retries, on a new connection too.
    let again = peer.call("agent", "agent:streaming_complete", complete(&conversation, "s-1", &body)).await;
    assert_eq!((again["ok"].as_bool(), again["duplicate"].as_bool()), (Some(true), Some(true)), "{again}");
    assert_eq!(again["message"], *message, "the retry returns the first reply");
    peer.close("agent").await;
    peer.connected("agent2", open(&url, "polling", &key)).await;
    let third = peer.call("agent2", "agent:streaming_complete", complete(&conversation, "s-1", &body)).await;
    assert_eq!((third["duplicate"].as_bool(), &third["message"]), (Some(true), message), "{third}");

    for id in ["a", "b"] {
        for (index, delta) in deltas.iter().enumerate() {
            let got = next_chunk(&mut peer, id).await;
            assert_eq!(
                got,
                json!({ "conversation_id": conversation, "stream_id": "s-1", "index": index, "delta": delta,
                        "sender_id": agent.id }),
                "{id}: chunk {index} in order"
            );
        }
        assert_eq!(&next_message(&mut peer, id).await, message, "{id}: the reply as message:new");
    }
    assert_eq!(stored(&app, &conversation).await, 1, "stored once");
    assert_nothing_more(&mut peer, "a", &app, &b, &conversation).await;
    app.stop().await;
}

#[tokio::test]
async fn a_member_who_joins_late_or_reconnects_mid_stream_gets_the_reply_by_resume() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b, late, agent) =
        (app.user("user").await, app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b, &agent]).await;
    let key = agent_key(&app, &agent).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a.access_token)).await;
    peer.connected("agent", open(&url, "websocket", &key)).await;
    sync(&mut peer, "a", json!({})).await;
    sync(&mut peer, "agent", json!({})).await;

    for index in 0..3 {
        let ack = peer.call("agent", "agent:streaming", chunk(&conversation, "s-late", index, "part ")).await;
        assert_eq!(ack, json!({ "ok": true }));
        assert_eq!(next_chunk(&mut peer, "a").await["index"], index);
    }
    // a loses its network mid-stream; `late` becomes a member; b has not connected yet.
    peer.drop_connection("a").await;
    let path = format!("/v1/conversations/{conversation}/members");
    let added = post(&app, Some(&a.access_token), &path, &json!({ "user_id": late.id })).await;
    assert_eq!(added.status(), 201);
    let ack = peer.call("agent", "agent:streaming", chunk(&conversation, "s-late", 3, "end")).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let done =
        peer.call("agent", "agent:streaming_complete", complete(&conversation, "s-late", "part part part end")).await;
    assert_eq!(done["ok"], true, "{done}");
    let reply = done["message"].clone();

    // Each resumes from where it stands and gets the reply it missed, once.
    peer.send(json!({ "op": "open", "id": "a" })).await;
    peer.reconnected("a").await;
    assert_eq!(sync(&mut peer, "a", json!({ conversation.clone(): 0 })).await, json!({ conversation.clone(): 1 }));
    assert_eq!(next_message(&mut peer, "a").await, reply, "a, reconnected, by resume");
    peer.connected("b", open(&url, "polling", &b.access_token)).await;
    sync(&mut peer, "b", json!({})).await;
    assert_eq!(next_message(&mut peer, "b").await, reply, "b, connecting after the stream, by resume");
    peer.connected("late", open(&url, "websocket", &late.access_token)).await;
    sync(&mut peer, "late", json!({})).await;
    assert_eq!(next_message(&mut peer, "late").await, reply, "a member added mid-stream, by resume");
    // Nothing twice: the next message of each is a new one.
    let sentinel = crate::conversations_socket::store(&app, &a, &conversation, "sentinel").await;
    for id in ["a", "b", "late"] {
        assert_eq!(next_message(&mut peer, id).await["seq"], sentinel, "{id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_agent_cannot_act_where_its_account_is_not_a_member_nor_a_user_as_an_agent() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, b, agent) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    let key = agent_key(&app, &agent).await;
    let api_key = create_api_key(&app, &a.access_token, json!({ "name": "script" })).await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a.access_token)).await;
    sync(&mut peer, "a", json!({})).await;
    peer.connected("agent", open(&url, "websocket", &key)).await;
    peer.connected("a-key", open(&url, "polling", &api_key)).await;
    peer.connected("b", open(&url, "polling", &b.access_token)).await;

    let events = [
        ("agent:streaming", chunk(&conversation, "s", 0, "x")),
        ("agent:streaming_complete", complete(&conversation, "s", "x")),
        ("agent:streaming_error", json!({ "conversation_id": conversation, "stream_id": "s", "error": "boom" })),
    ];
    for (event, data) in &events {
        let ack = peer.call("agent", event, data.clone()).await;
        assert_refused(&ack, "forbidden");
        assert!(ack["error"]["message"].as_str().expect("message").contains("member"), "{event}: {ack}");
        // Members themselves, with their access token or an ordinary key, are not agents.
        for id in ["a-key", "b"] {
            let ack = peer.call(id, event, data.clone()).await;
            assert_refused(&ack, "forbidden");
            assert!(ack["error"]["message"].as_str().expect("message").contains("agent scope"), "{id} {event}: {ack}");
        }
    }
    // An `agent` key still sends ordinary messages where it is a member, marked as the agent's.
    assert_eq!(stored(&app, &conversation).await, 0, "nothing stored");
    let path = format!("/v1/conversations/{conversation}/members");
    assert_eq!(post(&app, Some(&a.access_token), &path, &json!({ "user_id": agent.id })).await.status(), 201);
    let ack = peer.call("agent", "agent:streaming", chunk(&conversation, "s-ok", 0, "now")).await;
    assert_eq!(ack, json!({ "ok": true }));
    let first = next_chunk(&mut peer, "a").await;
    assert_eq!(first["stream_id"], "s-ok", "a heard nothing of the refused events: {first}");
    let ack = peer
        .call("agent", "message:send", json!({ "conversation_id": conversation, "client_msg_id": "m", "body": "hi" }))
        .await;
    assert_eq!(ack["message"]["sender_kind"], "agent", "{ack}");
    let ack = peer
        .call("a-key", "message:send", json!({ "conversation_id": conversation, "client_msg_id": "m", "body": "hi" }))
        .await;
    assert_eq!(ack["message"]["sender_kind"], "user", "{ack}");
    app.stop().await;
}

#[tokio::test]
async fn agent_events_with_bad_input_get_precise_refusals() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let (a, agent) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&agent]).await;
    let key = agent_key(&app, &agent).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("agent", open(&url, "websocket", &key)).await;

    let big = "x".repeat(4097);
    let long_id = "s".repeat(65);
    let cases = [
        ("agent:streaming", chunk(&conversation, "s", 0, &big), vec!["delta"]),
        ("agent:streaming", chunk(&conversation, &long_id, 0, "x"), vec!["stream_id"]),
        ("agent:streaming", chunk(&conversation, "has space", 0, "x"), vec!["stream_id"]),
        ("agent:streaming", chunk("", "s", 0, "nul\0"), vec!["conversation_id", "delta"]),
        ("agent:streaming_complete", complete(&conversation, "s", "  "), vec!["body"]),
        ("agent:streaming_complete", complete(&conversation, "s", &"y".repeat(16_385)), vec!["body"]),
        (
            "agent:streaming_error",
            json!({ "conversation_id": conversation, "stream_id": "s", "error": { "code": "Bad Code", "message": "m" } }),
            vec!["error.code"],
        ),
    ];
    for (event, data, fields) in cases {
        let ack = peer.call("agent", event, data).await;
        assert_eq!(refused_fields(&ack), fields, "{event}: {ack}");
    }
    for data in [
        json!({ "conversation_id": conversation }),
        json!("text"),
        json!({ "conversation_id": conversation,
        "stream_id": "s", "index": -1, "delta": "x" }),
    ] {
        assert_refused(&peer.call("agent", "agent:streaming", data).await, "invalid_payload");
    }
    // Chunks must move forward.
    assert_eq!(peer.call("agent", "agent:streaming", chunk(&conversation, "s", 5, "a")).await["ok"], true);
    let ack = peer.call("agent", "agent:streaming", chunk(&conversation, "s", 5, "b")).await;
    assert_eq!(refused_fields(&ack), ["index"], "{ack}");
    // A plain message's client id and a stream's stay apart.
    let ack = peer
        .call(
            "agent",
            "message:send",
            json!({ "conversation_id": conversation, "client_msg_id": "stream:s2", "body": "hi" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = peer.call("agent", "agent:streaming_complete", complete(&conversation, "s2", "reply")).await;
    assert_eq!(refused_fields(&ack), ["stream_id"], "{ack}");
    assert_eq!(stored(&app, &conversation).await, 1, "only the plain message");
    app.stop().await;
}

#[tokio::test]
async fn the_server_ends_the_stream_of_a_silent_or_disconnected_agent() {
    let app = spawn(&[("CONVERSATIONS_AGENT_STREAM_TIMEOUT_SECS", "1")]).await;
    let url = app.url("");
    let (a, agent) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&agent]).await;
    let key = agent_key(&app, &agent).await;
    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a.access_token)).await;
    sync(&mut peer, "a", json!({})).await;
    peer.connected("agent", open(&url, "websocket", &key)).await;

    assert_eq!(peer.call("agent", "agent:streaming", chunk(&conversation, "quiet", 0, "thinking")).await["ok"], true);
    assert_eq!(next_chunk(&mut peer, "a").await["stream_id"], "quiet");
    // Then nothing: the server ends the stream for everyone, the agent included.
    let ended = peer.server_event("a", "agent:streaming_error").await;
    assert_eq!(
        (&ended["conversation_id"], &ended["stream_id"], &ended["sender_id"], &ended["error"]["code"]),
        (&json!(conversation), &json!("quiet"), &json!(agent.id), &json!("agent_timeout")),
        "{ended}"
    );
    assert_eq!(peer.server_event("agent", "agent:streaming_error").await, ended);
    let ack = peer.call("agent", "agent:streaming", chunk(&conversation, "quiet", 1, "late")).await;
    assert_eq!(refused_fields(&ack), ["stream_id"], "an ended stream stays ended: {ack}");

    assert_eq!(peer.call("agent", "agent:streaming", chunk(&conversation, "cut", 0, "half")).await["ok"], true);
    assert_eq!(next_chunk(&mut peer, "a").await["stream_id"], "cut");
    peer.drop_connection("agent").await;
    let ended = peer.server_event("a", "agent:streaming_error").await;
    assert_eq!(
        (&ended["stream_id"], &ended["error"]["code"]),
        (&json!("cut"), &json!("agent_disconnected")),
        "{ended}"
    );

    // An agent's own error reaches the room too, with a code.
    peer.connected("agent2", open(&url, "websocket", &key)).await;
    let failure = json!({ "conversation_id": conversation, "stream_id": "oops", "error": "the model is down" });
    assert_eq!(peer.call("agent2", "agent:streaming_error", failure).await, json!({ "ok": true }));
    let ended = peer.server_event("a", "agent:streaming_error").await;
    assert_eq!(ended["error"], json!({ "code": "agent_error", "message": "the model is down" }), "{ended}");
    assert_eq!(stored(&app, &conversation).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_echo_agent_streams_each_message_back_and_never_answers_itself() {
    let app = spawn(&[]).await;
    let url = app.url("");
    let a = app.user("user").await;
    let response = post(&app, Some(&a.access_token), "/v1/conversations", &json!({ "with_agent": true })).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.expect("json");
    let conversation = created["id"].as_str().expect("id").to_owned();
    let mut members = vec![a.id.clone(), "echo-agent".to_owned()];
    members.sort();
    assert_eq!(created["member_ids"], json!(members), "{created}");

    let mut peer = SocketPeer::start().await;
    peer.connected("a", open(&url, "websocket", &a.access_token)).await;
    sync(&mut peer, "a", json!({})).await;
    let send = json!({ "conversation_id": conversation, "client_msg_id": "1", "body": "hello big world" });
    assert_eq!(peer.call("a", "message:send", send).await["ok"], true);
    assert_eq!(next_message(&mut peer, "a").await["seq"], 1);
    let mut stream_id = None;
    for (index, delta) in ["hello ", "big ", "world"].into_iter().enumerate() {
        let got = next_chunk(&mut peer, "a").await;
        assert_eq!(
            (&got["index"], &got["delta"], &got["sender_id"]),
            (&json!(index), &json!(delta), &json!("echo-agent"))
        );
        stream_id.get_or_insert_with(|| got["stream_id"].clone());
        assert_eq!(Some(&got["stream_id"]), stream_id.as_ref(), "one stream");
    }
    let reply = next_message(&mut peer, "a").await;
    assert_eq!(
        (&reply["seq"], &reply["body"], &reply["sender_id"], &reply["sender_kind"], Some(&reply["stream_id"])),
        (&json!(2), &json!("hello big world"), &json!("echo-agent"), &json!("agent"), stream_id.as_ref()),
        "{reply}"
    );
    // It answers the next message, and nothing else: not its own reply.
    let send = json!({ "conversation_id": conversation, "client_msg_id": "2", "body": "again" });
    assert_eq!(peer.call("a", "message:send", send).await["ok"], true);
    assert_eq!(next_message(&mut peer, "a").await["seq"], 3, "the next message is a's, not an echo of the echo");
    assert_eq!(next_chunk(&mut peer, "a").await["delta"], "again");
    let reply = next_message(&mut peer, "a").await;
    assert_eq!((&reply["seq"], &reply["body"]), (&json!(4), &json!("again")));
    assert_nothing_more(&mut peer, "a", &app, &a, &conversation).await;
    // The sentinel (seq 5) is answered too; then the conversation holds each message and one
    // echo of each of a's, nothing more.
    assert_eq!(next_message(&mut peer, "a").await["seq"], 6);
    assert_eq!(stored(&app, &conversation).await, 6);
    app.stop().await;

    let app = spawn(&[("CONVERSATIONS_ECHO_AGENT", "false")]).await;
    let a = app.user("user").await;
    let response = post(&app, Some(&a.access_token), "/v1/conversations", &json!({ "with_agent": true })).await;
    let problem = assert_problem(response, 422).await;
    assert_eq!(problem["errors"][0]["field"], "with_agent", "{problem}");
    app.stop().await;
}

/// Two `atom serve` processes on PostgreSQL and Redis (on either suite run): an agent on one
/// node streams to a member on the other, in order, through the Socket.io adapter; both nodes
/// run the echo agent, and each message is answered once.
#[tokio::test]
async fn across_two_nodes_chunks_arrive_in_order_and_the_echo_agent_answers_once() {
    use crate::conversations_nodes::{account, serve, shared_env};
    let pg = crate::common::PgDatabase::create().await;
    let env = shared_env(&pg.url);
    let dirs = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let with_dir = |dir: &tempfile::TempDir| {
        let mut env = env.clone();
        env.push(("DATA_DIR".to_owned(), dir.path().display().to_string()));
        env
    };
    let a = serve(&with_dir(&dirs.0), crate::common::free_port().await).await;
    let b = serve(&with_dir(&dirs.1), crate::common::free_port().await).await;
    let client = reqwest::Client::new();
    let (_, x_token) = account(&client, &a).await;
    let (agent, agent_token) = account(&client, &b).await;
    let response = client
        .post(format!("{}/v1/api-keys", b.base))
        .bearer_auth(&agent_token)
        .json(&json!({ "name": "worker", "scopes": ["agent"] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let key = response.json::<Value>().await.expect("json")["key"].as_str().expect("key").to_owned();
    let response = client
        .post(format!("{}/v1/conversations", a.base))
        .bearer_auth(&x_token)
        .json(&json!({ "member_ids": [agent], "with_agent": true }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let conversation = response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();

    let mut peer = SocketPeer::start().await;
    peer.connected("x-on-a", open(&a.base, "websocket", &x_token)).await;
    peer.connected("agent-on-b", open(&b.base, "polling", &key)).await;
    sync(&mut peer, "x-on-a", json!({})).await;

    for index in 0..10 {
        peer.emit("agent-on-b", "agent:streaming", chunk(&conversation, "far", index, &format!("{index} "))).await;
    }
    let done = peer.call("agent-on-b", "agent:streaming_complete", complete(&conversation, "far", "done")).await;
    assert_eq!(done["ok"], true, "{done}");
    for index in 0..10 {
        let got = next_chunk(&mut peer, "x-on-a").await;
        assert_eq!((&got["stream_id"], &got["index"]), (&json!("far"), &json!(index)), "in order across nodes");
    }
    assert_eq!(next_message(&mut peer, "x-on-a").await, done["message"], "the reply, after its chunks");

    // Both nodes hear x's message; one answers it.
    let send = json!({ "conversation_id": conversation, "client_msg_id": "1", "body": "one two" });
    let sent = peer.call("x-on-a", "message:send", send).await;
    assert_eq!(next_message(&mut peer, "x-on-a").await, sent["message"]);
    let first = next_chunk(&mut peer, "x-on-a").await;
    assert_eq!((&first["delta"], &first["sender_id"]), (&json!("one "), &json!("echo-agent")), "{first}");
    let second = next_chunk(&mut peer, "x-on-a").await;
    assert_eq!((&second["delta"], &second["stream_id"]), (&json!("two"), &first["stream_id"]), "{second}");
    let reply = next_message(&mut peer, "x-on-a").await;
    assert_eq!((&reply["body"], &reply["sender_id"]), (&json!("one two"), &json!("echo-agent")), "{reply}");
    // The next thing x hears is its next message and its one echo: no second answer.
    let send = json!({ "conversation_id": conversation, "client_msg_id": "2", "body": "three" });
    let sent = peer.call("x-on-a", "message:send", send).await;
    assert_eq!(next_message(&mut peer, "x-on-a").await, sent["message"], "no second echo of the first message");
    assert_eq!(next_chunk(&mut peer, "x-on-a").await["delta"], "three", "no second stream of the first message");
    let reply = next_message(&mut peer, "x-on-a").await;
    assert_eq!(
        (&reply["body"], &reply["seq"]),
        (&json!("three"), &json!(sent["message"]["seq"].as_i64().expect("seq") + 1))
    );
}

#[tokio::test]
async fn the_echo_agents_account_is_made_once_and_leaves_the_installation_empty_for_a_bootstrap_admin() {
    let mut app = spawn(&[]).await;
    let accounts = crate::identity_support::fetch_strings(&app, "SELECT id FROM users").await;
    assert_eq!(accounts, ["echo-agent"], "only the echo agent's account");
    app.begin_shutdown().await.expect("task").expect("clean shutdown");
    let TestApp { db, .. } = app;
    // Started again, now with a bootstrap admin: the agent's account is kept, not made twice,
    // and the installation is still empty of people, so the admin is created.
    let extra = [
        ("AUTH_BOOTSTRAP_ADMIN_EMAIL", "first@example.com"),
        ("AUTH_BOOTSTRAP_ADMIN_PASSWORD", "a long enough password"),
    ];
    let app = TestApp::spawn_on(db, &extra, axum::Router::new()).await;
    let session = app.login("first@example.com", "a long enough password").await;
    assert_eq!(session["user"]["role"], "admin");
    let mut accounts = crate::identity_support::fetch_strings(&app, "SELECT email FROM users").await;
    accounts.sort();
    assert_eq!(accounts, ["echo-agent@agents.atom.invalid", "first@example.com"]);
    // Nobody signs in as the agent.
    let refused = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({ "email": "echo-agent@agents.atom.invalid", "password": "a long enough password" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    app.stop().await;
}
