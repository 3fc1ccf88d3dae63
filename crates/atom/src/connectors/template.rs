//! The provider template: one service's connection facts as data, deserialized from
//! `providers/<id>.toml`. The flows read only these types, so a provider's quirks (a nested
//! token, a scope separator, a shop in the host name) are fields, not code.
//!
//! Every string that ends up in a URL is a template: `{name}` placeholders name a connection
//! parameter, a kept value, a submitted field or a reserved name (`client_id`,
//! `access_token`), and [`super::catalog`] checks at load time that each one is declared and
//! available at the stage that uses it. Substitution ([`super::placeholders`]) only inserts
//! values that passed their pattern.
//!
//! The schema grows only by new optional fields: templates in operators' override
//! directories must keep loading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::pattern::Pattern;

/// One service. `id` equals the file name without `.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Lower-case `[a-z0-9_-]`, the file's stem; the name routes and the vault use.
    pub id: String,
    /// What a person calls the service.
    pub name: String,
    pub auth_mode: AuthMode,
    /// The provider's documentation pages the facts below come from.
    #[serde(default)]
    pub docs: Vec<String>,
    /// Per-connection parameters the user supplies before connecting (a Shopify shop, a
    /// Zendesk subdomain, a Microsoft tenant), each checked by its pattern before it enters a
    /// URL.
    #[serde(default)]
    pub params: Vec<Param>,
    /// For `oauth2_authorization_code` and `oauth2_client_credentials`.
    #[serde(default)]
    pub oauth2: Option<OAuth2>,
    /// For `oauth1a`.
    #[serde(default)]
    pub oauth1: Option<OAuth1>,
    /// For `api_key` and `basic`: what the user submits.
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Values kept with the connection, from the callback query or the token response
    /// (`instance_url`, `realmId`, a team id); usable as placeholders at later stages.
    #[serde(default)]
    pub keep: Vec<Keep>,
    /// A post-exchange step no field can say; it adds the values [`Lookup::provides`] names.
    #[serde(default)]
    pub lookup: Option<Lookup>,
    /// Where the lookup is sent instead of the provider's documented endpoint (a regional
    /// host, a proxy, a test server); a template, like the other URLs.
    #[serde(default)]
    pub lookup_url: Option<String>,
    /// How the agent's calls reach the service.
    pub api: Api,
    /// An endpoint whose answer names the connected account.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// How the service signs the webhooks it sends (used by the webhook receiver).
    #[serde(default)]
    pub webhooks: Option<Webhooks>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// OAuth 2.0 authorization code grant (RFC 6749 §4.1), with PKCE when `oauth2.pkce`.
    Oauth2AuthorizationCode,
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4): the instance's app, no user consent.
    Oauth2ClientCredentials,
    /// OAuth 1.0a (RFC 5849), three-legged.
    Oauth1a,
    /// A key the user pastes.
    ApiKey,
    /// A user name and password (or token) the user submits.
    Basic,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oauth2AuthorizationCode => "oauth2_authorization_code",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
            Self::Oauth1a => "oauth1a",
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
        }
    }

    /// Whether the instance needs its own app (client id and secret) at the provider.
    pub fn needs_app(self) -> bool {
        matches!(self, Self::Oauth2AuthorizationCode | Self::Oauth2ClientCredentials | Self::Oauth1a)
    }
}

/// A per-connection parameter.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// The placeholder name: `[a-z][a-z0-9_]*`.
    pub name: String,
    /// What the UI asks for.
    pub label: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Anchored (`^…$`); a value that does not match never reaches a URL.
    #[schema(value_type = String)]
    pub pattern: Pattern,
    /// A value that matches `pattern`: shown as the UI's placeholder, used by
    /// `atom providers check` and the generated tests.
    pub example: String,
    /// Used when the user gives none (a Microsoft tenant of `common`); without one the
    /// parameter is required.
    #[serde(default)]
    pub default: Option<String>,
}

/// A field of an `api_key` or `basic` service.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// The placeholder name: `[a-z][a-z0-9_]*`.
    pub name: String,
    pub label: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Stored encrypted and never shown again when true.
    pub secret: bool,
    #[schema(value_type = String)]
    pub pattern: Pattern,
    pub example: String,
}

/// A value kept with the connection. Exactly one of `callback` and `token` says where it
/// comes from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    /// The placeholder name: `[a-z][a-z0-9_]*`.
    pub name: String,
    /// The callback query parameter (QuickBooks' `realmId`, Zoho's `accounts-server`).
    #[serde(default)]
    pub callback: Option<String>,
    /// A JSON pointer (RFC 6901) into the token response (`/instance_url`, `/team/id`).
    #[serde(default)]
    pub token: Option<String>,
    /// A missing required value fails the connection; a missing optional one is left out.
    #[serde(default = "yes")]
    pub required: bool,
    /// Required when the value is used in a URL template: checked before substitution.
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// A matching value, for the checks; required with `pattern`.
    #[serde(default)]
    pub example: Option<String>,
}

fn yes() -> bool {
    true
}

/// A provider's step after the code exchange that no field can say: a named function in
/// `connectors`, which adds the values [`Lookup::provides`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    /// `GET https://api.atlassian.com/oauth/token/accessible-resources` with the new token;
    /// keeps the first site's `cloud_id` and `site_url`.
    AtlassianAccessibleResources,
    /// `GET https://login.mailchimp.com/oauth2/metadata` with the new token; keeps the
    /// account's data centre `dc` and its `api_endpoint`.
    MailchimpMetadata,
    /// `GET https://api.xero.com/connections` with the new token; keeps the first
    /// organisation's `tenant_id`, which every call names in its `xero-tenant-id` header.
    XeroConnections,
    /// `POST https://{server}/api/{version}/auth/signin` (the template's `lookup_url`) with
    /// the personal access token's name and secret (`pat_name`, `pat_secret`) and the site's
    /// content URL (`site`); keeps the `site_id` and `user_id` and gives the session token
    /// that calls carry as `{access_token}` (`X-Tableau-Auth`). Signs in again when the
    /// session ends; disconnecting signs out (`…/auth/signout`).
    TableauSignin,
}

impl Lookup {
    /// Whether the lookup is a sign-in with the submitted credential whose answer is the
    /// session token the calls carry (`{access_token}`), signed in again when the session
    /// ends: the connection's "refresh" (Tableau).
    pub fn signs_in(self) -> bool {
        matches!(self, Self::TableauSignin)
    }

    /// The names the lookup adds, with a pattern and an example each.
    pub fn provides(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            Self::AtlassianAccessibleResources => &[
                ("cloud_id", "^[0-9a-fA-F-]{36}$", "11223344-a1b2-3b33-c444-def123456789"),
                ("site_url", "^https://[a-z0-9][a-z0-9-]*\\.atlassian\\.net$", "https://example.atlassian.net"),
            ],
            Self::MailchimpMetadata => &[
                ("dc", "^[a-z]+[0-9]+$", "us6"),
                ("api_endpoint", "^https://[a-z]+[0-9]+\\.api\\.mailchimp\\.com$", "https://us6.api.mailchimp.com"),
            ],
            Self::XeroConnections => &[("tenant_id", "^[0-9a-fA-F-]{36}$", "70784a63-d24b-46a9-a4db-0e70a274b056")],
            Self::TableauSignin => &[
                ("site_id", "^[0-9a-fA-F-]{36}$", "9a8b7c6d-5e4f-3a2b-1c0d-9e8f7a6b5c4d"),
                ("user_id", "^[0-9a-fA-F-]{36}$", "d5704762-603a-42b2-a9a7-f9cd2b2c4253"),
            ],
        }
    }
}

/// OAuth 2.0 facts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// The authorization endpoint; required for the authorization code grant unless `issuer`
    /// is set (then discovery supplies it, and this is the fallback).
    #[serde(default)]
    pub authorization_url: Option<String>,
    /// The token endpoint; required unless `issuer` is set.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Where refreshes go when not `token_url`.
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// RFC 8414 / OpenID Connect discovery: the endpoints are read from
    /// `{issuer}/.well-known/oauth-authorization-server` or `/.well-known/openid-configuration`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The server requires pushed authorization requests (RFC 9126).
    #[serde(default)]
    pub par: bool,
    /// The pushed authorization request endpoint (RFC 9126), for a server whose metadata is
    /// not read (no `issuer`); may hold connection parameters. When set, every authorization
    /// request is pushed there first, as with `par`.
    #[serde(default)]
    pub par_url: Option<String>,
    /// PKCE (RFC 7636) with the S256 method.
    #[serde(default)]
    pub pkce: bool,
    /// Scopes requested by default.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How scopes are joined in the request (and split in the answer): `" "` by RFC 6749,
    /// `","` for some providers.
    #[serde(default = "space")]
    pub scope_separator: String,
    /// The authorization request's scope parameter (Slack's user scopes: `user_scope`).
    #[serde(default = "scope")]
    pub scope_param: String,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// How the token request's body is encoded; `json` is implied by `client_auth = "json"`.
    #[serde(default)]
    pub token_body: BodyFormat,
    /// Extra authorization request parameters (`access_type = "offline"`); values may hold
    /// placeholders.
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Extra token request parameters for the code exchange (and the client credentials grant).
    #[serde(default)]
    pub token_params: BTreeMap<String, String>,
    /// Extra refresh request parameters.
    #[serde(default)]
    pub refresh_params: BTreeMap<String, String>,
    /// Where the tokens sit in the token response.
    #[serde(default)]
    pub response: TokenResponse,
    /// Where they sit in a refresh response, when not where `response` says (Slack nests the
    /// user token under `authed_user` in the exchange's answer, not in the refresh's).
    #[serde(default)]
    pub refresh_response: Option<TokenResponse>,
    /// Expiry rules.
    #[serde(default)]
    pub expiry: Expiry,
    /// How a connection's grant is revoked at the provider; none when the provider has no way.
    #[serde(default)]
    pub revocation: Option<Revocation>,
}

fn space() -> String {
    " ".to_owned()
}

fn scope() -> String {
    "scope".to_owned()
}

/// Client authentication at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1, `client_secret_basic`).
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Form,
    /// `client_id` and `client_secret` in a JSON body.
    Json,
    /// `client_id` only (a public client, with PKCE).
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`, as RFC 6749 says.
    #[default]
    Form,
    /// `application/json`.
    Json,
}

/// JSON pointers (RFC 6901) into the token response.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: String,
    pub scope: String,
    /// A present value here means the exchange failed (Slack answers 200 with `ok: false`).
    pub error: String,
}

impl Default for TokenResponse {
    fn default() -> Self {
        Self {
            access_token: "/access_token".to_owned(),
            refresh_token: "/refresh_token".to_owned(),
            expires_in: "/expires_in".to_owned(),
            scope: "/scope".to_owned(),
            error: "/error".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expiry {
    /// The provider's access tokens do not expire; an `expires_in` is ignored.
    pub never: bool,
    /// The lifetime assumed when the answer carries no `expires_in` (Salesforce says none;
    /// its sessions last hours). Without it and without `never`, such a token has no
    /// known expiry and is refreshed only when a call is refused.
    pub default_lifetime_secs: Option<u64>,
    /// A refresh answer without a refresh token means the old one stays valid (RFC 6749 §6).
    /// Set false for providers that rotate and whose refresh answer always carries one.
    #[serde(default = "yes")]
    pub keep_refresh_token: bool,
}

/// Revocation of a connection's grant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub style: RevocationStyle,
    /// May hold placeholders, including `{client_id}` (GitHub's grant endpoint).
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Which token is revoked; `refresh` revokes the grant at most providers.
    #[serde(default)]
    pub token: WhichToken,
    /// Where the token goes.
    #[serde(default)]
    pub token_in: TokenPlacement,
    /// The form, query or JSON field holding it.
    #[serde(default = "token_field")]
    pub token_field: String,
    /// How the client authenticates, if at all.
    #[serde(default = "no_client_auth")]
    pub client_auth: ClientAuth,
}

fn token_field() -> String {
    "token".to_owned()
}

fn no_client_auth() -> ClientAuth {
    ClientAuth::None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStyle {
    /// RFC 7009: `token` and `token_type_hint` in a form body.
    Rfc7009,
    /// The provider's own endpoint, described by the other fields.
    Provider,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhichToken {
    #[default]
    Refresh,
    Access,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPlacement {
    #[default]
    Form,
    Query,
    Json,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Delete,
}

/// OAuth 1.0a facts (RFC 5849).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1 {
    pub request_token_url: String,
    pub authorization_url: String,
    pub access_token_url: String,
    pub signature_method: SignatureMethod,
    /// Extra parameters of the authorization redirect (Trello's `scope`, `expiration`).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// How a connection's token is revoked at the provider; none when it has no way.
    #[serde(default)]
    pub revocation: Option<OAuth1Revocation>,
}

/// The revocation of an OAuth 1.0a token: one request signed with the token itself, as every
/// call is (Trello's `DELETE /1/tokens/{access_token}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1Revocation {
    /// A template; `{access_token}` is the token revoked (percent-encoded into the path).
    pub url: String,
    #[serde(default = "delete")]
    pub method: HttpMethod,
}

fn delete() -> HttpMethod {
    HttpMethod::Delete
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SignatureMethod {
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}

/// The agent's calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// May hold placeholders (`https://{shop}.myshopify.com/admin/api/2025-07`,
    /// `{instance_url}/services/data/v62.0`).
    pub base_url: String,
    /// Headers every call carries (`Notion-Version`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub credential: Credential,
}

/// How the credential is injected into the agent's calls.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    #[serde(rename = "in")]
    pub placement: CredentialPlacement,
    /// The header (`header`) or query parameter (`query`) name.
    #[serde(default)]
    pub name: Option<String>,
    /// The header or query value, a template: `{access_token}` by default for OAuth; for
    /// keys, the field (`Bot {bot_token}`).
    #[serde(default)]
    pub value: Option<String>,
    /// For `basic`: templates of the user name and password (`{api_key}` and `X`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialPlacement {
    /// `Authorization: Bearer {access_token}`.
    Bearer,
    /// `name: value`.
    Header,
    /// `?name=value`.
    Query,
    /// `Authorization: Basic` of `username:password`.
    Basic,
    /// The credential is part of `base_url` (Telegram's `/bot{bot_token}`).
    Url,
    /// An OAuth 1.0a signature per request.
    Oauth1,
}

/// An endpoint that names the connected account.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// A template; a relative path is joined to `api.base_url`.
    pub url: String,
    #[serde(default = "get")]
    pub method: HttpMethod,
    /// JSON pointer to the connection's label (an email, a workspace name).
    pub label: String,
    /// JSON pointer to the account's stable id at the provider.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn get() -> HttpMethod {
    HttpMethod::Get
}

/// How the service signs its webhooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    pub scheme: WebhookScheme,
    /// The header carrying the signature.
    #[serde(default)]
    pub signature_header: Option<String>,
    /// The header carrying the timestamp, for schemes that sign one.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// How old a signed timestamp may be.
    #[serde(default)]
    pub tolerance_secs: Option<u64>,
    /// The header carrying the event's unique id (`X-GitHub-Delivery`), the replay key.
    #[serde(default)]
    pub id_header: Option<String>,
    /// A JSON pointer to the event's unique id in the body (Slack's `/event_id`, Stripe's `/id`),
    /// when no header carries it. Without either, a digest of the signed content is the key.
    #[serde(default)]
    pub id_pointer: Option<String>,
    /// The header naming the event's type (`X-GitHub-Event`, `X-Shopify-Topic`).
    #[serde(default)]
    pub type_header: Option<String>,
    /// A JSON pointer to the event's type in the body (`/type`, `/event/type`).
    #[serde(default)]
    pub type_pointer: Option<String>,
    /// How an event finds the connection(s) it belongs to; without a rule, only events sent
    /// to a connection's own URL (`/v1/webhooks/{provider}/{connection_id}`) have an owner.
    #[serde(default)]
    pub route: Option<WebhookRoute>,
}

/// An event belongs to the provider's connections whose parameter or kept value `param`
/// equals the value the event carries (in a header or at a JSON pointer of its body): Slack's
/// `/team_id` against the kept `team_id`, GitHub's `/installation/id`, Shopify's
/// `X-Shopify-Shop-Domain` less `.myshopify.com` against the `shop` parameter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRoute {
    /// The connection's parameter or kept value to match: `[a-z][a-z0-9_]*`.
    pub param: String,
    /// The header carrying the value; exactly one of `header` and `pointer`.
    #[serde(default)]
    pub header: Option<String>,
    /// A JSON pointer (RFC 6901) into the body; a number is matched as its decimal text.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Removed from the end of the value before matching (`.myshopify.com`).
    #[serde(default)]
    pub strip_suffix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookScheme {
    /// `v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` (Slack).
    SlackV0,
    /// `sha256=` HMAC-SHA256 of the body (GitHub's `X-Hub-Signature-256`).
    GithubSha256,
    /// `t=…,v1=…`, HMAC-SHA256 of `{t}.{body}` (Stripe-Signature).
    Stripe,
    /// Base64 HMAC-SHA256 of the body (Shopify's `X-Shopify-Hmac-Sha256`).
    ShopifyHmac,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// The service does not sign its webhooks, or Atom receives none from it.
    None,
}
