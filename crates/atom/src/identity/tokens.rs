//! Access tokens: short-lived JWTs that say who the caller is and which roles they hold,
//! issued and verified by [`AccessTokens`] to RFC 9068 (JWT access tokens) and RFC 8725
//! (JWT best current practice).
//!
//! A token is a compact JWS signed with Ed25519: header `{"alg":"EdDSA","typ":"at+jwt",
//! "kid":…}`, claims [`AccessClaims`]. Verification accepts a token only if it has
//! all of:
//!
//! 1. at most [`MAX_TOKEN_BYTES`], three base64url segments, a header that is one JSON
//!    object, `alg` exactly `EdDSA`, no `crit`, `typ` `at+jwt` or `application/at+jwt`;
//! 2. a `kid` naming one of our keys (current or not yet retired), looked up in our keyset
//!    only, so the key and the algorithm come from us and never from the token;
//! 3. the signature, checked by `jsonwebtoken` with the algorithm pinned to EdDSA;
//! 4. `iss` equal to ours, `aud` naming ours, `exp`, `nbf` and `iat` within the leeway, every
//!    registered claim present (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`).
//!
//! Invariants: an [`AccessClaims`] returned by [`AccessTokens::verify`] came from a token that
//! passed all of the above; private key material never leaves this module except through
//! [`SigningKey::to_bytes`], for encrypted storage. Persistence of keys, revocation lists and
//! the HTTP mapping (every [`TokenError`] is a 401) belong to the callers.

mod error;
mod header;
mod keys;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

pub use error::TokenError;
pub use header::MAX_TOKEN_BYTES;
pub use keys::{ED25519_KEY_LEN, KeyError, PublicKey, RetireError, SigningKey, TokenKeys};

/// The most clock skew we forgive between nodes (and the default).
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);

/// The longest lifetime an access token may be given. A signed token cannot be recalled
/// before it expires, so lifetimes stay short; this ceiling catches a lifetime given in the
/// wrong unit.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Who issues access tokens, for whom, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// The `iss` of our tokens: the public URL of this server.
    pub issuer: String,
    /// The `aud` of our tokens: the identifier of this API as a resource server.
    pub audience: String,
    /// Lifetime of an access token when the caller gives none. Default 15 minutes.
    pub access_ttl: Duration,
    /// Clock skew forgiven on `exp`, `nbf` and `iat`, whole seconds. Default and maximum 30 s.
    pub leeway: Duration,
}

impl TokenConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(15 * 60),
            leeway: MAX_LEEWAY,
        }
    }

    fn validate(&self) -> Result<(), TokenConfigError> {
        if self.issuer.trim().is_empty() {
            return Err(TokenConfigError::new("issuer", "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(TokenConfigError::new("audience", "must not be empty"));
        }
        if self.leeway > MAX_LEEWAY {
            return Err(TokenConfigError::new("leeway", format!("must be at most {MAX_LEEWAY:?}")));
        }
        check_ttl(self.access_ttl)
            .map_err(|_| TokenConfigError::new("access_ttl", format!("must be between 1 s and {MAX_ACCESS_TTL:?}")))
    }
}

/// A [`TokenConfig`] value that cannot be used; `field` names it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid token configuration: {field}: {message}")]
pub struct TokenConfigError {
    pub field: &'static str,
    pub message: String,
}

impl TokenConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

/// Why a token could not be issued. Unlike [`TokenError`], these are our faults (a 500).
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("an access token needs a non-empty subject")]
    EmptySubject,
    #[error("access-token lifetime {0:?} is outside 1 s ..= {MAX_ACCESS_TTL:?}")]
    Lifetime(Duration),
    #[error("could not sign the access token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The claims of an access token (RFC 9068 §2.2, RFC 7519 §4.1). Times are seconds since the
/// Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Our audience. A verified token whose `aud` is an array containing ours yields ours.
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// A unique id per token (UUID v4), for revocation lists and replay logs.
    pub jti: String,
    /// Space-separated OAuth scopes, when the token was issued for some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The user's roles when the token was issued. Absent reads as none: the least privilege.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The session (refresh-token family) the token was issued for, so that ending the
    /// session (logout) can refuse its access tokens too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The claims as they arrive, before we know they are complete. Only the JSON types are
/// checked here; presence and values are checked after the signature.
#[derive(Deserialize)]
struct ReceivedClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<ReceivedAudience>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    sid: Option<String>,
}

/// RFC 7519 §4.1.3: `aud` is one string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum ReceivedAudience {
    One(String),
    Many(Vec<String>),
}

impl ReceivedAudience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(aud) => aud == audience,
            Self::Many(auds) => auds.iter().any(|aud| aud == audience),
        }
    }
}

/// Issues and verifies access tokens with one [`TokenConfig`] and one [`TokenKeys`].
///
/// Rotation goes through [`AccessTokens::keys_mut`]; callers that share an `AccessTokens`
/// between requests put it behind a lock or swap a rotated clone in.
#[derive(Debug, Clone)]
pub struct AccessTokens {
    config: TokenConfig,
    keys: TokenKeys,
    /// Built once from `config`: the algorithm, issuer, audience, leeway and required claims.
    validation: Validation,
}

impl AccessTokens {
    pub fn new(config: TokenConfig, keys: TokenKeys) -> Result<Self, TokenConfigError> {
        config.validate()?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        // `jsonwebtoken` can require only these; `iat` and `jti` are required in `verify`.
        validation.set_required_spec_claims(&["iss", "sub", "aud", "exp", "nbf"]);
        Ok(Self { config, keys, validation })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub fn keys_mut(&mut self) -> &mut TokenKeys {
        &mut self.keys
    }

    /// Issues a token for user `sub` with `roles`, valid for `ttl` (the configured
    /// `access_ttl` when `None`), signed with the current key.
    pub fn issue(
        &self,
        sub: &str,
        roles: Vec<String>,
        ttl: Option<Duration>,
    ) -> Result<(String, AccessClaims), IssueError> {
        self.issue_claims(sub, roles, None, None, ttl)
    }

    /// Issues a token for user `sub` in session `sid` (its `sid` claim), with the configured
    /// lifetime: what a sign-in or a refresh gives the client.
    pub fn issue_for_session(
        &self,
        sub: &str,
        sid: &str,
        roles: Vec<String>,
    ) -> Result<(String, AccessClaims), IssueError> {
        self.issue_claims(sub, roles, None, Some(sid.to_owned()), None)
    }

    /// Like [`AccessTokens::issue`], with a space-separated OAuth `scope` claim.
    pub fn issue_with_scope(
        &self,
        sub: &str,
        roles: Vec<String>,
        scope: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<(String, AccessClaims), IssueError> {
        self.issue_claims(sub, roles, scope, None, ttl)
    }

    fn issue_claims(
        &self,
        sub: &str,
        roles: Vec<String>,
        scope: Option<String>,
        sid: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<(String, AccessClaims), IssueError> {
        if sub.is_empty() {
            return Err(IssueError::EmptySubject);
        }
        let ttl = ttl.unwrap_or(self.config.access_ttl);
        check_ttl(ttl)?;
        let now = unix_now();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            sub: sub.to_owned(),
            aud: self.config.audience.clone(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope,
            roles,
            sid,
        };
        let key = self.keys.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(header::ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid().to_owned());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key()).map_err(IssueError::Sign)?;
        Ok((token, claims))
    }

    /// Verifies `token` (the bearer value, without the `Bearer ` prefix) and returns its claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = header::check(token)?;
        let key = self.keys.find(&kid).ok_or(TokenError::UnknownKey)?;
        let received = jsonwebtoken::decode::<ReceivedClaims>(token, key.decoding_key(), &self.validation)
            .map_err(TokenError::from_jwt)?
            .claims;
        self.complete(received)
    }

    /// The checks `jsonwebtoken` does not make (`iat`, `jti`, empty values), and the ones it
    /// made again on the values we return, so that a change in its defaults cannot let a
    /// foreign `iss` or `aud` through.
    fn complete(&self, received: ReceivedClaims) -> Result<AccessClaims, TokenError> {
        let iss = received.iss.ok_or(TokenError::MissingClaim("iss"))?;
        if iss != self.config.issuer {
            return Err(TokenError::WrongIssuer);
        }
        let aud = received.aud.ok_or(TokenError::MissingClaim("aud"))?;
        if !aud.contains(&self.config.audience) {
            return Err(TokenError::WrongAudience);
        }
        let sub = received.sub.filter(|s| !s.is_empty()).ok_or(TokenError::MissingClaim("sub"))?;
        let exp = received.exp.ok_or(TokenError::MissingClaim("exp"))?;
        let nbf = received.nbf.ok_or(TokenError::MissingClaim("nbf"))?;
        let iat = received.iat.ok_or(TokenError::MissingClaim("iat"))?;
        // A token issued in the future (beyond the skew we forgive) was not issued by a node
        // with a sane clock; RFC 7519 leaves this check to us.
        if iat > unix_now().saturating_add(self.config.leeway.as_secs()) {
            return Err(TokenError::NotYetValid);
        }
        let jti = received.jti.filter(|j| !j.is_empty()).ok_or(TokenError::MissingClaim("jti"))?;
        Ok(AccessClaims {
            iss,
            sub,
            aud: self.config.audience.clone(),
            exp,
            nbf,
            iat,
            jti,
            scope: received.scope,
            roles: received.roles,
            sid: received.sid.filter(|s| !s.is_empty()),
        })
    }
}

fn check_ttl(ttl: Duration) -> Result<(), IssueError> {
    if ttl < Duration::from_secs(1) || ttl > MAX_ACCESS_TTL {
        return Err(IssueError::Lifetime(ttl));
    }
    Ok(())
}

/// Seconds since the Unix epoch. A clock set before 1970 reads as 0, which fails closed:
/// tokens issued then are already expired, and every other token looks issued in the future.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
