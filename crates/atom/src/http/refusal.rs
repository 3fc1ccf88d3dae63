//! Problem+json for the requests hyper refuses itself.
//!
//! A request that cannot be parsed (a malformed request line or header), whose head is over
//! `http.max_header_bytes` or whose URI is too long never reaches a service: hyper answers it
//! at once with 400, 431 or 414, an empty body, and closes the connection. Every other error
//! response of Atom is problem+json with a request id, so these are too: the connection's
//! socket ([`crate::http::watchdog::Watched`]) recognises hyper's automatic answer on its way
//! out, byte for byte, and writes [`Refusals::replace`]'s response in its place.
//!
//! The match is exact (hyper's status line, `connection: close`, `content-length: 0`, its
//! date, nothing else), and only a write that begins a response can be one, so a response of
//! the stack (which always carries `X-Request-Id`) or a body is never taken for it.

use axum::http::StatusCode;

use crate::edge::headers::SecurityHeaders;
use crate::error::{PROBLEM_JSON, Problem};
use crate::http::middleware::new_request_id;

/// The statuses hyper answers by itself (`on_error` of its HTTP/1 server role).
const STATUSES: [&[u8]; 3] = [b"400", b"414", b"431"];

/// What follows hyper's status line, up to its 29-byte date.
const HYPER_HEAD: &[u8] = b"connection: close\r\ncontent-length: 0\r\ndate: ";

/// The response written instead of hyper's: the same status and date, with the security
/// headers, made once.
#[derive(Debug)]
pub struct Refusals {
    /// `name: value\r\n` for each security header.
    security: Vec<u8>,
}

impl Refusals {
    pub fn new(headers: &SecurityHeaders) -> Self {
        let mut security = Vec::new();
        for (name, value) in headers.fixed() {
            security.extend_from_slice(name.as_str().as_bytes());
            security.extend_from_slice(b": ");
            security.extend_from_slice(value.as_bytes());
            security.extend_from_slice(b"\r\n");
        }
        Self { security }
    }

    /// Whether `bytes` can begin one of hyper's automatic answers: cheap, for every write.
    pub fn may_be(bytes: &[u8]) -> bool {
        bytes.starts_with(b"HTTP/1.1 4")
    }

    /// The problem+json response to send instead of `bytes`, when `bytes` is exactly hyper's
    /// automatic answer to a request it could not take.
    pub fn replace(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
        let (status_line, rest) = (&bytes[..line_end + 2], &bytes[line_end + 2..]);
        let code = status_line.get(9..12)?;
        if !STATUSES.contains(&code) || status_line.get(12) != Some(&b' ') {
            return None;
        }
        let date = rest.strip_prefix(HYPER_HEAD)?.strip_suffix(b"\r\n\r\n")?;
        if date.len() != 29 || date.contains(&b'\r') {
            return None;
        }
        let status = StatusCode::from_bytes(code).ok()?;
        let detail = match status {
            StatusCode::URI_TOO_LONG => "The request's URI is longer than the server accepts.",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "The request's headers are larger than the server accepts.",
            _ => "The request is not valid HTTP/1.1.",
        };
        let request_id = new_request_id();
        let request_id = request_id.to_str().unwrap_or("-");
        tracing::info!(target: "atom::http", status = status.as_u16(), request_id, "request refused before parsing");
        metrics::counter!("http_requests_refused_total", "status" => status.as_str().to_owned()).increment(1);
        let problem = Problem { request_id: Some(request_id.to_owned()), ..Problem::for_status(status, detail) };
        let body = serde_json::to_vec(&problem).ok()?;

        let mut out = Vec::with_capacity(512 + body.len());
        out.extend_from_slice(status_line);
        out.extend_from_slice(b"connection: close\r\ncontent-type: ");
        out.extend_from_slice(PROBLEM_JSON.as_bytes());
        out.extend_from_slice(
            format!("\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\n", body.len()).as_bytes(),
        );
        out.extend_from_slice(&self.security);
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 29 Nov 2026 05:48:40 GMT";

    fn hyper(status_line: &str) -> Vec<u8> {
        format!("{status_line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n").into_bytes()
    }

    #[test]
    fn hypers_own_answers_become_problems_with_the_security_headers() {
        let refusals = Refusals::new(&SecurityHeaders::new(false));
        for (line, status) in [
            ("HTTP/1.1 400 Bad Request", 400),
            ("HTTP/1.1 414 URI Too Long", 414),
            ("HTTP/1.1 431 Request Header Fields Too Large", 431),
        ] {
            let bytes = hyper(line);
            assert!(Refusals::may_be(&bytes));
            let out = String::from_utf8(refusals.replace(&bytes).expect(line)).expect("utf-8");
            let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
            assert!(head.starts_with(line), "{head}");
            assert!(head.contains("\r\ncontent-type: application/problem+json\r\n"), "{head}");
            assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())), "{head}");
            assert!(head.contains("\r\nx-content-type-options: nosniff\r\n"), "{head}");
            assert!(head.ends_with(&format!("date: {DATE}")), "{head}");
            let problem: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(problem["status"], status);
            let id = problem["request_id"].as_str().expect("request id");
            assert!(head.contains(&format!("\r\nx-request-id: {id}\r\n")), "{head}");
        }
    }

    #[test]
    fn anything_else_is_left_alone() {
        let refusals = Refusals::new(&SecurityHeaders::new(false));
        let others = [
            hyper("HTTP/1.1 404 Not Found"),
            hyper("HTTP/1.1 400 Bad Request").into_iter().chain(*b"body").collect(),
            b"HTTP/1.1 400 Bad Request\r\nx-request-id: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: short\r\n\r\n".to_vec(),
            b"HTTP/1.1 4".to_vec(),
        ];
        for bytes in others {
            assert!(refusals.replace(&bytes).is_none(), "{}", String::from_utf8_lossy(&bytes));
        }
        assert!(!Refusals::may_be(b"HTTP/1.1 200 OK\r\n"));
    }
}
