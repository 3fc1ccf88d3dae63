//! Conversations across real `atom serve` processes: two nodes on the machine's PostgreSQL
//! and Redis deliver to each other's clients and a client resumes on the other node; a node
//! killed with SIGKILL in the middle of traffic and restarted loses no acknowledged message,
//! a retried send is stored once, and a client that reconnects sees no gap and no duplicate.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{PgDatabase, TestDb, atom_command, free_port, pairs, redis_url, wait_until_healthy};
use crate::socket_peer::{Open, SocketPeer};

const PASSWORD: &str = "correct horse battery staple";

/// One `atom serve` process on `port`.
pub(crate) struct Node {
    pub(crate) base: String,
    child: tokio::process::Child,
}

pub(crate) async fn serve(env: &[(String, String)], port: u16) -> Node {
    let mut env = env.to_vec();
    env.extend(pairs(&[("LISTEN", &format!("127.0.0.1:{port}"))]));
    let child =
        atom_command(&env).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("atom serve starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&format!("{base}/ready"), Duration::from_secs(60)).await;
    Node { base, child }
}

/// A user registered and signed in on `node`: (id, access token).
pub(crate) async fn account(client: &reqwest::Client, node: &Node) -> (String, String) {
    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({ "email": email, "password": PASSWORD });
    let response = client.post(format!("{}/v1/auth/register", node.base)).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 201, "registered");
    let response = client.post(format!("{}/v1/auth/login", node.base)).json(&body).send().await.expect("sent");
    assert_eq!(response.status(), 200, "signed in");
    let tokens: Value = response.json().await.expect("json");
    let token = tokens["access_token"].as_str().expect("token").to_owned();
    let me: Value = client
        .get(format!("{}/v1/me", node.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    (me["id"].as_str().expect("id").to_owned(), token)
}

async fn create(client: &reqwest::Client, node: &Node, token: &str, member: &str) -> String {
    let response = client
        .post(format!("{}/v1/conversations", node.base))
        .bearer_auth(token)
        .json(&json!({ "member_ids": [member] }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned()
}

async fn send_rest(client: &reqwest::Client, node: &Node, token: &str, conversation: &str, client_msg_id: &str) -> i64 {
    let response = client
        .post(format!("{}/v1/conversations/{conversation}/messages", node.base))
        .bearer_auth(token)
        .json(&json!({ "client_msg_id": client_msg_id, "body": client_msg_id }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.expect("json")["seq"].as_i64().expect("seq")
}

/// The next `message:new` seq of `id` in `conversation`.
async fn next_seq(peer: &mut SocketPeer, id: &str, conversation: &str) -> i64 {
    let message = peer.server_event(id, "message:new").await["message"].clone();
    assert_eq!(message["conversation_id"], json!(conversation), "{message}");
    message["seq"].as_i64().expect("seq")
}

async fn sync(peer: &mut SocketPeer, id: &str, positions: Value) -> Value {
    let ack = peer.call(id, "sync", json!({ "positions": positions })).await;
    assert_eq!(ack["ok"], true, "{id}: {ack}");
    ack["positions"].clone()
}

pub(crate) fn shared_env(database_url: &str) -> Vec<(String, String)> {
    pairs(&[
        ("DATABASE_URL", database_url),
        ("REDIS_URL", &redis_url()),
        ("REDIS_KEY_PREFIX", &format!("atom-test-{}", uuid::Uuid::new_v4().simple())),
        ("MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("AUTH_REGISTRATION", "open"),
        ("LOG", "warn"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"),
        ("RATE_LIMIT_AUTH_PER_MINUTE", "6000"),
        ("RATE_LIMIT_API_PER_MINUTE", "60000"),
    ])
}

#[tokio::test]
async fn two_serve_processes_deliver_across_nodes_and_a_client_resumes_on_the_other_node() {
    let pg = PgDatabase::create().await;
    let env = shared_env(&pg.url);
    let dirs = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let with_dir = |dir: &tempfile::TempDir| {
        let mut env = env.clone();
        env.push(("DATA_DIR".to_owned(), dir.path().display().to_string()));
        env
    };
    let a = serve(&with_dir(&dirs.0), free_port().await).await;
    let b = serve(&with_dir(&dirs.1), free_port().await).await;
    let client = reqwest::Client::new();
    let (_, x_token) = account(&client, &a).await;
    let (y, y_token) = account(&client, &b).await;
    let conversation = create(&client, &a, &x_token, &y).await;

    let mut peer = SocketPeer::start().await;
    peer.connected("x-on-a", Open { url: &a.base, transport: "websocket", token: &x_token, reconnection: false }).await;
    peer.connected("y-on-b", Open { url: &b.base, transport: "polling", token: &y_token, reconnection: false }).await;
    sync(&mut peer, "x-on-a", json!({})).await;
    sync(&mut peer, "y-on-b", json!({})).await;

    // A client on node A reaches a client on node B, and back.
    let ack = peer
        .call(
            "x-on-a",
            "message:send",
            json!({ "conversation_id": conversation, "client_msg_id": "1", "body": "from a" }),
        )
        .await;
    assert_eq!(ack["message"]["seq"], 1, "{ack}");
    assert_eq!(next_seq(&mut peer, "y-on-b", &conversation).await, 1);
    assert_eq!(send_rest(&client, &b, &y_token, &conversation, "from-b").await, 2);
    assert_eq!(next_seq(&mut peer, "x-on-a", &conversation).await, 1);
    assert_eq!(next_seq(&mut peer, "x-on-a", &conversation).await, 2);
    assert_eq!(next_seq(&mut peer, "y-on-b", &conversation).await, 2);

    // y leaves node B; x goes on writing; y resumes on node A with exactly what it missed.
    peer.close("y-on-b").await;
    for i in 3..=12 {
        assert_eq!(send_rest(&client, &a, &x_token, &conversation, &format!("m{i}")).await, i);
    }
    peer.connected("y-on-a", Open { url: &a.base, transport: "websocket", token: &y_token, reconnection: false }).await;
    assert_eq!(sync(&mut peer, "y-on-a", json!({ conversation.clone(): 2 })).await[&conversation], 12);
    for expected in 3..=12 {
        assert_eq!(next_seq(&mut peer, "y-on-a", &conversation).await, expected);
    }
    // Nothing twice: the next one is the next message, sent from node B.
    assert_eq!(send_rest(&client, &b, &x_token, &conversation, "sentinel").await, 13);
    assert_eq!(next_seq(&mut peer, "y-on-a", &conversation).await, 13);
    drop((a, b));
}

#[tokio::test]
async fn a_node_killed_mid_traffic_loses_no_acknowledged_message_and_clients_resume_without_duplicates() {
    let db = TestDb::new().await;
    let mut env = db.pairs();
    env.extend(pairs(&[
        ("MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("AUTH_REGISTRATION", "open"),
        ("LOG", "warn"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "600000"),
        ("RATE_LIMIT_ANONYMOUS_BURST", "100000"),
        ("RATE_LIMIT_AUTH_PER_MINUTE", "6000"),
        ("RATE_LIMIT_API_PER_MINUTE", "600000"),
        ("REALTIME_EVENTS_PER_SECOND", "10000"),
        ("REALTIME_EVENT_BURST", "10000"),
    ]));
    let port = free_port().await;
    let mut node = serve(&env, port).await;
    let client = reqwest::Client::new();
    let (_, s_token) = account(&client, &node).await;
    let (r, r_token) = account(&client, &node).await;
    let conversation = create(&client, &node, &s_token, &r).await;

    let mut peer = SocketPeer::start().await;
    for (id, token, transport) in [("sender", &s_token, "websocket"), ("receiver", &r_token, "polling")] {
        peer.connected(id, Open { url: &node.base, transport, token, reconnection: true }).await;
        sync(&mut peer, id, json!({})).await;
    }
    // Traffic: 100 sends in flight; the node dies once 30 are acknowledged.
    const TOTAL: usize = 100;
    for i in 0..TOTAL {
        peer.send(json!({ "op": "emit", "id": "sender", "event": "message:send", "ack": true, "timeout_ms": 5_000,
            "tag": format!("t{i}"), "data": { "conversation_id": conversation, "client_msg_id": format!("c{i}"), "body": format!("b{i}") } }))
            .await;
    }
    let mut acked: Vec<Option<Value>> = vec![None; TOTAL];
    let mut outcomes = 0;
    let is_send_outcome =
        |e: &Value| (e["event"] == "ack" || e["event"] == "ack_timeout") && e["name"] == "message:send";
    while acked.iter().filter(|a| a.is_some()).count() < 30 {
        let outcome = peer.next_where("sender", "a send's outcome", is_send_outcome).await;
        outcomes += 1;
        let i: usize = outcome["tag"].as_str().expect("tag")[1..].parse().expect("index");
        assert_eq!(outcome["event"], "ack", "before the kill every send is acknowledged: {outcome}");
        assert_eq!(outcome["ack"]["ok"], true, "{outcome}");
        acked[i] = Some(outcome["ack"]["message"].clone());
    }
    nix_kill(&mut node).await;
    while outcomes < TOTAL {
        let outcome = peer.next_where("sender", "a send's outcome", is_send_outcome).await;
        outcomes += 1;
        if outcome["event"] == "ack" && outcome["ack"]["ok"] == true {
            let i: usize = outcome["tag"].as_str().expect("tag")[1..].parse().expect("index");
            acked[i] = Some(outcome["ack"]["message"].clone());
        }
    }
    let acknowledged = acked.iter().filter(|a| a.is_some()).count();
    assert!(acknowledged < TOTAL, "the kill came before the end of the traffic");

    // The receiver's view before the restart: an in-order prefix.
    let mut received: Vec<i64> = peer
        .drain_server_events("receiver", "message:new", Duration::from_millis(500))
        .await
        .iter()
        .map(|e| e["message"]["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(received, (1..=received.len() as i64).collect::<Vec<_>>(), "in order before the kill");

    let _node = serve(&env, port).await;
    for id in ["sender", "receiver"] {
        let outcome = peer.next_where(id, "reconnection", |e| e["event"] == "connected").await;
        assert_eq!(outcome["event"], "connected", "{outcome}");
    }
    let last = received.last().copied().unwrap_or(0);
    sync(&mut peer, "receiver", json!({ conversation.clone(): last })).await;
    sync(&mut peer, "sender", json!({})).await;
    // Every acknowledged message survived as acknowledged; the sender retries the others.
    for (i, ack) in acked.iter().enumerate() {
        let payload =
            json!({ "conversation_id": conversation, "client_msg_id": format!("c{i}"), "body": format!("b{i}") });
        let retry = peer.call("sender", "message:send", payload).await;
        assert_eq!(retry["ok"], true, "{retry}");
        if let Some(first) = ack {
            assert_eq!(&retry["message"], first, "c{i} was acknowledged before the kill and kept as it was");
            assert_eq!(retry["duplicate"], true);
        }
    }
    // The receiver has every message exactly once, in order.
    while received.len() < TOTAL {
        received.push(next_seq(&mut peer, "receiver", &conversation).await);
    }
    assert_eq!(received, (1..=TOTAL as i64).collect::<Vec<_>>(), "no gap, no duplicate");
    let sentinel = json!({ "conversation_id": conversation, "client_msg_id": "sentinel", "body": "last" });
    assert_eq!(peer.call("sender", "message:send", sentinel).await["message"]["seq"], TOTAL as i64 + 1);
    assert_eq!(next_seq(&mut peer, "receiver", &conversation).await, TOTAL as i64 + 1);
}

/// SIGKILL: the process ends at once, without shutting anything down.
async fn nix_kill(node: &mut Node) {
    node.child.start_kill().expect("SIGKILL sent");
    node.child.wait().await.expect("the killed node is reaped");
}
