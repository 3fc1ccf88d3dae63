//! Tests for issuing and verifying, and the attack suite.
//!
//! Hostile tokens are built by hand, byte by byte: header and claims JSON, base64url, then an
//! Ed25519 signature made directly with `ed25519-dalek` (or an HMAC, or none), never through
//! the code under test, so a bug in issuing cannot hide a bug in verifying. Every negative
//! test asserts the exact [`TokenError`] variant. [`hand_crafted_token_is_accepted`] proves
//! the crafting itself is right, so each rejection is caused by the one change it makes.

mod claims;
mod forgery;
mod keys;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde_json::{Value, json};

use super::*;

const ISSUER: &str = "https://atom.example";
const AUDIENCE: &str = "https://atom.example/v1";

/// Asserts that verifying `$token` fails with exactly `$pattern`.
macro_rules! assert_rejected {
    ($tokens:expr, $token:expr, $pattern:pat) => {{
        let token: &str = &$token;
        let result = $tokens.verify(token);
        assert!(
            matches!(result, Err($pattern)),
            "expected {}, got {:?} for token {:.120}",
            stringify!($pattern),
            result,
            token
        );
    }};
}
use assert_rejected;

fn generate() -> SigningKey {
    SigningKey::generate().expect("key generation works")
}

fn tokens_with(key: &SigningKey) -> AccessTokens {
    AccessTokens::new(TokenConfig::new(ISSUER, AUDIENCE), TokenKeys::new(key.clone()))
        .expect("the test configuration is valid")
}

/// A verifier with a fresh key, and that key for signing by hand.
fn setup() -> (AccessTokens, SigningKey) {
    let key = generate();
    (tokens_with(&key), key)
}

fn now() -> u64 {
    unix_now()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn header_for(key: &SigningKey) -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.kid() })
}

fn valid_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": "user-42",
        "aud": AUDIENCE,
        "exp": now + 600,
        "nbf": now,
        "iat": now,
        "jti": "6f1c1e43-7d36-4a37-9b6e-1f0b9c7d0a11",
        "roles": ["member"],
    })
}

/// `value` with member `name` set to `new` (or removed when `new` is null).
fn with(mut value: Value, name: &str, new: Value) -> Value {
    let object = value.as_object_mut().expect("a JSON object");
    if new.is_null() {
        object.remove(name);
    } else {
        object.insert(name.to_owned(), new);
    }
    value
}

/// `base64url(header) . base64url(claims)`, from raw JSON text so tests can write bytes
/// `serde_json` would never produce (repeated members, invalid UTF-8).
fn signing_input(header: &[u8], claims: &[u8]) -> String {
    format!("{}.{}", b64(header), b64(claims))
}

/// A raw Ed25519 signature over `input` by `key`, base64url.
fn ed25519_signature(key: &SigningKey, input: &str) -> String {
    let secret = ed25519_dalek::SigningKey::from_bytes(&key.to_bytes());
    b64(&secret.sign(input.as_bytes()).to_bytes())
}

/// A complete token over raw header and claims bytes, signed by `key`.
fn sign_raw(header: &[u8], claims: &[u8], key: &SigningKey) -> String {
    let input = signing_input(header, claims);
    let signature = ed25519_signature(key, &input);
    format!("{input}.{signature}")
}

/// A complete token over JSON header and claims, signed by `key`.
fn sign(header: &Value, claims: &Value, key: &SigningKey) -> String {
    sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes(), key)
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("a header segment");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("JSON");
    header["kid"].as_str().expect("a kid").to_owned()
}

#[test]
fn hand_crafted_token_is_accepted() {
    let (tokens, key) = setup();
    let claims = tokens.verify(&sign(&header_for(&key), &valid_claims(), &key)).expect("valid");
    assert_eq!((claims.sub.as_str(), claims.roles.as_slice()), ("user-42", &["member".to_owned()][..]));
}

#[test]
fn issued_token_has_the_rfc9068_header_and_verifies() {
    let (tokens, key) = setup();
    let roles = vec!["admin".to_owned(), "member".to_owned()];
    let (token, issued) = tokens.issue("user-7", roles.clone(), None).expect("issues");

    let header = token.split('.').next().expect("a header segment");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("JSON");
    assert_eq!(header, json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": key.kid() }));

    let verified = tokens.verify(&token).expect("an issued token verifies");
    assert_eq!(verified, issued);
    assert_eq!((verified.iss.as_str(), verified.aud.as_str()), (ISSUER, AUDIENCE));
    assert_eq!((verified.sub.as_str(), verified.roles), ("user-7", roles));
    assert_eq!(verified.exp, verified.iat + 15 * 60, "the default lifetime is 15 minutes");
    assert_eq!(verified.nbf, verified.iat);
    assert!(uuid::Uuid::parse_str(&verified.jti).is_ok());
    assert_eq!(verified.scope, None);
}

#[test]
fn issue_sets_scope_lifetime_and_a_fresh_jti() {
    let (tokens, _) = setup();
    let ttl = Some(Duration::from_secs(60));
    let (token, issued) =
        tokens.issue_with_scope("user-7", Vec::new(), Some("read write".to_owned()), ttl).expect("issues");
    assert_eq!(issued.exp, issued.iat + 60);
    assert_eq!(tokens.verify(&token).expect("verifies").scope.as_deref(), Some("read write"));
    let (_, again) = tokens.issue("user-7", Vec::new(), ttl).expect("issues");
    assert_ne!(again.jti, issued.jti);
}

#[test]
fn issue_refuses_an_empty_subject_and_out_of_range_lifetimes() {
    let (tokens, _) = setup();
    assert!(matches!(tokens.issue("", Vec::new(), None), Err(IssueError::EmptySubject)));
    for ttl in [Duration::ZERO, Duration::from_millis(999), MAX_ACCESS_TTL + Duration::from_secs(1)] {
        assert!(matches!(tokens.issue("u", Vec::new(), Some(ttl)), Err(IssueError::Lifetime(_))));
    }
}

#[test]
fn configuration_is_validated() {
    let keys = || TokenKeys::new(generate());
    let mut config = TokenConfig::new(ISSUER, AUDIENCE);
    assert_eq!((config.access_ttl, config.leeway), (Duration::from_secs(900), Duration::from_secs(30)));
    config.leeway = Duration::from_secs(31);
    let err = AccessTokens::new(config, keys()).expect_err("leeway over 30 s");
    assert_eq!(err.field, "leeway");
    let err = AccessTokens::new(TokenConfig::new(" ", AUDIENCE), keys()).expect_err("empty issuer");
    assert_eq!(err.field, "issuer");
    let err = AccessTokens::new(TokenConfig::new(ISSUER, ""), keys()).expect_err("empty audience");
    assert_eq!(err.field, "audience");
    let mut config = TokenConfig::new(ISSUER, AUDIENCE);
    config.access_ttl = Duration::ZERO;
    assert_eq!(AccessTokens::new(config, keys()).expect_err("zero ttl").field, "access_ttl");
}

#[test]
fn descriptions_are_safe_in_a_www_authenticate_header() {
    let errors = [
        TokenError::malformed("x"),
        TokenError::UnsupportedAlgorithm,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::WrongType,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::MissingClaim("jti"),
    ];
    for error in &errors {
        let text = error.description();
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
        assert!(!text.is_empty() && text.chars().all(allowed), "{error:?}: {text}");
    }
}
