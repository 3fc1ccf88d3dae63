//! Authentication of every protected request: `Authorization: Bearer <token>`, where the
//! token is an access JWT or an API key (`atom_sk_…`). The result is a [`Principal`] in the
//! request's extensions; handlers take it as an extractor.
//!
//! Invariant: the protected router is wrapped in [`super::routes::auth::authenticate`] as a
//! whole (see `identity::routes::router`), so a new route is protected unless it is added to
//! the public list on purpose.

use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::request::Parts;

use super::api_keys::{API_KEY_PREFIX, CONNECTIONS_USE};
use crate::audit::Actor;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn parse(role: &str) -> Self {
        if role == "admin" { Self::Admin } else { Self::User }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access JWT, with its verified claims (its `jti`, `exp` and scopes).
    AccessToken { claims: std::sync::Arc<super::tokens::AccessClaims> },
    ApiKey {
        key_id: String,
        scopes: Vec<String>,
        /// When the key stops being accepted (Unix ms), if it has an expiry.
        expires_at: Option<i64>,
        /// The providers a `connections:use` key is limited to; `None` for every provider.
        providers: Option<Vec<String>>,
    },
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
    pub credential: Credential,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match &self.credential {
            Credential::AccessToken { .. } => Actor::User(self.user_id.clone()),
            Credential::ApiKey { key_id, .. } => {
                Actor::ApiKey { key_id: key_id.clone(), user_id: self.user_id.clone() }
            }
        }
    }

    /// Admin routes need the admin role, and from an API key also its `admin` scope.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        let scoped = match &self.credential {
            Credential::AccessToken { .. } => true,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "admin"),
        };
        if self.role == Role::Admin && scoped {
            Ok(())
        } else {
            Err(ApiError::Forbidden("This needs the admin role.".to_owned()))
        }
    }

    /// Whether the caller acts as an agent: only through a key with the `agent` scope; an
    /// access token or a key without it is a person (or their script) speaking for themself.
    pub fn is_agent(&self) -> bool {
        match &self.credential {
            Credential::AccessToken { .. } => false,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == super::api_keys::AGENT_SCOPE),
        }
    }
}

impl Principal {
    /// Whether the caller may use its owner's connections at all: a user's access token, or an
    /// API key with the `connections:use` scope. Checked before the connection is looked up.
    pub fn require_connection_use(&self) -> Result<(), ApiError> {
        match &self.credential {
            Credential::AccessToken { .. } => Ok(()),
            Credential::ApiKey { scopes, .. } if scopes.iter().any(|s| s == CONNECTIONS_USE) => Ok(()),
            Credential::ApiKey { .. } => {
                Err(ApiError::Forbidden("Using a connection needs an API key with the connections:use scope.".into()))
            }
        }
    }

    /// Whether the caller may use a connection to `provider` (the connection being its
    /// owner's, which the lookup by owner already ensured): a key limited to other providers
    /// may not.
    pub fn require_provider(&self, provider: &str) -> Result<(), ApiError> {
        self.require_connection_use()?;
        match &self.credential {
            Credential::ApiKey { providers: Some(allowed), .. } if !allowed.iter().any(|p| p == provider) => {
                Err(ApiError::Forbidden(format!("This API key may not use {provider} connections.")))
            }
            _ => Ok(()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    /// From the request's extensions, where [`super::routes::auth::authenticate`] put it.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized { error: "", description: "Authentication required." })
    }
}

/// The bearer token in an `Authorization` header value: `None` without one.
pub(crate) fn bearer(value: Option<&HeaderValue>) -> Result<Option<&str>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let malformed =
        || ApiError::Unauthorized { error: "invalid_request", description: "Malformed Authorization header." };
    // Text, checked a word at a time. A token with other than base64url characters in it is
    // refused by its verification.
    let value = std::str::from_utf8(value.as_bytes()).ok();
    let (scheme, token) = value.and_then(|v| v.split_at_checked(7)).ok_or_else(malformed)?;
    let token = token.trim_ascii();
    if !scheme.eq_ignore_ascii_case("bearer ") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// Verifies a credential, an access JWT or an API key (`atom_sk_…`), and the account behind
/// it (a disabled account is refused). The one check behind every way in: HTTP requests
/// ([`super::routes::auth::authenticate`]) and Socket.io connections ([`crate::realtime`]).
pub async fn verify_credential(identity: &super::Identity, credential: &str) -> Result<Principal, ApiError> {
    if credential.starts_with(API_KEY_PREFIX) {
        identity.authenticate_api_key(credential).await
    } else {
        identity.authenticate_access_token(credential).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header_and_refuses_any_other_shape() {
        let token = |v: &[u8]| {
            let value = HeaderValue::from_bytes(v).expect("a header value");
            bearer(Some(&value)).ok().map(|t| t.map(str::to_owned))
        };
        assert_eq!(bearer(None).ok(), Some(None), "no header: no token, not an error");
        for (value, expected) in [
            (&b"Bearer abc.def.ghi"[..], "abc.def.ghi"),
            (b"bearer abc", "abc"),
            (b"BEARER   abc  ", "abc"),
            (b"Bearer atom_sk_123", "atom_sk_123"),
        ] {
            assert_eq!(token(value), Some(Some(expected.to_owned())), "{}", String::from_utf8_lossy(value));
        }
        for value in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Bearertoken",
            b"Bearer\tabc",
            b"Basic abc",
            b"Bearer \xe9t\xe9",
        ] {
            assert!(token(value).is_none(), "{}", String::from_utf8_lossy(value));
        }
    }
}
