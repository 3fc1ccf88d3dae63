//! Security headers on every response, and CORS for an exact allowlist of origins.
//!
//! The API answers JSON (and the Prometheus text), so every response carries the headers the
//! OWASP REST Security Cheat Sheet asks of API responses: `Cache-Control: no-store`, a CSP
//! that forbids everything and framing (`frame-ancestors 'none'`), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff`, HSTS when the public URL is https, and
//! `Cross-Origin-Resource-Policy: same-origin`, which keeps another site from loading a
//! response as a no-cors resource. The headers that only act on an HTML document
//! (`Referrer-Policy`, `Cross-Origin-Opener-Policy`, `Permissions-Policy`, the CSP's
//! `base-uri` and `form-action`) are not sent: they protect nothing on JSON and would add
//! their bytes to every response. A page that needs them sets them itself, with its own
//! `Content-Security-Policy`; these layers leave those. Responses are
//! `Cache-Control: no-store` unless a handler says otherwise (the JWKS is public and
//! cacheable).

use axum::http::header::HeaderName;
use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::wire::REQUEST_ID;

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
const HSTS: &str = "max-age=63072000; includeSubDomains";
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

/// The security headers, one tower-http layer each, and HSTS (when the public URL is https).
/// A handler's own `Content-Security-Policy` and `Cache-Control` win over the defaults (a
/// page sets its own CSP; the JWKS is cacheable); the other headers are always ours, since a
/// handler has no business loosening them.
pub fn security_headers(
    hsts: bool,
) -> ([SetResponseHeaderLayer<HeaderValue>; 5], Option<SetResponseHeaderLayer<HeaderValue>>) {
    let forced = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let default = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    let layers = [
        forced(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        forced(header::X_FRAME_OPTIONS, "DENY"),
        forced(CORP, "same-origin"),
        default(header::CONTENT_SECURITY_POLICY, API_CSP),
        default(header::CACHE_CONTROL, "no-store"),
    ];
    (layers, hsts.then(|| forced(header::STRICT_TRANSPORT_SECURITY, HSTS)))
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
