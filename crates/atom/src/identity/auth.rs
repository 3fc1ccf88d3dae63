//! Authentication of every protected request: `Authorization: Bearer <token>`, where the
//! token is an access JWT or an API key (`atom_sk_…`). The result is a [`Principal`] in the
//! request's extensions; handlers take it as an extractor.
//!
//! Invariant: the protected router is wrapped in [`super::routes::auth::authenticate`] as a
//! whole (see `identity::routes::router`), so a new route is protected unless it is added to
//! the public list on purpose. The same middleware checks that an API key's scopes reach
//! the matched route ([`Principal::require_route`]) before the handler runs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};

use super::api_keys::{AGENT_SCOPE, API_KEY_PREFIX, CONNECTIONS_USE};
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

impl Principal {
    /// Whether the caller's credential reaches the route `route` (the router's path template,
    /// e.g. `/v1/connections/{id}/token`) with `method`. A user's access token, and an API key
    /// with the `api` scope, reach every route (each route still checks what its owner may
    /// do there). A key without `api` reaches only what its other scopes are for, so a key
    /// handed to an agent or a script cannot manage the account it belongs to (mint keys,
    /// change the password, delete the account):
    /// - `admin`: the admin routes (`/v1/admin/...`), which also need the admin role;
    /// - `connections:use`: the proxy, the token route, reading the owner's connections and
    ///   forcing a refresh;
    /// - `agent`: reading the conversations it is a member of (it talks over Socket.io);
    /// - any key: `GET /v1/me`, who it acts for.
    pub fn require_route(&self, method: &Method, route: &str) -> Result<(), ApiError> {
        let scopes = match &self.credential {
            Credential::AccessToken { .. } => return Ok(()),
            Credential::ApiKey { scopes, .. } => scopes,
        };
        let read = method == Method::GET || method == Method::HEAD;
        if (read && route == "/v1/me") || scopes.iter().any(|s| scope_reaches(s, method, read, route)) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "This API key's scopes ({}) do not reach {method} {route}; it needs the api scope.",
            scopes.join(" ")
        )))
    }

    /// Whether the caller may hold a Socket.io connection: a user's access token, or an API
    /// key with the `api` or the `agent` scope (a `connections:use` or `admin` key has no
    /// business in conversations).
    pub fn may_use_realtime(&self) -> bool {
        match &self.credential {
            Credential::AccessToken { .. } => true,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == "api" || s == AGENT_SCOPE),
        }
    }
}

/// The routes one scope reaches; see [`Principal::require_route`]. Route templates are the
/// router's own (`axum::extract::MatchedPath`), so a renamed route fails the unit test that
/// checks every template named here against the OpenAPI document's paths.
fn scope_reaches(scope: &str, method: &Method, read: bool, route: &str) -> bool {
    match scope {
        "api" => true,
        "admin" => route.starts_with("/v1/admin/"),
        CONNECTIONS_USE => {
            route.starts_with(PROXY_ROUTES)
                || (read && matches!(route, "/v1/connections" | "/v1/connections/{id}" | "/v1/connections/{id}/token"))
                || (method == Method::POST && route == "/v1/connections/{id}/refresh")
        }
        AGENT_SCOPE => read && (route == "/v1/conversations" || route.starts_with("/v1/conversations/")),
        _ => false,
    }
}

/// The prefix of the proxy's route templates (`/v1/proxy/{connection_id}/{*path}` and the
/// base-URL forms).
const PROXY_ROUTES: &str = "/v1/proxy/{connection_id}";

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
    fn every_route_a_scope_names_is_a_route_of_the_api() {
        let doc: serde_json::Value = serde_json::from_str(&crate::http::openapi::document()).expect("openapi json");
        let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
        // The templates and prefixes `scope_reaches` and `require_route` name.
        for named in [
            "/v1/me",
            "/v1/connections",
            "/v1/connections/{id}",
            "/v1/connections/{id}/token",
            "/v1/connections/{id}/refresh",
            "/v1/conversations",
        ] {
            assert!(paths.iter().any(|p| *p == named), "{named} is not a route");
        }
        for prefix in ["/v1/admin/", "/v1/conversations/", PROXY_ROUTES] {
            assert!(paths.iter().any(|p| p.starts_with(prefix)), "no route under {prefix}");
        }
    }

    #[test]
    fn a_key_reaches_the_routes_of_its_scopes_and_an_access_token_every_route() {
        let key = |scopes: &[&str]| Principal {
            user_id: "u".into(),
            role: Role::User,
            credential: Credential::ApiKey {
                key_id: "k".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                expires_at: None,
                providers: None,
            },
        };
        let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
        let api = key(&["api"]);
        assert!(api.require_route(&delete, "/v1/me").is_ok());
        let proxy = key(&[CONNECTIONS_USE]);
        assert!(proxy.require_route(&post, "/v1/proxy/{connection_id}/{*path}").is_ok());
        assert!(proxy.require_route(&get, "/v1/connections/{id}/token").is_ok());
        assert!(proxy.require_route(&delete, "/v1/connections/{id}").is_err(), "disconnecting is the owner's");
        assert!(proxy.require_route(&post, "/v1/api-keys").is_err());
        let agent = key(&[AGENT_SCOPE]);
        assert!(agent.require_route(&get, "/v1/conversations/{id}/messages").is_ok());
        assert!(agent.require_route(&post, "/v1/conversations/{id}/members").is_err());
        assert!(key(&["admin"]).require_route(&get, "/v1/api-keys").is_err());
        assert!(key(&[]).require_route(&get, "/v1/me").is_ok());
        assert!(key(&[]).require_route(&get, "").is_err(), "no matched route reaches nothing");
        assert!(!proxy.may_use_realtime() && agent.may_use_realtime() && api.may_use_realtime());
    }

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
