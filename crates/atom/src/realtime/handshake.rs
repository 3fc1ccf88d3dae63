//! Pending handshakes: an Engine.IO session opened but not yet turned into a Socket.io
//! connection costs the server memory until the connect timeout closes it, and no credential
//! has been checked yet. Each new session (a request to [`super::PATH`] without a `sid`
//! parameter, over either transport) counts against its client address in
//! [`ConnectionCaps::begin_handshake`]; past `realtime.max_connections_per_address` pending
//! ones, the request gets a 429 problem, counted as
//! `realtime_connections_refused_total{reason="handshake_cap"}`.
//!
//! The same middleware hands socketioxide a slim copy of each request ([`slim`]): engineioxide
//! keeps the parts of the request that opened a session for the session's life, and hyper's
//! header values and URI are slices of the connection's read buffer (about 16 KiB a connection
//! under heaptrack), so keeping any of them would keep the whole buffer, for every connection.
//! The copy holds what engineioxide reads (the URI's path and query, `Content-Type` of a
//! polling POST, `Sec-WebSocket-Key` of an upgrade), hyper's upgrade handle, and the client
//! address worked out here, once, as [`ClientAddress`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_TYPE, SEC_WEBSOCKET_KEY};
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ConnectionCaps;
use crate::edge::Edge;
use crate::error::ApiError;

/// What the gate needs.
#[derive(Debug, Clone)]
pub(super) struct Gate {
    pub edge: Arc<Edge>,
    pub caps: Arc<ConnectionCaps>,
    pub retry_after_secs: u64,
}

/// The client address of a Socket.io session, as the edge sees it (behind trusted proxies,
/// the forwarded one): in the extensions of the request socketioxide keeps, for
/// [`super::admit`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientAddress(pub IpAddr);

/// The middleware in front of the Socket.io service.
pub(super) async fn count_pending(State(gate): State<Gate>, req: Request, next: Next) -> Response {
    let address = gate.edge.client_ip(req.headers(), req.extensions());
    if opens_a_session(&req)
        && let Some(address) = address
        && gate.caps.begin_handshake(address).is_err()
    {
        metrics::counter!("realtime_connections_refused_total", "reason" => "handshake_cap").increment(1);
        tracing::info!(target: "atom::realtime", client_addr = %address, "socket.io handshake refused: too many pending");
        let detail = "Too many Socket.io handshakes from this address are waiting for their CONNECT.".to_owned();
        return ApiError::TooManyRequests { retry_after_secs: gate.retry_after_secs, detail }.into_response();
    }
    next.run(slim(req, address)).await
}

/// `req` with only what engineioxide and [`super::admit`] read, in allocations of its own (see
/// the module's documentation): the method, the path and query, the two headers engineioxide
/// reads, hyper's upgrade handle and the client address.
fn slim(req: Request, address: Option<IpAddr>) -> Request {
    let (parts, body) = req.into_parts();
    let mut slim = Request::new(body);
    *slim.method_mut() = parts.method;
    *slim.version_mut() = parts.version;
    // Parsing a `&str` copies it; a URI that does not parse back (it came from one) keeps the
    // original, which only costs memory.
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    *slim.uri_mut() = path_and_query.parse::<Uri>().unwrap_or(parts.uri);
    *slim.headers_mut() = copied(&parts.headers);
    let mut extensions = parts.extensions;
    if let Some(upgrade) = extensions.remove::<hyper::upgrade::OnUpgrade>() {
        slim.extensions_mut().insert(upgrade);
    }
    if let Some(address) = address {
        slim.extensions_mut().insert(ClientAddress(address));
    }
    slim
}

/// The headers engineioxide reads, copied out of the connection's read buffer, in a map sized
/// for them (a request has one of them at most: a websocket opens with a GET).
fn copied(headers: &HeaderMap) -> HeaderMap {
    let read = [CONTENT_TYPE, SEC_WEBSOCKET_KEY].map(|name| {
        let value = headers.get(&name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        (name, value)
    });
    let mut kept = HeaderMap::with_capacity(read.iter().filter(|(_, v)| v.is_some()).count());
    for (name, value) in read {
        if let Some(value) = value {
            kept.insert(name, value);
        }
    }
    kept
}

/// An Engine.IO request without a session id opens a new session.
fn opens_a_session(req: &Request) -> bool {
    let query = req.uri().query().unwrap_or("");
    !form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "sid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socketioxide_gets_the_path_query_two_headers_and_the_address_only() {
        let req = Request::get("http://example.com/socket.io/?EIO=4&transport=websocket")
            .header(SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header("cookie", "session=secret")
            .header("user-agent", "test")
            .extension(7_u32)
            .body(axum::body::Body::empty())
            .expect("request");
        let address = IpAddr::from([192, 0, 2, 7]);
        let slim = slim(req, Some(address));
        assert_eq!(slim.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(slim.headers().len(), 1, "{:?}", slim.headers());
        assert_eq!(slim.headers()[SEC_WEBSOCKET_KEY], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(slim.extensions().get::<ClientAddress>().map(|a| a.0), Some(address));
        assert_eq!(slim.extensions().get::<u32>(), None, "other extensions are dropped");
    }
}
