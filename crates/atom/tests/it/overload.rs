//! Overload protection over real sockets: a slowloris client is cut off while a normal one
//! is served, connection caps per address, load shedding that spares `/health` and `/ready`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{TestApp, assert_problem};

async fn connect_from(last_octet: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(IpAddr::from([127, 0, 0, last_octet]), 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Whether the server closed the connection within `within` (a read returns 0 or fails).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let app = TestApp::spawn_with(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")], axum::Router::new()).await;
    let mut slow = connect_from(8, app.addr).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\n").await.expect("write");
    // A header line every 300 ms for up to a minute: the head is never complete, so only
    // the header-read timeout (1 s) can end it before the drip runs out.
    let dripping = tokio::spawn(async move {
        for i in 0..200 {
            if slow.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes()).await.is_err() {
                return (slow, true);
            }
            if closed_within(&mut slow, Duration::from_millis(300)).await {
                return (slow, true);
            }
        }
        (slow, false)
    });
    for _ in 0..5 {
        assert_eq!(app.get("/health").await.status(), 200, "normal clients are served meanwhile");
    }
    let (_slow, cut) = dripping.await.expect("task");
    assert!(cut, "the slowloris was cut off before its minute of dripping ended");
    app.stop().await;
}

/// Sends one `GET /health` on `stream` and reads its whole (small) response.
async fn health_on(stream: &mut TcpStream) {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\n\r\n").await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 2048];
    while !response.ends_with(b"{\"status\":\"ok\"}") {
        let n =
            tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("answered").expect("read");
        assert!(n > 0, "closed while a request was answered");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&response));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_timeout_and_a_busy_one_is_not() {
    let app = TestApp::spawn_with(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "2")], axum::Router::new()).await;
    let mut idle = connect_from(10, app.addr).await;
    let mut busy = connect_from(11, app.addr).await;
    health_on(&mut idle).await;
    health_on(&mut busy).await;
    // The busy connection sends a request every 100 ms or so (a check of the idle one)
    // until the idle one is closed, which takes the timeout: the busy one outlived it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !closed_within(&mut idle, Duration::from_millis(100)).await {
        assert!(Instant::now() < deadline, "the idle connection is still open after 30 s");
        health_on(&mut busy).await;
    }
    health_on(&mut busy).await;
    app.stop().await;
}

/// What the server answers to a `GET /health` carrying one header of `size` bytes; a write
/// cut short by the server's close is not an error here.
async fn answer_to_header_of(app: &TestApp, size: usize) -> String {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!("GET /health HTTP/1.1\r\nHost: atom\r\nX-Big: {}\r\n\r\n", "b".repeat(size));
    let _ = stream.write_all(head.as_bytes()).await;
    let mut response = vec![0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response)).await.expect("answered").unwrap_or(0);
    String::from_utf8_lossy(&response[..n]).into_owned()
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_before_it_fills_memory() {
    let app = TestApp::spawn_with(&[("HTTP_MAX_HEADER_BYTES", "16384")], axum::Router::new()).await;
    let under = answer_to_header_of(&app, 10_000).await;
    assert!(under.starts_with("HTTP/1.1 200 "), "{under}");
    // Over the limit, within hyper's read buffer (twice the limit): the stack's problem.
    let over = answer_to_header_of(&app, 20_000).await;
    assert!(over.starts_with("HTTP/1.1 431 "), "{over}");
    assert!(over.contains("\r\ncontent-type: application/problem+json\r\n"), "{over}");
    assert!(over.contains(r#""type":"urn:atom:problem:headers-too-large""#), "{over}");
    // Past the buffer: hyper refuses it itself, before it is parsed, and closes.
    for size in [40_000, 1_000_000] {
        let over = answer_to_header_of(&app, size).await;
        assert!(over.starts_with("HTTP/1.1 431 "), "{size}: {over}");
    }
    assert_eq!(app.get("/health").await.status(), 200, "the server goes on serving");
    app.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let app = TestApp::spawn_with(&[("HTTP_MAX_CONNECTIONS_PER_IP", "2")], axum::Router::new()).await;
    // Two connections the server has accepted and served (so counted) and keeps open.
    let mut held = [connect_from(9, app.addr).await, connect_from(9, app.addr).await];
    for stream in &mut held {
        health_on(stream).await;
    }
    let mut third = connect_from(9, app.addr).await;
    let _ = third.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\n\r\n").await;
    assert!(closed_within(&mut third, Duration::from_secs(10)).await, "third connection from one address closed");

    let mut other = connect_from(10, app.addr).await;
    other.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut response = String::new();
    other.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "another address is served: {response}");
    app.stop().await;
}

#[tokio::test]
async fn past_capacity_requests_are_shed_with_503_while_health_and_ready_answer() {
    // Requests held until the test lets them go, however long the checks take.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = {
        let gate = std::sync::Arc::clone(&gate);
        axum::Router::new().route(
            "/test/held",
            axum::routing::get(move || {
                let gate = std::sync::Arc::clone(&gate);
                async move {
                    let _permit = gate.acquire().await.expect("open");
                    "done"
                }
            }),
        )
    };
    let app = TestApp::spawn_with(&[("HTTP_MAX_IN_FLIGHT", "2"), ("RATE_LIMIT_ENABLED", "false")], held).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (client, url) = (reqwest::Client::new(), app.url("/test/held"));
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    // Until both are being answered (the application's own in-flight gauge says so).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut text = String::new();
        app.state.http_metrics.render(&mut text);
        if text.lines().any(|l| l == "http_requests_in_flight 2") {
            break;
        }
        assert!(Instant::now() < deadline, "the held requests never both reached the server:\n{text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = app.client.get(app.url("/openapi.json")).send().await.expect("sent");
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = assert_problem(shed, 503).await;
    assert_eq!(body["type"], "urn:atom:problem:overloaded");
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.get("/ready").await.status(), 200);
    gate.add_permits(2);
    for request in slow {
        assert_eq!(request.await.expect("task").expect("sent").status(), 200, "admitted requests complete");
    }
    assert_eq!(app.get("/openapi.json").await.status(), 200, "capacity is back");
    app.stop().await;
}

/// Sends one keep-alive request on `stream` and reads its answer's head: the connection was
/// admitted and stays open.
async fn served_on(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.expect("answered").expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_once_whatever_their_address() {
    let app = TestApp::spawn_with(&[("HTTP_MAX_CONNECTIONS", "2")], axum::Router::new()).await;
    // Two connections from two addresses, each under the per-address cap, fill the total.
    let mut held = [connect_from(11, app.addr).await, connect_from(12, app.addr).await];
    for stream in &mut held {
        let answer = served_on(stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut third = connect_from(13, app.addr).await;
    let _ = third.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\n\r\n").await;
    assert!(closed_within(&mut third, Duration::from_secs(10)).await, "a third connection is closed");

    // One closes: its place is free again, as soon as the server has seen it go.
    let [first, mut second] = held;
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut next = connect_from(13, app.addr).await;
        let _ = next.write_all(b"GET /health HTTP/1.1\r\nHost: atom\r\nConnection: close\r\n\r\n").await;
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_string(&mut response)).await;
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never given to a new connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_on(&mut second).await.starts_with("HTTP/1.1 200"), "the held connection still works");
    app.stop().await;
}
