//! Names and formats that cross the wire, shared by every floor of the crate: the request-id
//! header and RFC 3339 times. A leaf: it imports nothing of the crate.

use axum::http::HeaderName;

/// The request id's header: kept from the client when valid, else made by the stack, sent
/// back on every response and recorded in log lines and audit rows.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Formats milliseconds since the Unix epoch as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}
