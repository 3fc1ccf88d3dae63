//! Several nodes: two real `atom serve` processes on the machine's PostgreSQL and Redis share
//! Socket.io rooms through socketioxide-redis. An admin on node A sees a user's connections on
//! both nodes (each with its node's id) and closes the one on node B: the event sent to it on
//! A reaches the client on B. A node cut from Redis goes on serving its own sockets (its view
//! says it is incomplete) and joins the others again when Redis is back.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    PgDatabase, TcpProxy, TestApp, atom_command, free_port, pairs, redis_url, run_atom, socket_addr_of, via,
    wait_until_healthy,
};
use crate::realtime::{Peer, spawn};
use crate::realtime_support::{connections_of, realtime_status, second_node};

const PASSWORD: &str = "correct horse battery staple";

/// Polls `check` every 100 ms until it holds, for at most 20 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One `atom serve` process.
struct Node {
    base: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn serve(shared: &[(String, String)]) -> Node {
    let dir = tempfile::tempdir().expect("data dir");
    let port = free_port().await;
    let mut env = shared.to_vec();
    env.extend(pairs(&[("LISTEN", &format!("127.0.0.1:{port}")), ("DATA_DIR", &dir.path().display().to_string())]));
    let child =
        atom_command(&env).arg("serve").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("atom serve starts");
    let base = format!("http://127.0.0.1:{port}");
    wait_until_healthy(&format!("{base}/ready"), Duration::from_secs(60)).await;
    Node { base, _child: child, _dir: dir }
}

async fn login(client: &reqwest::Client, node: &Node, email: &str) -> Value {
    let response = client
        .post(format!("{}/v1/auth/login", node.base))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "login of {email}");
    response.json().await.expect("json")
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = client.get(url).bearer_auth(token).send().await.expect("sent");
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.expect("json")
}

#[tokio::test]
async fn two_serve_processes_share_rooms_an_admin_on_one_closes_a_users_socket_on_the_other() {
    let pg = PgDatabase::create().await;
    let shared = pairs(&[
        ("DATABASE_URL", &pg.url),
        ("REDIS_URL", &redis_url()),
        ("REDIS_KEY_PREFIX", &format!("atom-test-{}", uuid::Uuid::new_v4().simple())),
        ("MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("AUTH_REGISTRATION", "open"),
        ("LOG", "warn"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "60000"),
        ("RATE_LIMIT_AUTH_PER_MINUTE", "6000"),
    ]);
    let mut admin_env = shared.clone();
    admin_env.push(("ADMIN_PASSWORD".into(), PASSWORD.into()));
    let (code, _, stderr) = run_atom(&admin_env, &["admin", "create", "--email", "admin@example.com"]).await;
    assert_eq!(code, 0, "{stderr}");
    let (a, b) = (serve(&shared).await, serve(&shared).await);
    let client = reqwest::Client::new();
    let register = json!({ "email": "ann@example.com", "password": PASSWORD });
    let response = client.post(format!("{}/v1/auth/register", b.base)).json(&register).send().await.expect("sent");
    assert_eq!(response.status(), 201, "registered");
    let admin = login(&client, &a, "admin@example.com").await["access_token"].as_str().expect("token").to_owned();
    let user = login(&client, &b, "ann@example.com").await;
    let (user_token, user_id) = (user["access_token"].as_str().expect("token"), user["user_id"].as_str());
    let me = get_json(&client, &format!("{}/v1/me", b.base), user_token).await;
    let user_id = user_id.map_or_else(|| me["id"].as_str().expect("id").to_owned(), str::to_owned);

    let status_a = get_json(&client, &format!("{}/status", a.base), &admin).await["realtime"].clone();
    let status_b = get_json(&client, &format!("{}/status", b.base), &admin).await["realtime"].clone();
    assert_eq!((status_a["adapter"].as_str(), status_b["adapter"].as_str()), (Some("redis"), Some("redis")));
    assert_ne!(status_a["node_id"], status_b["node_id"], "each node has its own id");

    let mut peer = Peer::start().await;
    let on_b = peer.open_at("on-b", &b.base, "websocket", user_token, false).await;
    assert_eq!(on_b["event"], "connected", "{on_b}");
    let on_a = peer.open_at("on-a", &a.base, "polling", user_token, false).await;
    assert_eq!(on_a["event"], "connected", "{on_a}");

    // A sees both connections, each on its node, once both nodes hear each other.
    let url = format!("{}/v1/admin/users/{user_id}/connections", a.base);
    let mut list = Value::Null;
    until("node A lists the connection on node B", async || {
        list = get_json(&client, &url, &admin).await;
        list["connections"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    assert_eq!(list["complete"], true, "{list}");
    let listed = |sid: &Value| {
        list["connections"].as_array().expect("connections").iter().find(|c| c["socket_id"] == *sid).cloned()
    };
    let b_connection = listed(&on_b["sid"]).expect("B's socket listed");
    assert_eq!(b_connection["node_id"], status_b["node_id"], "{b_connection}");
    assert_eq!(b_connection["transport"], "websocket");
    let a_connection = listed(&on_a["sid"]).expect("A's socket listed");
    assert_eq!(a_connection["node_id"], status_a["node_id"], "{a_connection}");
    assert_eq!(a_connection["transport"], "polling");

    // Closed from A: the event to its room on A reaches the client on B, then B closes it.
    let sid = b_connection["socket_id"].as_str().expect("sid");
    let response = client.delete(format!("{url}/{sid}")).bearer_auth(&admin).send().await.expect("sent");
    assert_eq!(response.status(), 204);
    assert_eq!(peer.closed_with("on-b").await["code"], "disconnected_by_admin");
    assert_eq!(peer.whoami("on-a").await["user_id"], json!(user_id), "the socket on A stays");
    until("the closed socket leaves the list", async || {
        get_json(&client, &url, &admin).await["connections"].as_array().is_some_and(|c| c.len() == 1)
    })
    .await;
}

#[tokio::test]
async fn a_node_cut_from_redis_serves_its_own_sockets_and_rejoins_the_others_when_redis_is_back() {
    let redis = redis_url();
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let a = spawn(&[("REDIS_URL", &redis)]).await;
    let through_proxy = via(&redis, proxy.addr);
    let b = second_node(&a, &[("REDIS_URL", &through_proxy)]).await;
    let (admin, user) = (a.user("admin").await, a.user("user").await);
    let mut peer = Peer::start().await;
    let mut sids = Vec::new();
    for id in ["b1", "b2"] {
        let outcome = peer.open_at(id, &b.url(""), "websocket", &user.access_token, false).await;
        assert_eq!(outcome["event"], "connected", "{outcome}");
        sids.push(outcome["sid"].clone());
    }
    let count_on = async |app: &TestApp| {
        connections_of(app, &admin.access_token, &user.id).await["connections"].as_array().map_or(0, Vec::len)
    };
    until("A lists B's sockets", async || count_on(&a).await == 2).await;

    proxy.set_down(true);
    until("B notices Redis is gone", async || {
        realtime_status(&b, &admin.access_token).await["redis_reachable"] == json!(false)
    })
    .await;
    // B still sees, tells and closes its own sockets, and admits new ones.
    let list = connections_of(&b, &admin.access_token, &user.id).await;
    assert_eq!(list["complete"], false, "{list}");
    assert_eq!(list["connections"].as_array().map(Vec::len), Some(2), "{list}");
    let path = format!(
        "/v1/admin/users/{}/connections/{}",
        user.id,
        list["connections"][0]["socket_id"].as_str().expect("sid")
    );
    let response = b.client.delete(b.url(&path)).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_eq!(response.status(), 204);
    let closed = if list["connections"][0]["socket_id"] == sids[0] { "b1" } else { "b2" };
    let open = if closed == "b1" { "b2" } else { "b1" };
    assert_eq!(peer.closed_with(closed).await["code"], "disconnected_by_admin");
    assert_eq!(peer.whoami(open).await["user_id"], json!(user.id));
    let outcome = peer.open_at("b3", &b.url(""), "polling", &user.access_token, false).await;
    assert_eq!(outcome["event"], "connected", "{outcome}");

    proxy.set_down(false);
    until("B reaches Redis again", async || {
        realtime_status(&b, &admin.access_token).await["redis_reachable"] == json!(true)
    })
    .await;
    until("A lists B's sockets again", async || count_on(&a).await == 2).await;
    a.stop().await;
    b.stop().await;
}
