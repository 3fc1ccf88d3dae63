//! Disconnecting: revoke at the provider (RFC 7009: the refresh token, which ends the grant,
//! then the access token; or the provider's own call, as its template declares it; an OAuth
//! 1.0a token by its signed deletion; a sign-in's session by its sign-out), then delete the
//! local secrets. The local deletion never depends
//! on the provider: when revocation fails (unreachable, an error), the connection is deleted
//! all the same and the failure is recorded in the audit row.

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::exchange;
use super::service::Connectors;
use super::spec::AuthSpec;
use super::template::Lookup;
use super::vault::Credentials;
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::storage::connections::{self as sql, ConnectionRow};

impl Connectors {
    /// Revokes `row`'s tokens at its provider, as its template says (RFC 7009, or the
    /// provider's own call); `None` when done (or nothing to revoke), the error otherwise.
    async fn revoke_at_provider(&self, row: &ConnectionRow) -> Option<ConnectError> {
        if let Ok(t) = self.template(&row.provider) {
            // OAuth 1.0a (Trello's token deletion) and a sign-in's session (Tableau's
            // sign-out) are revoked as their templates say.
            let outcome = if t.oauth1.is_some() {
                Some(super::oauth1_flow::revoke(self, &t, row).await)
            } else if t.lookup.is_some_and(Lookup::signs_in) {
                Some(super::lookup::sign_out(self, &t, row).await)
            } else {
                None
            };
            match outcome {
                Some(Ok(())) => return None,
                Some(Err(ConnectorError::Connect(e))) => return Some(e),
                Some(Err(ConnectorError::Api(_))) => {
                    return Some(ConnectError::new(
                        ErrorCode::NotConfigured,
                        "the connection could not be revoked as its template says",
                    ));
                }
                None => {}
            }
        }
        let Ok(spec) = self.provider(&row.provider) else { return None };
        let AuthSpec::OAuth2(oauth) = &spec.auth else { return None };
        if oauth.revocation_url.is_none() && oauth.provider_revocation.is_none() && oauth.discovery_issuer.is_none() {
            return None;
        }
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
        let resolved = match super::endpoints::check_params(oauth, &super::endpoints::stored_params(oauth, &row.params))
        {
            Ok(values) => self.endpoints(oauth, &values, &app.client.client_id).await,
            Err(e) => Err(e.into()),
        };
        let oauth = match resolved {
            Ok(oauth) => oauth,
            Err(ConnectorError::Connect(e)) => return Some(e),
            Err(ConnectorError::Api(_)) => {
                return Some(ConnectError::new(ErrorCode::NotConfigured, "the connection's parameters no longer fit"));
            }
        };
        if let Some(revocation) = &oauth.provider_revocation {
            return exchange::revoke_provider(
                self.http(),
                revocation,
                &app.client,
                credentials.access_token.as_deref(),
                credentials.refresh_token.as_deref(),
            )
            .await
            .err();
        }
        oauth.revocation_url.as_ref()?;
        let pairs = [
            (credentials.refresh_token.as_deref(), "refresh_token"),
            (credentials.access_token.as_deref(), "access_token"),
        ];
        for (token, hint) in pairs {
            let Some(token) = token else { continue };
            if let Err(e) = exchange::revoke(self.http(), &oauth, &app.client, token, hint).await {
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

    /// For the deletion of an account: every connection of `user_id` revoked at its provider
    /// (best effort: a failure is kept, never fatal). Nothing is deleted yet: the caller hands
    /// the result to [`Connectors::delete_revoked`] inside the transaction that deletes the
    /// account, so a failure there leaves the connections as they were.
    pub async fn revoke_all(
        &self,
        user_id: &str,
    ) -> Result<Vec<(ConnectionRow, Option<ConnectError>)>, ConnectorError> {
        let rows = super::vault::list_for_user(self.db(), user_id).await?;
        let mut revoked = Vec::with_capacity(rows.len());
        for row in rows {
            let failure = self.revoke_at_provider(&row).await;
            if let Some(e) = &failure {
                tracing::warn!(provider = %row.provider, connection_id = %row.id, code = e.code.as_str(),
                    "revocation at the provider failed; the connection is deleted with its account");
            }
            revoked.push((row, failure));
        }
        Ok(revoked)
    }

    /// Deletes the connections [`Connectors::revoke_all`] revoked, with an audit row each
    /// (`reason: account_deleted`, whether the provider revoked), in `tx`. The account's
    /// deletion sweeps its pending authorizations.
    pub async fn delete_revoked(
        &self,
        tx: &mut crate::storage::Tx,
        user_id: &str,
        revoked: &[(ConnectionRow, Option<ConnectError>)],
        actor: &Actor,
        context: &RequestContext,
    ) -> Result<usize, ConnectorError> {
        for (row, failure) in revoked {
            sql::delete_connection(tx, &row.id, user_id).await?;
            let event = AuditEvent::new(actor.clone(), "connection.deleted", Outcome::Success, context)
                .target(row.id.clone())
                .details(serde_json::json!({
                    "provider": row.provider,
                    "reason": "account_deleted",
                    "revoked": failure.is_none(),
                    "revocation_error": failure.as_ref().map(ConnectError::stored),
                }));
            audit::record(tx, event).await?;
        }
        Ok(revoked.len())
    }
}
