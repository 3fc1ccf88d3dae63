//! Security headers on every response, and CORS for an exact allowlist of origins.
//!
//! The API answers JSON (and the Prometheus text), so every response carries the headers the
//! OWASP REST Security Cheat Sheet asks of API responses: `Cache-Control: no-store`, a CSP
//! that forbids everything and framing (`frame-ancestors 'none'`), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff`, HSTS when the public URL is https, and
//! `Cross-Origin-Resource-Policy: same-origin`, which keeps another site from loading a
//! response as a no-cors resource. The headers that only act on an HTML document
//! (`Referrer-Policy`, `Cross-Origin-Opener-Policy`, `Permissions-Policy`, the CSP's
//! `base-uri` and `form-action`) are not sent: they protect nothing on JSON and cost every
//! response their bytes (on loopback, 250 more bytes per response take about a twentieth of
//! a trivial route's throughput). A page that needs them sets them
//! itself, with its own `Content-Security-Policy`; this layer leaves those. Responses are
//! `Cache-Control: no-store` unless a handler says otherwise (the JWKS is public and
//! cacheable).

use axum::http::header::HeaderName;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::http::middleware::REQUEST_ID;

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
const HSTS: &str = "max-age=63072000; includeSubDomains";
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

/// The security headers, made once: every response gets a copy of this map, and the
/// handler's own headers go back on top. Cloning a few ready entries is cheaper than hashing
/// each name into every response, and the copy also holds
/// empty slots for the headers nearly every response carries (`X-Request-Id`,
/// `Content-Type`, `Content-Length`, and on rate-limited routes the rate-limit headers),
/// first in the copy, so that filling them in replaces a value in place, found by its
/// position, instead of hashing a name and growing the map.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    base: HeaderMap,
    /// `base` with slots for the rate-limit headers too, for responses that carry them.
    limited: HeaderMap,
}

/// Headers a handler cannot change: the security headers it has no business loosening,
/// `Server`, which is never sent, and `X-Request-Id`, which is the stack's. A `static`, so
/// that checking a name builds and drops nothing.
static FORCED: [HeaderName; 6] = [
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
    header::STRICT_TRANSPORT_SECURITY,
    header::SERVER,
    CORP,
    REQUEST_ID,
];

/// The slots of the copy besides `X-Request-Id`: headers that most responses carry, sent only
/// when the response has them (axum's router sets `Content-Length` from the body). The
/// rate-limit headers (the last two) have slots only in the copy for rate-limited responses.
static SLOTS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    HeaderName::from_static("ratelimit-policy"),
    HeaderName::from_static("ratelimit"),
];

impl SecurityHeaders {
    /// `hsts` when the public URL is https.
    pub fn new(hsts: bool) -> Self {
        let build = |slots: &[HeaderName]| {
            let mut h = HeaderMap::with_capacity(16);
            // The slots first, filled in (or removed) by `stamp` by their position.
            for slot in [&REQUEST_ID].into_iter().chain(slots) {
                h.insert(slot, HeaderValue::from_static(""));
            }
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
            h.insert(CORP, HeaderValue::from_static("same-origin"));
            if hsts {
                h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h
        };
        Self { base: build(&SLOTS[..2]), limited: build(&SLOTS) }
    }

    /// The security headers themselves, without the slots: for a response made outside the
    /// stack ([`crate::http::refusal`]).
    pub fn fixed(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.base.iter().filter(|(_, value)| !value.is_empty())
    }

    /// Sets the security headers and `X-Request-Id` on a response's headers. A handler's own
    /// `Content-Security-Policy` and `Cache-Control` win over the defaults; the other
    /// security headers are always the defaults, and `Server` is removed.
    ///
    /// One pass over the handler's headers sorts them into the slots and the rest; the slots
    /// are then filled by position (they are the copy's first entries), so that the common
    /// response, which has only slot headers of its own, hashes no header name.
    pub fn stamp(&self, headers: &mut HeaderMap, request_id: HeaderValue) {
        let own = std::mem::take(headers);
        // The slots' values, in the copy's order: `X-Request-Id`, then `SLOTS`.
        let mut values: [Option<HeaderValue>; 1 + SLOTS.len()] = [Some(request_id), None, None, None, None];
        // The handler's other headers (first value of a name or not): few, and rare.
        let mut others: Vec<(HeaderName, HeaderValue, bool)> = Vec::new();
        let mut current: Option<HeaderName> = None;
        let mut first = false;
        for (name, value) in own {
            if let Some(name) = name {
                first = true;
                current = Some(name);
            }
            let Some(name) = &current else { continue };
            let first_value = std::mem::take(&mut first);
            if first_value && let Some(slot) = SLOTS.iter().position(|slot| slot == name) {
                values[slot + 1] = Some(value);
            } else if !FORCED.contains(name) {
                others.push((name.clone(), value, first_value));
            }
        }
        // A rate-limited response carries the rate-limit headers; others carry neither.
        let limited = values[3..].iter().any(Option::is_some);
        let (base, slots) = if limited { (&self.limited, SLOTS.len()) } else { (&self.base, 2) };
        *headers = base.clone();
        let filled = values.each_ref().map(Option::is_some);
        for (slot, value) in headers.values_mut().zip(&mut values[..=slots]) {
            if let Some(value) = value.take() {
                *slot = value;
            }
        }
        // Rare (a response without a body): a removal moves the map's last entry into the gap.
        for (slot, filled) in SLOTS[..slots].iter().zip(&filled[1..]) {
            if !filled {
                headers.remove(slot);
            }
        }
        for (name, value, first) in others {
            if first {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
    }
}

/// CORS for exactly the configured origins, with credentials; `None` when there are none
/// (then no CORS header is ever sent and browsers keep the same-origin policy).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            // An exact, byte-for-byte list: no wildcard, no `null`, no substring matching.
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                REQUEST_ID,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                REQUEST_ID,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_keeps_the_handlers_headers_and_fills_or_drops_the_slots() {
        let headers = SecurityHeaders::new(false);

        // A body: its type and length fill the slots; the handler's CSP and Cache-Control
        // win, its X-Frame-Options and Server do not; repeated values stay repeated.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        h.insert(header::SERVER, HeaderValue::from_static("leaky/1.0"));
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        h.append(header::VARY, HeaderValue::from_static("Accept"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        headers.stamp(&mut h, HeaderValue::from_static("req-1"));
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
        assert_eq!(h[header::CONTENT_LENGTH], "5");
        assert_eq!(h[REQUEST_ID], "req-1");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "default-src 'self'");
        assert_eq!(h[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h.get(header::SERVER).is_none());
        assert_eq!(h.get_all(header::VARY).iter().count(), 2);
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "a page's own document headers are kept");
        assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none());

        // No body: the empty slots are not sent.
        let mut h = HeaderMap::new();
        headers.stamp(&mut h, HeaderValue::from_static("req-2"));
        assert!(h.get(header::CONTENT_TYPE).is_none());
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        assert!(h.get("ratelimit").is_none() && h.get("ratelimit-policy").is_none());
        assert_eq!(h.len(), 6, "the security headers and the id, no empty value: {h:?}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");

        // A limited route's headers fill their slots.
        let mut h = HeaderMap::new();
        h.insert("ratelimit", HeaderValue::from_static("\"api\";r=9;t=1"));
        h.append("ratelimit", HeaderValue::from_static("\"auth\";r=1;t=5"));
        headers.stamp(&mut h, HeaderValue::from_static("req-4"));
        let values: Vec<_> = h.get_all("ratelimit").iter().collect();
        assert_eq!(values, ["\"api\";r=9;t=1", "\"auth\";r=1;t=5"], "a slot's second value follows its first");
        assert_eq!(h[REQUEST_ID], "req-4");
        assert!(h.get("ratelimit-policy").is_none());
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], API_CSP);

        let mut h = HeaderMap::new();
        SecurityHeaders::new(true).stamp(&mut h, HeaderValue::from_static("req-3"));
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }
}
