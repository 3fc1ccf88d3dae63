//! The connector vault's catalog: declarative provider templates and the pure, template-driven
//! steps of connecting an account.
//!
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
//! The domain code (all but `routes`) names no axum and no `AppState`: the CLI and the HTTP
//! handlers call the same functions.

pub mod catalog;
pub mod oauth1;
pub mod oauth2;
pub mod pattern;
pub mod placeholders;
pub mod requests;
pub mod routes;
pub mod template;
pub mod validate;

pub use catalog::{Catalog, CatalogError};
pub use placeholders::Values;
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
