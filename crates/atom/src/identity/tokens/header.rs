//! The checks that run before any cryptography: size, shape and the JOSE header.
//!
//! They decide which of our keys may verify the token, from our configuration and the `kid`
//! alone: the header's `alg` is compared with the one algorithm we sign with, never used to
//! pick a key or an algorithm (RFC 8725 §3.1), and key-carrying members (`jwk`, `jku`, `x5u`,
//! `x5c`) are never read (RFC 8725 §3.10). Invariant: the header is parsed here by a stricter
//! parser than `jsonwebtoken`'s (one JSON object, no repeated member), so the two can never
//! disagree about what a header says.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::TokenError;

/// The largest token we look at. Ours are well under 1 KiB; the cap bounds the work and the
/// memory an attacker can make us spend before the signature is checked.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The only JWS algorithm we sign and accept.
pub(super) const ALGORITHM: &str = "EdDSA";

/// The `typ` we put in every access token (RFC 9068 §2.1).
pub(super) const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Runs the pre-signature checks and returns the header's `kid`.
pub(super) fn check(token: &str) -> Result<String, TokenError> {
    if token.is_empty() {
        return Err(TokenError::malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::malformed("token larger than the size cap"));
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(TokenError::malformed("not three dot-separated segments"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::malformed("empty header or payload segment"));
    }
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|e| TokenError::malformed_by("header is not base64url", e))?;
    let StrictObject(mut header) =
        serde_json::from_slice(&json).map_err(|e| TokenError::malformed_by("header is not one JSON object", e))?;

    match header.get("alg") {
        // Exact match: JOSE names are case-sensitive, so "none", "None" and "EDDSA" all fail.
        Some(Value::String(alg)) if alg == ALGORITHM => {}
        Some(Value::String(_)) => return Err(TokenError::UnsupportedAlgorithm),
        _ => return Err(TokenError::malformed("header has no alg string")),
    }
    // RFC 7515 §4.1.11: a recipient must reject a token whose `crit` lists an extension it
    // does not understand. We understand none (ours never carry `crit`), so any `crit` fails,
    // including `b64` (RFC 7797), which would change what the signature covers.
    if header.contains_key("crit") {
        return Err(TokenError::malformed("header has a crit extension"));
    }
    match header.get("typ") {
        Some(Value::String(typ)) if is_access_token_type(typ) => {}
        _ => return Err(TokenError::WrongType),
    }
    // The kid is a lookup key into our own keyset and nothing else: never a path, a URL or a
    // query. A token without one is not ours.
    match header.remove("kid") {
        Some(Value::String(kid)) => Ok(kid),
        _ => Err(TokenError::UnknownKey),
    }
}

/// RFC 9068 §4: `at+jwt`, or its full media type `application/at+jwt`; media types compare
/// without regard to case (RFC 7515 §4.1.9 with RFC 2045).
fn is_access_token_type(typ: &str) -> bool {
    let bare = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
}

/// A JSON object that rejects a repeated member instead of keeping the last one, which is
/// what `serde_json::Map` would do (RFC 7515 §5.2 allows either; rejecting leaves no room
/// for two parsers to read two different headers).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrictVisitor;

        impl<'de> Visitor<'de> for StrictVisitor {
            type Value = StrictObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    if map.contains_key(&name) {
                        return Err(de::Error::custom("repeated header member"));
                    }
                    let value = access.next_value()?;
                    map.insert(name, value);
                }
                Ok(StrictObject(map))
            }
        }

        deserializer.deserialize_map(StrictVisitor)
    }
}
