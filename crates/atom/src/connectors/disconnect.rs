//! Disconnecting: revoke at the provider (RFC 7009: the refresh token, which ends the grant,
//! then the access token), then delete the local secrets. The local deletion never depends
//! on the provider: when revocation fails (unreachable, an error), the connection is deleted
//! all the same and the failure is recorded in the audit row.

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::exchange;
use super::service::Connectors;
use super::spec::AuthSpec;
use super::vault::Credentials;
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::storage::connections::{self as sql, ConnectionRow};

impl Connectors {
    /// Revokes `row`'s tokens at its provider; `None` when done (or nothing to revoke), the
    /// error's code otherwise.
    async fn revoke_at_provider(&self, row: &ConnectionRow) -> Option<ConnectError> {
        let Ok(spec) = self.provider(&row.provider) else { return None };
        let AuthSpec::OAuth2(oauth) = &spec.auth else { return None };
        oauth.revocation_url.as_ref()?;
        let credentials = match Credentials::open(&self.keyring(), row) {
            Ok(c) => c,
            Err(_) => {
                return Some(ConnectError::new(ErrorCode::ProviderError, "the stored credentials do not decrypt"));
            }
        };
        let app = match self.app(&row.provider).await {
            Ok(app) => app,
            Err(ConnectorError::Connect(e)) => return Some(e),
            Err(ConnectorError::Api(_)) => {
                return Some(ConnectError::new(ErrorCode::NotConfigured, "the provider's app could not be read"));
            }
        };
        let pairs = [
            (credentials.refresh_token.as_deref(), "refresh_token"),
            (credentials.access_token.as_deref(), "access_token"),
        ];
        for (token, hint) in pairs {
            let Some(token) = token else { continue };
            if let Err(e) = exchange::revoke(self.http(), oauth, &app.client, token, hint).await {
                return Some(e);
            }
        }
        None
    }

    /// Disconnects the user's connection `id`: revocation, then deletion with its audit row.
    /// The deleted connection and the revocation's failure, if any.
    pub async fn disconnect(
        &self,
        actor: Actor,
        user_id: &str,
        id: &str,
        context: &RequestContext,
    ) -> Result<Option<ConnectError>, ConnectorError> {
        let row = super::vault::get_for_user(self.db(), user_id, id).await?.ok_or(ApiError::NotFound)?;
        let failure = self.revoke_at_provider(&row).await;
        let mut tx = self.db().begin().await?;
        if sql::delete_connection(&mut tx, id, user_id).await?.is_none() {
            return Err(ApiError::NotFound.into());
        }
        let event = AuditEvent::new(actor, "connection.deleted", Outcome::Success, context)
            .target(id.to_owned())
            .details(serde_json::json!({
                "provider": row.provider,
                "revoked": failure.is_none(),
                "revocation_error": failure.as_ref().map(ConnectError::stored),
            }));
        audit::record(&mut tx, event).await?;
        tx.commit().await?;
        if let Some(e) = &failure {
            tracing::warn!(provider = %row.provider, connection_id = %id, code = e.code.as_str(),
                "revocation at the provider failed; the connection was deleted locally");
        }
        Ok(failure)
    }

    /// Every connection of `user_id` revoked and deleted, for the deletion of the account.
    /// How many.
    pub async fn disconnect_all(&self, user_id: &str, context: &RequestContext) -> Result<usize, ConnectorError> {
        let rows = super::vault::list_for_user(self.db(), user_id).await?;
        for row in &rows {
            let failure = self.revoke_at_provider(row).await;
            let mut tx = self.db().begin().await?;
            sql::delete_connection(&mut tx, &row.id, user_id).await?;
            let event = AuditEvent::new(Actor::System, "connection.deleted", Outcome::Success, context)
                .target(row.id.clone())
                .details(serde_json::json!({
                    "provider": row.provider,
                    "reason": "account_deleted",
                    "revoked": failure.is_none(),
                    "revocation_error": failure.as_ref().map(ConnectError::stored),
                }));
            audit::record(&mut tx, event).await?;
            tx.commit().await?;
        }
        Ok(rows.len())
    }
}
