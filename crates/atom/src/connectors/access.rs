//! The agent's access to a connection: who may use it, and its fresh access token.
//!
//! A connection is used by its owner: with the owner's access token, or with one of the
//! owner's API keys that carries the `connections:use` scope (and, when the key is limited to
//! some providers, names the connection's). The connection is looked up by its owner, so a key
//! or token of another user finds nothing: a 404, never a 403 that would confirm the id.
//!
//! Every token handed out is audited with the connection as the target and the caller (user
//! or key) as the actor, refusals included, so that a connection's history says who used it.

use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::service::Connectors;
use super::vault::{self, Credentials};
use crate::audit::{self, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::storage::connections::ConnectionRow;
use crate::wire::rfc3339;

/// The audit action of a token handed out (or refused) by `GET /v1/connections/{id}/token`.
pub const TOKEN_ACTION: &str = "connection.token_read";

/// A connection's access token, for an agent that calls the provider itself.
#[derive(Serialize, ToSchema)]
pub struct ConnectionToken {
    pub access_token: String,
    /// As the provider said it (`Bearer`, `bearer`), when it did.
    pub token_type: Option<String>,
    /// When the token expires; none for tokens that do not.
    pub expires_at: Option<String>,
    pub provider: String,
    /// The connection parameters and the values kept from the flow (`instance_url`, a data
    /// centre `dc`, a `tenant_id`) that calls need beside the token.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
}

impl std::fmt::Debug for ConnectionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionToken").field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// The connection `id` if `principal` may use it (see the module's paragraph).
pub async fn usable(connectors: &Connectors, principal: &Principal, id: &str) -> Result<ConnectionRow, ApiError> {
    principal.require_connection_use()?;
    let row = vault::get_for_user(connectors.db(), &principal.user_id, id).await?.ok_or(ApiError::NotFound)?;
    principal.require_provider(&row.provider)?;
    Ok(row)
}

/// The connection's access token, refreshed first when due (single-flight with every other
/// caller); audited.
pub async fn token(
    connectors: &Connectors,
    principal: &Principal,
    id: &str,
    context: &RequestContext,
) -> Result<ConnectionToken, ConnectorError> {
    let row = usable(connectors, principal, id).await?;
    let result = fresh_token(connectors, row.clone()).await;
    let (outcome, details) = match &result {
        Ok(_) => (Outcome::Success, serde_json::json!({ "provider": row.provider })),
        Err(ConnectorError::Connect(e)) => {
            (Outcome::Failure, serde_json::json!({ "provider": row.provider, "error": e.code.as_str() }))
        }
        Err(ConnectorError::Api(_)) => (Outcome::Failure, serde_json::json!({ "provider": row.provider })),
    };
    let event =
        AuditEvent::new(principal.actor(), TOKEN_ACTION, outcome, context).target(row.id.clone()).details(details);
    audit::record_alone(connectors.db(), event).await?;
    result
}

async fn fresh_token(connectors: &Connectors, row: ConnectionRow) -> Result<ConnectionToken, ConnectorError> {
    let row = connectors.fresh(row).await?;
    let credentials = Credentials::open(&connectors.keyring(), &row)?;
    let access_token = credentials.access_token.clone().ok_or_else(|| {
        ConnectError::new(
            ErrorCode::WrongAuthKind,
            "this connection holds a credential, not an access token; use the proxy",
        )
    })?;
    Ok(ConnectionToken {
        access_token,
        token_type: credentials.token_type.clone(),
        expires_at: row.expires_at.map(rfc3339),
        provider: row.provider.clone(),
        params: serde_json::from_str(&row.params).unwrap_or_else(|_| serde_json::json!({})),
    })
}
