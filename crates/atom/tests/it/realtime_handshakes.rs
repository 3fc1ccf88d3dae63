//! Pending Engine.IO handshakes (a session opened, no Socket.io CONNECT yet) are bounded:
//! closed after `realtime.connect_timeout_secs`, and at most
//! `realtime.max_connections_per_address` of them per client address, over raw HTTP
//! long-polling, the cheapest way to open them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{TestApp, assert_problem};
use crate::identity_support::client_from;
use crate::realtime::{Peer, spawn};

const BOUND: Duration = Duration::from_secs(15);

/// Opens an Engine.IO session over polling from `client`: its `sid`, or the refusal.
async fn handshake(client: &reqwest::Client, app: &TestApp) -> Result<String, reqwest::Response> {
    let response = client.get(app.url("/socket.io/?EIO=4&transport=polling")).send().await.expect("sent");
    if response.status() != 200 {
        return Err(response);
    }
    let text = response.text().await.expect("text");
    let open: Value = serde_json::from_str(text.strip_prefix('0').expect("an open packet")).expect("json");
    Ok(open["sid"].as_str().expect("sid").to_owned())
}

/// A long poll of session `sid`: its status.
async fn poll(client: &reqwest::Client, app: &TestApp, sid: &str) -> u16 {
    let url = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    client.get(url).send().await.expect("sent").status().as_u16()
}

#[tokio::test]
async fn pending_handshakes_are_capped_per_address_and_closed_after_the_connect_timeout() {
    let app = spawn(&[("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "3"), ("REALTIME_CONNECT_TIMEOUT_SECS", "1")]).await;
    let (here, elsewhere) = (client_from(1), client_from(2));
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(handshake(&here, &app).await.expect("within the cap"));
    }
    let refused = handshake(&here, &app).await.expect_err("a fourth pending handshake");
    let body = assert_problem(refused, 429).await;
    assert!(body["detail"].as_str().unwrap_or("").contains("handshake"), "{body}");
    handshake(&elsewhere, &app).await.expect("another address has its own count");

    // Without a CONNECT the server closes each session after the connect timeout, which
    // frees its place.
    let deadline = Instant::now() + BOUND;
    while poll(&here, &app, &sids[0]).await == 200 {
        assert!(Instant::now() < deadline, "the pending session is still open after {BOUND:?}");
    }
    assert_eq!(poll(&here, &app, &sids[0]).await, 400, "the session is gone");
    loop {
        match handshake(&here, &app).await {
            Ok(_) => break,
            Err(response) => assert_eq!(response.status(), 429),
        }
        assert!(Instant::now() < deadline, "the address stays refused after {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.contains(r#"realtime_connections_refused_total{reason="handshake_cap"}"#), "counted");
    app.stop().await;
}

#[tokio::test]
async fn a_handshake_that_connects_frees_its_place_at_once() {
    let app = spawn(&[("REALTIME_MAX_CONNECTIONS_PER_ADDRESS", "2"), ("REALTIME_CONNECT_TIMEOUT_SECS", "60")]).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    // Each connection handshakes, then connects: more handshakes in a row than the cap, and
    // none waits for the connect timeout.
    for i in 0..4 {
        let id = format!("c{i}");
        peer.admitted(&id, &app, "polling", &user.access_token).await;
        peer.close(&id).await;
    }
    // A raw session that connects, with a valid token, also frees its place.
    let client = client_from(1);
    let sid = handshake(&client, &app).await.expect("first");
    let connect = format!("40{}", json!({ "token": user.access_token }));
    let url = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(client.post(url).body(connect).send().await.expect("sent").status(), 200);
    let deadline = Instant::now() + BOUND;
    for _ in 0..2 {
        while handshake(&client, &app).await.is_err() {
            assert!(Instant::now() < deadline, "the connected session still counts as pending");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    app.stop().await;
}
