//! The connector vault: connections of users to outside services, their credentials
//! encrypted at rest, kept alive and revoked.
//!
//! - [`spec`]: what the flows read of a provider's template.
//! - [`apps`]: the instance's own OAuth app per provider (configuration or admin API).
//! - [`flows`]: the OAuth 2.0 authorization URL and callback (PKCE, `iss`, single-use state).
//! - [`exchange`]: the token endpoint, revocation and identity calls, each answer checked.
//! - [`vault`]: connections and their encrypted credentials; what the API shows of them.
//! - [`refresh`]: single-flight refresh (in process and across processes), the background
//!   refresher, `needs_reauth`.
//! - [`disconnect`]: revocation at the provider, then local deletion.
//! - [`error`]: connection errors with stable codes; scrubbing of provider text.
//! - [`connection_routes`]: the HTTP handlers of connections and apps.

pub mod apps;
pub mod connection_routes;
pub mod disconnect;
pub mod error;
pub mod exchange;
pub mod flows;
pub mod refresh;
pub mod service;
pub mod spec;
pub mod vault;

pub use error::{ConnectError, ConnectorError, ErrorCode};
pub use service::Connectors;
