//! One keep-alive HTTP/1.1 connection that sends a fixed `GET` and reads whole responses.
//!
//! Deliberately minimal, like `wrk`'s client: the request bytes are built once, each
//! exchange is one write and usually one read on the socket, and the response is parsed
//! only far enough (status, `Content-Length`) to know where it ends. A general client
//! (hyper's) costs two tasks and a channel hand-off per request, which on a single client
//! core capped the rate below what the servers under test sustain.
//!
//! Invariant: at most one request is in flight per connection, so the bytes read belong to
//! the current response only. Responses without `Content-Length` are refused (the servers
//! under test always send it for these routes).

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Responses larger than this are an error: the routes measured answer a few hundred bytes.
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buffer: Box<[u8]>,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, buffer: vec![0; BUFFER_BYTES].into_boxed_slice() })
    }

    /// Sends `request` and reads the whole response; returns its status code.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<u16> {
        self.write_all(request).await?;
        let mut filled = 0;
        loop {
            if filled == self.buffer.len() {
                return Err(io::Error::other("response larger than the read buffer"));
            }
            self.stream.readable().await?;
            match self.stream.try_read(&mut self.buffer[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            if let Some(status) = complete_response(&self.buffer[..filled])? {
                return Ok(status);
            }
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The request line and headers of a `GET` for `path` (origin form, e.g. `/health`).
pub fn get_request(addr: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let valid = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
}

/// The status code once `bytes` hold a whole response, `None` while more is to come.
fn complete_response(bytes: &[u8]) -> io::Result<Option<u16>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes).map_err(io::Error::other)? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
        .ok_or_else(|| io::Error::other("response without a valid Content-Length"))?;
    Ok((bytes.len() >= head + length).then_some(response.code.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_when_its_body_has_arrived() -> io::Result<()> {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}";
        assert_eq!(complete_response(whole)?, Some(200));
        assert_eq!(complete_response(&whole[..whole.len() - 1])?, None);
        assert_eq!(complete_response(&whole[..20])?, None);
        Ok(())
    }

    #[test]
    fn a_response_without_content_length_is_refused() {
        assert!(complete_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn paths_must_be_origin_form() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8000));
        assert_eq!(
            get_request(addr, "/health").as_deref(),
            Some(&b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"[..])
        );
        assert!(get_request(addr, "health").is_none());
        assert!(get_request(addr, "/a b").is_none());
    }
}
