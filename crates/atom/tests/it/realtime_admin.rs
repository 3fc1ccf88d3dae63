//! The admin routes over a user's live Socket.io connections and `/status`'s real-time
//! section: the list (socket, node, transport, since), closing one or all of them (the
//! clients are told `disconnected_by_admin`; each close is audited), the admin role
//! required, and the precise errors for what does not exist.

use serde_json::{Value, json};

use crate::common::assert_problem;
use crate::identity_support::audit;
use crate::realtime::{Peer, TRANSPORTS, spawn};
use crate::realtime_support::{connections_of, realtime_status};

fn socket_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| c["socket_id"].as_str().expect("socket_id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_admin_lists_a_users_connections_and_closes_one_then_all() {
    let app = spawn(&[]).await;
    let (admin, user, bystander) = (app.user("admin").await, app.user("user").await, app.user("user").await);
    let mut peer = Peer::start().await;
    let mut sids = Vec::new();
    for transport in TRANSPORTS {
        let outcome = peer.open_at(transport, &app.url(""), transport, &user.access_token, false).await;
        assert_eq!(outcome["event"], "connected", "{outcome}");
        sids.push((transport, outcome["sid"].as_str().expect("sid").to_owned()));
    }
    peer.admitted("bystander", &app, "websocket", &bystander.access_token).await;

    let status = realtime_status(&app, &admin.access_token).await;
    let node_id = status["node_id"].as_str().expect("node id").to_owned();
    // The embedded default has no Redis; the suite's PostgreSQL run sets ATOM_TEST_REDIS_URL.
    let adapter = if std::env::var("ATOM_TEST_REDIS_URL").is_ok() { "redis" } else { "local" };
    assert_eq!(status["adapter"], adapter, "{status}");
    assert!(status["sockets"].as_u64().is_some_and(|n| n >= 3), "{status}");
    assert!(status["rooms"].as_u64().is_some_and(|n| n >= 3), "{status}");

    let list = connections_of(&app, &admin.access_token, &user.id).await;
    assert_eq!(list["user_id"], json!(user.id));
    assert_eq!(list["complete"], true, "{list}");
    let mut expected: Vec<String> = sids.iter().map(|(_, sid)| sid.clone()).collect();
    expected.sort();
    assert_eq!(socket_ids(&list), expected, "{list}");
    for connection in list["connections"].as_array().expect("connections") {
        let transport = sids.iter().find(|(_, sid)| *sid == connection["socket_id"]).expect("listed").0;
        assert_eq!(connection["transport"], transport, "{connection}");
        assert_eq!(connection["node_id"], json!(node_id), "{connection}");
        let since = connection["connected_at"].as_str().expect("connected_at");
        assert!(time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339).is_ok(), "{since}");
    }

    // One connection.
    let (transport, sid) = &sids[0];
    let path = format!("/v1/admin/users/{}/connections/{sid}", user.id);
    let response = app.client.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_eq!(response.status(), 204);
    assert_eq!(peer.closed_with(transport).await["code"], "disconnected_by_admin");
    assert_eq!(socket_ids(&connections_of(&app, &admin.access_token, &user.id).await), vec![sids[1].1.clone()]);
    // The same again: no such live connection.
    let response = app.client.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_problem(response, 404).await;

    // All of them.
    let path = format!("/v1/admin/users/{}/connections", user.id);
    let response = app.client.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "disconnected": 1, "complete": true }));
    assert_eq!(peer.closed_with(sids[1].0).await["code"], "disconnected_by_admin");
    assert_eq!(connections_of(&app, &admin.access_token, &user.id).await["connections"], json!([]));
    assert_eq!(peer.whoami("bystander").await["user_id"], json!(bystander.id), "another user untouched");

    let entries = audit(&app, &admin.access_token, "action=realtime.disconnected").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let closed: Vec<Value> = entries.iter().map(|e| e["details"]["socket_ids"].clone()).collect();
    assert!(closed.contains(&json!([sids[0].1])) && closed.contains(&json!([sids[1].1])), "{closed:?}");
    assert!(entries.iter().all(|e| e["target"] == json!(user.id)), "{entries:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_connection_routes_need_an_admin_and_a_user_that_exists() {
    let app = spawn(&[]).await;
    let (admin, user) = (app.user("admin").await, app.user("user").await);
    let own = format!("/v1/admin/users/{}/connections", user.id);
    assert_problem(app.get_as(&user.access_token, &own).await, 403).await;
    let response = app.client.delete(app.url(&own)).bearer_auth(&user.access_token).send().await.expect("sent");
    assert_problem(response, 403).await;
    for path in [
        "/v1/admin/users/no-such-user/connections".to_owned(),
        format!("/v1/admin/users/{}/connections/%00%01", user.id),
    ] {
        let response = app.client.delete(app.url(&path)).bearer_auth(&admin.access_token).send().await.expect("sent");
        let status = response.status().as_u16();
        assert!([400, 404].contains(&status), "{path}: {status}");
        assert_problem(response, status).await;
    }
    assert_problem(app.get_as(&admin.access_token, "/v1/admin/users/no-such-user/connections").await, 404).await;
    let long = format!("/v1/admin/users/{}/connections/{}", user.id, "x".repeat(5000));
    let response = app.client.delete(app.url(&long)).bearer_auth(&admin.access_token).send().await.expect("sent");
    assert_problem(response, 404).await;
    // Nothing was audited for refusals.
    assert!(audit(&app, &admin.access_token, "action=realtime.disconnected").await.is_empty());
    app.stop().await;
}
