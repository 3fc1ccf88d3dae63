//! Every client event passes the socket's event budget: an unknown event is answered
//! `unknown_event`, an event over the rate `rate_limited` (both `{ok: false, error: {code,
//! message}}` when the client asked for an ack, nothing otherwise), and a socket that keeps
//! being refused gets `session:closing` with `rate_limited` and is closed; other sockets,
//! and the server, go on. Events are counted by name in `/metrics`.

use serde_json::{Value, json};

use crate::realtime::{Peer, TRANSPORTS, spawn};

fn assert_error_ack(ack: &Value, code: &str) {
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], code, "{ack}");
    assert!(ack["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{ack}");
}

#[tokio::test]
async fn an_unknown_event_gets_an_error_ack_and_the_socket_stays_open() {
    let app = spawn(&[]).await;
    let user = app.user("user").await;
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        peer.admitted(transport, &app, transport, &user.access_token).await;
        assert_error_ack(&peer.ask(transport, "no:such:event", json!({ "x": 1 })).await, "unknown_event");
        // Without an ack nothing comes back, and the socket goes on.
        peer.tell(transport, "no:such:event", json!("whatever")).await;
        assert_error_ack(&peer.ask(transport, "", json!(null)).await, "unknown_event");
        assert_eq!(peer.whoami(transport).await["user_id"], json!(user.id));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_flood_is_refused_with_rate_limited_then_closed_and_nothing_else_breaks() {
    let app = spawn(&[
        ("REALTIME_EVENTS_PER_SECOND", "1"),
        ("REALTIME_EVENT_BURST", "3"),
        ("REALTIME_REFUSED_EVENTS_PER_MINUTE", "4"),
    ])
    .await;
    let (user, other) = (app.user("user").await, app.user("user").await);
    let mut peer = Peer::start().await;
    for transport in TRANSPORTS {
        let flooder = format!("flooder-{transport}");
        let calm = format!("calm-{transport}");
        peer.admitted(&flooder, &app, transport, &user.access_token).await;
        peer.admitted(&calm, &app, transport, &other.access_token).await;
        // One unknown event: refused, though within the rate.
        assert_error_ack(&peer.ask(&flooder, "no:such:event", json!(null)).await, "unknown_event");
        // The rest of the burst passes (the GCRA may have refilled more meanwhile, never less).
        let mut answered = 0;
        loop {
            let ack = peer.ask(&flooder, "whoami", json!(null)).await;
            if ack["user_id"] != json!(user.id) {
                assert_error_ack(&ack, "rate_limited");
                break;
            }
            answered += 1;
            assert!(answered <= 10, "never limited");
        }
        assert!(answered >= 2, "the burst of 3 passed: {answered} and the unknown event");
        // Every further unknown event is refused too, whatever the rate: the fifth refusal
        // within the minute closes the socket.
        for _ in 0..6 {
            peer.send(json!({ "op": "emit", "id": flooder, "event": "no:such:event", "data": null })).await;
        }
        let mut closing = None;
        loop {
            let event = peer.next(&flooder).await;
            match (event["event"].as_str(), event["name"].as_str()) {
                (Some("emitted"), _) => {}
                (Some("server_event"), Some("session:closing")) => closing = Some(event["data"].clone()),
                (Some("disconnect"), _) => {
                    // A polling client still posting its flood may see its next POST refused
                    // by the closed session before its poll brings the disconnect.
                    let allowed: &[&str] = if transport == "polling" {
                        &["io server disconnect", "transport error"]
                    } else {
                        &["io server disconnect"]
                    };
                    assert!(allowed.contains(&event["reason"].as_str().unwrap_or_default()), "{event}");
                    break;
                }
                _ => panic!("{flooder}: unexpected {event}"),
            }
        }
        let closing = closing.expect("session:closing before the disconnect");
        assert_eq!(closing["code"], "rate_limited", "{closing}");
        // Another socket was never touched.
        assert_eq!(peer.whoami(&calm).await["user_id"], json!(other.id));
    }
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    for series in [
        "realtime_events_in_total{event=\"whoami\"}",
        "realtime_events_in_total{event=\"unknown\"}",
        "realtime_events_refused_total{reason=\"rate_limited\"}",
        "realtime_events_refused_total{reason=\"unknown_event\"}",
        "realtime_events_out_total{event=\"session:closing\"}",
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(series)), "{series} in /metrics");
    }
    app.stop().await;
}
