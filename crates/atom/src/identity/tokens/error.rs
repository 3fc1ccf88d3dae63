//! Why an access token was rejected.
//!
//! Every [`TokenError`] means the same thing to the client: HTTP 401 with
//! `WWW-Authenticate: Bearer error="invalid_token", error_description="…"` (RFC 6750 §3.1).
//! The variants exist for logs, metrics and tests; [`TokenError::description`] is the only
//! text meant for the client. The `Display` form and the source chain are for logs: they may
//! name a claim or quote a parser error, never a key or the token itself.

use std::error::Error as StdError;

use jsonwebtoken::errors::ErrorKind;

/// An access token that did not verify.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a token we can parse: empty, over the size cap, not three base64url segments, a
    /// header that is not one JSON object (or repeats a member), a `crit` extension, or a
    /// claim of the wrong JSON type.
    #[error("malformed token: {reason}")]
    Malformed {
        reason: &'static str,
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// The header's `alg` is not `EdDSA` (this includes `none`, HMAC, RSA and ECDSA).
    #[error("the token's alg is not EdDSA")]
    UnsupportedAlgorithm,
    /// The header has no `kid`, or one that names none of our keys (never fetched elsewhere).
    #[error("the token's kid names none of our keys")]
    UnknownKey,
    /// The signature does not verify with the key the `kid` names.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The `typ` is not `at+jwt`: an ID token, a refresh token or an untyped JWT.
    #[error("the token is not an access token (typ is not at+jwt)")]
    WrongType,
    /// The `iss` is not our issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// The `aud` does not name this service.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// `exp` is in the past by more than the leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future by more than the leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// A claim every access token carries is absent (or null, or empty).
    #[error("the token lacks the {0} claim")]
    MissingClaim(&'static str),
}

impl TokenError {
    pub(super) fn malformed(reason: &'static str) -> Self {
        Self::Malformed { reason, source: None }
    }

    pub(super) fn malformed_by(reason: &'static str, source: impl StdError + Send + Sync + 'static) -> Self {
        Self::Malformed { reason, source: Some(Box::new(source)) }
    }

    /// A short text safe to send to any client, as the `error_description` of the
    /// `WWW-Authenticate` header. It uses only the characters RFC 6750 §3 allows there (no `"`
    /// or `\`) and says what to do, not what was inside the token.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "The access token is malformed.",
            Self::UnsupportedAlgorithm => "The access token is signed with an unsupported algorithm.",
            Self::UnknownKey => "The access token is signed with an unknown key.",
            Self::BadSignature => "The access token signature is invalid.",
            Self::WrongType => "The token is not an access token.",
            Self::WrongIssuer => "The access token was issued by another issuer.",
            Self::WrongAudience => "The access token is not meant for this service.",
            Self::Expired => "The access token has expired.",
            Self::NotYetValid => "The access token is not valid yet.",
            Self::MissingClaim(_) => "The access token lacks a required claim.",
        }
    }

    /// Maps a rejection by `jsonwebtoken` (signature, then registered claims).
    pub(super) fn from_jwt(err: jsonwebtoken::errors::Error) -> Self {
        match err.kind() {
            ErrorKind::InvalidSignature => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            ErrorKind::MissingRequiredClaim(claim) => Self::MissingClaim(registered_claim(claim)),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidAlgorithmName => Self::UnsupportedAlgorithm,
            ErrorKind::InvalidClaimFormat(_) => Self::malformed_by("a claim has the wrong type", err),
            // Base64, JSON and UTF-8 errors, and anything a later version adds: we cannot read it.
            _ => Self::malformed_by("the JWT library could not read the header or the claims", err),
        }
    }
}

/// The static name of a claim `jsonwebtoken` reports missing; it only requires the ones we
/// ask for, so anything else is a library change worth noticing in the log.
fn registered_claim(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}
