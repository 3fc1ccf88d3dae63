//! The connector vault: the provider catalog, and users' connections to outside services with
//! their credentials encrypted at rest, kept alive and revoked.
//!
//! The catalog (declarative templates and the pure, template-driven steps):
//! - [`template`]: the schema of `providers/<id>.toml`.
//! - [`catalog`]: the built-in templates compiled into the binary, overlaid by
//!   `connectors.providers_dir`, validated ([`validate`]) before anything uses them.
//! - [`pattern`]: the anchored patterns that guard values before they enter URLs.
//! - [`placeholders`]: `{name}` placeholders and the checked [`Values`] that fill them.
//! - [`oauth1`]: RFC 5849 HMAC-SHA1 request signing (Trello).
//! - [`oauth2`]: the authorization URL, callback values and token responses, per template.
//! - [`requests`]: the code exchange, refresh, client credentials and revocation requests,
//!   built from the template (client authentication, body encoding, extra parameters).
//! - [`routes`]: `GET /v1/providers[/{id}]`, above the rest.
//!
//! The vault (flows, storage, refresh):
//! - [`spec`]: what the flows read of a provider's template.
//! - [`apps`]: the instance's own OAuth app per provider (configuration or admin API).
//! - [`endpoints`]: one connection's endpoints: its parameters checked and filled in, the
//!   issuer's metadata (RFC 8414 / OIDC discovery) fetched, cached and applied.
//! - [`par`]: pushed authorization requests (RFC 9126).
//! - [`flows`]: the OAuth 2.0 authorization URL and callback (PKCE, `iss`, single-use state).
//! - [`oauth1_flow`]: the OAuth 1.0a three-legged flow (Trello), with the same state
//!   guarantees, and the signed revocation of its token.
//! - [`exchange`]: the token endpoint, revocation and identity calls, each answer checked.
//! - [`identity`]: the template's identity endpoint called with a pasted or OAuth 1.0a
//!   credential: who it belongs to, and proof that it works.
//! - [`tokens`]: the code exchange read through the template (client authentication, body
//!   encoding, token pointers, expiry, kept values), then [`lookup`] (Atlassian's cloud id,
//!   Mailchimp's data centre; Tableau's sign-in and sign-out) and the identity call.
//! - [`submit`]: connecting an API-key or basic-auth service by submitting its credential
//!   (signed in first when its template's lookup is a sign-in).
//! - [`vault`]: connections and their encrypted credentials; what the API shows of them.
//! - [`refresh`]: single-flight refresh (in process and across processes), a sign-in's
//!   session renewed; [`refresh_outcome`] what an outcome stores (tokens, moved kept values,
//!   `needs_reauth`); [`refresh_worker`] the background refresher.
//! - [`disconnect`]: revocation at the provider, then local deletion.
//! - [`error`]: connection errors with stable codes; scrubbing of provider text.
//! - [`connection_routes`]: the HTTP handlers of connections and apps.
//!
//! The agent's access (using connections):
//! - [`access`]: who may use a connection (its owner, or a `connections:use` API key), and
//!   its fresh token, audited.
//! - [`proxy`]: calls forwarded to the provider with the credential injected, streamed both
//!   ways, retried once after a refresh on 401, rate-limited; [`proxy_error`] its own errors;
//!   [`proxy_use`] who used a connection through it, audited once per caller and window.
//! - [`ssrf`]: the guard that keeps the proxy off the server's own network: the address
//!   policy, the resolver that applies it at connect time, path normalisation.
//! - [`agent_routes`]: `GET /v1/connections/{id}/token` and `/v1/proxy/{connection_id}/{path}`.
//!
//! Incoming webhooks and the admin view:
//! - [`webhook_schemes`]: the signature schemes (Slack v0, GitHub, Stripe, Shopify, Standard
//!   Webhooks), verified in constant time over the raw body; pure.
//! - [`webhooks`]: verify, store (once per provider event id), route to the owning
//!   connections, publish on the bus through an outbox; retention.
//! - [`webhook_routes`]: `POST /v1/webhooks/{provider}[/{connection_id}]` (public),
//!   `GET /v1/webhooks/events`.
//! - [`admin`], [`admin_routes`]: every connection for admins: filters, counts, history,
//!   forced refresh, revocation.
//!
//! The domain code (all but the route files and the error responses) names no axum and no `AppState`; the CLI and the HTTP
//! handlers call the same code.

pub mod access;
pub mod admin;
pub mod admin_routes;
pub mod agent_routes;
pub mod apps;
pub mod catalog;
pub mod connection_routes;
pub mod disconnect;
pub mod endpoints;
pub mod error;
pub mod exchange;
pub mod flows;
pub mod identity;
pub mod lookup;
pub mod oauth1;
pub mod oauth1_flow;
pub mod oauth2;
pub mod par;
pub mod pattern;
pub mod placeholders;
pub mod proxy;
pub mod proxy_error;
pub mod proxy_use;
pub mod refresh;
pub mod refresh_outcome;
pub mod refresh_worker;
pub mod requests;
pub mod routes;
pub mod service;
pub mod spec;
pub mod ssrf;
pub mod submit;
pub mod template;
pub mod tokens;
pub mod validate;
pub mod vault;
pub mod webhook_routes;
pub mod webhook_schemes;
pub mod webhooks;

pub use catalog::{Catalog, CatalogError};
pub use error::{ConnectError, ConnectorError, ErrorCode};
pub use placeholders::Values;
pub use service::Connectors;
pub use template::{AuthMode, Template};

/// The one path every provider redirects back to; admins register
/// `public_url` + this path as the redirect URI of the instance's app at each provider.
pub const CALLBACK_PATH: &str = "/v1/connections/callback";

/// The redirect URI to register at the providers, when `public_url` is set.
pub fn callback_url(public_url: Option<&str>) -> Option<String> {
    public_url.map(|u| format!("{}{CALLBACK_PATH}", u.trim_end_matches('/')))
}

/// Whether the instance has its app at provider `id` in configuration. The admin API's
/// stored apps are the vault's to add.
pub fn app_configured(config: &crate::config::ConnectorsConfig, id: &str) -> bool {
    config.apps.get(id).is_some_and(|a| !a.client_id.trim().is_empty())
}

#[cfg(test)]
mod tests;
