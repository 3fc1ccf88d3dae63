//! Security headers on every response, after the OWASP Secure Headers Project, and CORS for
//! an exact allowlist of origins.
//!
//! The API answers JSON only, so its CSP forbids everything and framing is denied; a page
//! that needs more (the dashboard) sets its own `Content-Security-Policy` and this layer
//! leaves it. Responses are `Cache-Control: no-store` unless a handler says otherwise
//! (the JWKS is public and cacheable).

use axum::http::header::HeaderName;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
const PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), \
     magnetometer=(), microphone=(), payment=(), usb=(), interest-cohort=()";
const HSTS: &str = "max-age=63072000; includeSubDomains";
const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
const PERMISSIONS: HeaderName = HeaderName::from_static("permissions-policy");

/// Sets the security headers on a response's headers; `hsts` when the public URL is https.
pub fn stamp(h: &mut HeaderMap, hsts: bool) {
    // Room for these and the request id at once, instead of growing the map twice.
    h.reserve(12);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(API_CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(COOP, HeaderValue::from_static("same-origin"));
    h.insert(CORP, HeaderValue::from_static("same-origin"));
    h.insert(PERMISSIONS, HeaderValue::from_static(PERMISSIONS_POLICY));
    if hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    h.remove(header::SERVER);
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
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
