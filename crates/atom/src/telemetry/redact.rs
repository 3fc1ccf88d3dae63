//! Redaction of credential-shaped path segments before a path reaches a log line.
//!
//! A client that puts a secret into a path (`DELETE /v1/api-keys/atom_sk_…` instead of the
//! key's id) must not get it written into the request log. [`redact_path`] replaces every
//! segment that looks like a credential with `[redacted]` and keeps the rest, so that the
//! ids this API uses stay readable:
//!
//! - redacted: our API keys (`atom_sk_…`) and invite codes (`atom_inv_…`), JWT-shaped
//!   `header.payload.signature` triples, and any run of 32 or more base64url characters
//!   mixing upper and lower case (our refresh tokens and key secrets are 43 such characters);
//! - kept: UUIDs (`0b7c…-…`, the ids of accounts, keys, sessions and audit rows), hex ids of
//!   any length (request ids, key prefixes, hashes), short or single-case words and slugs.
//!
//! Segments are judged percent-decoded, so `atom%5Fsk%5F…` is caught as well.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// What replaces a credential-shaped segment.
pub const REDACTED: &str = "[redacted]";

/// Prefixes of the secrets this server issues.
const SECRET_PREFIXES: &[&str] = &["atom_sk_", "atom_inv_"];

/// The shortest run of base64url characters treated as a possible secret.
const MIN_TOKEN_LEN: usize = 32;

/// `path` with every credential-shaped segment replaced by `[redacted]`; borrowed when
/// nothing is replaced.
pub fn redact_path(path: &str) -> Cow<'_, str> {
    if !path.split('/').any(is_credential) {
        return Cow::Borrowed(path);
    }
    let redacted: Vec<&str> = path.split('/').map(|s| if is_credential(s) { REDACTED } else { s }).collect();
    Cow::Owned(redacted.join("/"))
}

fn is_credential(segment: &str) -> bool {
    if segment.len() < 8 {
        return false;
    }
    let decoded = percent_decode_str(segment).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    SECRET_PREFIXES.iter().any(|p| lower.contains(p))
        || is_jwt_shaped(&decoded)
        || decoded.split(|c: char| !is_base64url(c)).any(is_high_entropy_token)
}

fn is_base64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Three dot-separated base64url parts: a JWS in compact form (an unsigned one has an empty
/// third part). The header of every JWT is a JSON object, `{"…`, which encodes as `eyJ`;
/// three long parts count without it.
fn is_jwt_shaped(segment: &str) -> bool {
    let parts: Vec<&str> = segment.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else { return false };
    if !parts.iter().all(|p| p.chars().all(is_base64url)) || header.is_empty() || payload.is_empty() {
        return false;
    }
    (header.starts_with("eyJ") && payload.len() >= 4) || (parts.iter().all(|p| p.len() >= 16) && !signature.is_empty())
}

/// A long base64url run that is neither a UUID nor hex, and mixes upper and lower case as
/// random base64 does (a lower-case slug does not).
fn is_high_entropy_token(run: &str) -> bool {
    run.len() >= MIN_TOKEN_LEN
        && !is_uuid(run)
        && !run.chars().all(|c| c.is_ascii_hexdigit())
        && run.chars().any(|c| c.is_ascii_uppercase())
        && run.chars().any(|c| c.is_ascii_lowercase())
}

fn is_uuid(run: &str) -> bool {
    uuid::Uuid::try_parse(run).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "atom_sk_0123456789ab_dGhpcyBpcyBhIHNlY3JldCBrZXkgb2YgMzIgYnl0ZXM";
    const JWT: &str = "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLWJ5dGVz";
    const SECRET: &str = "q8Zr2VbN5mXw1Lk9TfHs4YdGc7JpE3uA6oRi0WnMbQe"; // random_secret's shape: 43 chars

    fn redacted(path: &str) -> String {
        redact_path(path).into_owned()
    }

    #[test]
    fn paths_without_credentials_are_borrowed_unchanged() {
        for path in [
            "/",
            "",
            "/health",
            "/v1/api-keys/5f0c7c52-9d55-4a8e-a9b2-8e5b1bb7a0f3",
            "/v1/admin/users/5F0C7C52-9D55-4A8E-A9B2-8E5B1BB7A0F3/disable",
            "/v1/requests/0b7c52a19d554a8ea9b28e5b1bb7a0f3",
            "/v1/keys/0123456789ab",
            "/v1/hashes/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15e6d15b0f00a08",
            "/v1/conversations/planning-the-quarterly-roadmap-review-2026",
            "/openapi.json",
            "/static/jquery.min.js",
            "/v1/versions/1.2.3",
            "/v1/api-keys/%00",
            "/v1/api-keys/x%ff",
            "/socket.io/",
        ] {
            assert!(matches!(redact_path(path), Cow::Borrowed(p) if p == path), "{path}");
        }
    }

    #[test]
    fn api_keys_and_invite_codes_are_redacted_wherever_they_sit() {
        assert_eq!(redacted(&format!("/v1/api-keys/{KEY}")), "/v1/api-keys/[redacted]");
        assert_eq!(redacted(&format!("/v1/api-keys/{KEY}/")), "/v1/api-keys/[redacted]/");
        assert_eq!(redacted(&format!("/{KEY}")), "/[redacted]");
        assert_eq!(redacted("/v1/api-keys/atom_sk_short"), "/v1/api-keys/[redacted]", "also truncated keys");
        assert_eq!(redacted("/v1/api-keys/ATOM_SK_0123"), "/v1/api-keys/[redacted]");
        assert_eq!(redacted(&format!("/v1/x/key={KEY}")), "/v1/x/[redacted]");
        assert_eq!(redacted("/v1/invites/atom_inv_abc123"), "/v1/invites/[redacted]");
        let escaped = KEY.replace('_', "%5F");
        assert_eq!(redacted(&format!("/v1/api-keys/{escaped}")), "/v1/api-keys/[redacted]");
    }

    #[test]
    fn jwt_shaped_segments_are_redacted() {
        assert_eq!(redacted(&format!("/v1/me/{JWT}")), "/v1/me/[redacted]");
        assert_eq!(redacted("/a/eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0./b"), "/a/[redacted]/b", "unsigned");
        let no_eyj = "abcdefghijklmnop.qrstuvwxyzABCDEF.GHIJKLMNOPQRSTUV";
        assert_eq!(redacted(&format!("/x/{no_eyj}")), "/x/[redacted]");
        assert_eq!(redacted(&format!("/x/{}", JWT.replace('.', "%2E"))), "/x/[redacted]");
    }

    #[test]
    fn long_mixed_case_base64url_tokens_are_redacted() {
        assert_eq!(redacted(&format!("/v1/auth/refresh/{SECRET}")), "/v1/auth/refresh/[redacted]");
        assert_eq!(redacted(&format!("/v1/x/Bearer%20{SECRET}")), "/v1/x/[redacted]");
        assert_eq!(redacted(&format!("/{SECRET}/{SECRET}/ok")), "/[redacted]/[redacted]/ok");
        let short = &SECRET[..31];
        assert_eq!(redacted(&format!("/v1/x/{short}")), format!("/v1/x/{short}"), "31 characters stay");
        assert_eq!(redacted(&format!("/v1/x/{}", &SECRET[..32])), "/v1/x/[redacted]", "32 do not");
    }

    #[test]
    fn only_the_credential_segment_changes() {
        let path = format!("/v1/users/5f0c7c52-9d55-4a8e-a9b2-8e5b1bb7a0f3/keys/{KEY}/revoke");
        assert_eq!(redacted(&path), "/v1/users/5f0c7c52-9d55-4a8e-a9b2-8e5b1bb7a0f3/keys/[redacted]/revoke");
    }
}
