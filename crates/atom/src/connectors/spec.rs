//! What the flows need to know of a provider, taken from its catalog template: how it is
//! connected, its endpoints and the shape of its answers. The flows read only this, so that
//! the template format can grow without touching them.

use std::collections::BTreeMap;

/// One provider, as the flows see it.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    /// The template's name, as in `/v1/connections/{provider}/…`.
    pub name: String,
    pub display_name: String,
    pub auth: AuthSpec,
}

#[derive(Debug, Clone)]
pub enum AuthSpec {
    OAuth2(Box<OAuth2Spec>),
    /// A credential the user submits: an API key, or a user name and password. `fields` are
    /// the template's field names; `secret_fields` those that are secret.
    Credential {
        kind: CredentialKind,
        fields: Vec<FieldSpec>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Basic,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub required: bool,
    pub secret: bool,
    /// A regular pattern the value must match, as the template says; checked as a prefix
    /// and length here (templates name `prefix`, `min_len`, `max_len`).
    pub prefix: Option<String>,
    pub min_len: usize,
    pub max_len: usize,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAuth {
    /// HTTP Basic with the client id and secret (`client_secret_basic`).
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
}

/// The endpoints may hold `{name}` placeholders of the template's connection parameters
/// (`params`; `{client_id}` in a provider revocation URL): [`super::endpoints`] fills them
/// for one connection, and discovery (`discovery_issuer`) may replace them, before any request.
#[derive(Debug, Clone)]
pub struct OAuth2Spec {
    pub authorization_url: String,
    pub token_url: String,
    /// RFC 7009 revocation.
    pub revocation_url: Option<String>,
    /// The provider's own revocation call (GitHub's `DELETE /applications/{client_id}/grant`,
    /// Dropbox's bearer-authenticated `POST`), when it is not RFC 7009.
    pub provider_revocation: Option<super::template::Revocation>,
    /// Per-connection parameters, each checked by its pattern before it enters a URL.
    pub params: Vec<super::template::Param>,
    /// RFC 8414 / OpenID Connect discovery at this issuer supplies the endpoints (the
    /// template's are the fallback when the metadata cannot be read).
    pub discovery_issuer: Option<String>,
    /// Pushed authorization requests (RFC 9126): the template says so, or the metadata says
    /// `require_pushed_authorization_requests`.
    pub par: bool,
    /// The pushed authorization request endpoint: the template's `par_url` (a template
    /// until [`super::endpoints`] fills it), else the metadata's.
    pub par_url: Option<String>,
    /// Where the connection's label and provider account id come from (an OIDC userinfo
    /// endpoint or the service's own "me").
    pub identity_url: Option<String>,
    /// The authorization server's issuer: when set, the callback must carry it as `iss`
    /// (RFC 9207).
    pub issuer: Option<String>,
    pub default_scopes: Vec<String>,
    pub scope_separator: String,
    pub pkce: bool,
    pub token_auth: TokenAuth,
    /// JSON pointer (`/sub`) of the provider account's stable id in the identity answer.
    pub account_id_pointer: String,
    /// JSON pointer of a human label (`/email`) in the identity answer.
    pub label_pointer: String,
    /// Extra query parameters of the authorization URL.
    pub authorize_params: BTreeMap<String, String>,
    /// Whether access tokens expire without `expires_in` (some never do).
    pub refreshable: bool,
}

impl ProviderSpec {
    /// The flows' view of a catalog template. `None` for what these flows do not run yet:
    /// OAuth 1.0a, the client credentials grant, and OAuth templates whose authorization or
    /// token URL needs a value kept from the callback (those keep their catalog entry and
    /// answer `not_configured` when a user starts them). URLs that name only connection
    /// parameters are kept as templates and filled per connection.
    pub fn from_template(t: &super::Template) -> Option<Self> {
        use super::template::{AuthMode, ClientAuth, CredentialPlacement, RevocationStyle};
        let auth = match t.auth_mode {
            AuthMode::Oauth2AuthorizationCode => {
                let o = t.oauth2.as_ref()?;
                let param_names: Vec<&str> = t.params.iter().map(|p| p.name.as_str()).collect();
                // Every placeholder is a connection parameter (or one of `extra`).
                let fillable = |url: &str, extra: &[&str]| {
                    super::placeholders::names(url)
                        .is_ok_and(|names| names.iter().all(|n| param_names.contains(n) || extra.contains(n)))
                };
                let endpoint = |url: &Option<String>| match url {
                    Some(u) if fillable(u, &[]) => Some(u.clone()),
                    Some(_) => None,
                    // Discovery supplies it.
                    None if o.issuer.is_some() => Some(String::new()),
                    None => None,
                };
                let par_url = match &o.par_url {
                    Some(u) if fillable(u, &[]) => Some(u.clone()),
                    Some(_) => return None,
                    None => None,
                };
                let authorization_url = endpoint(&o.authorization_url)?;
                let token_url = endpoint(&o.token_url)?;
                let revocation = o.revocation.as_ref().filter(|r| fillable(&r.url, &["client_id"]));
                let revocation_url = revocation
                    .filter(|r| r.style == RevocationStyle::Rfc7009 && fillable(&r.url, &[]))
                    .map(|r| r.url.clone());
                let provider_revocation = revocation.filter(|r| r.style == RevocationStyle::Provider).cloned();
                // The identity call carries the token as a bearer: only for services called so.
                let identity = t
                    .identity
                    .as_ref()
                    .filter(|i| fillable(&i.url, &[]) && t.api.credential.placement == CredentialPlacement::Bearer);
                let identity_url = identity
                    .map(|i| {
                        if i.url.starts_with("https://") || i.url.starts_with("http://") {
                            i.url.clone()
                        } else {
                            format!("{}/{}", t.api.base_url.trim_end_matches('/'), i.url.trim_start_matches('/'))
                        }
                    })
                    .filter(|u| fillable(u, &[]));
                let identity = identity.filter(|_| identity_url.is_some());
                let label_pointer = identity.map_or_else(|| "/id".to_owned(), |i| i.label.clone());
                let account_id_pointer =
                    identity.and_then(|i| i.account_id.clone()).unwrap_or_else(|| label_pointer.clone());
                AuthSpec::OAuth2(Box::new(OAuth2Spec {
                    authorization_url,
                    token_url,
                    revocation_url,
                    provider_revocation,
                    params: t.params.clone(),
                    discovery_issuer: o.issuer.clone(),
                    par: o.par || par_url.is_some(),
                    par_url,
                    identity_url,
                    issuer: o.issuer.clone(),
                    default_scopes: o.scopes.clone(),
                    scope_separator: o.scope_separator.clone(),
                    pkce: o.pkce,
                    token_auth: if o.client_auth == ClientAuth::Basic { TokenAuth::Basic } else { TokenAuth::Post },
                    account_id_pointer,
                    label_pointer,
                    authorize_params: o
                        .authorization_params
                        .iter()
                        .filter(|(_, v)| fillable(v, &[]))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    refreshable: !o.expiry.never,
                }))
            }
            AuthMode::ApiKey | AuthMode::Basic => AuthSpec::Credential {
                kind: if t.auth_mode == AuthMode::ApiKey { CredentialKind::ApiKey } else { CredentialKind::Basic },
                fields: t
                    .fields
                    .iter()
                    .map(|f| FieldSpec {
                        name: f.name.clone(),
                        required: true,
                        secret: f.secret,
                        prefix: None,
                        min_len: 1,
                        max_len: 4096,
                    })
                    .collect(),
            },
            AuthMode::Oauth2ClientCredentials | AuthMode::Oauth1a => return None,
        };
        Some(Self { name: t.id.clone(), display_name: t.name.clone(), auth })
    }
}
