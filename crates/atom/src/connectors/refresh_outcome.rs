//! What a refresh's outcome does to its connection (the second half of [`super::refresh`]):
//! new tokens, and the kept values the answer moved, stored in one statement under the
//! caller's lease (fencing) with their audit row; `invalid_grant` (or a sign-in's refused
//! credential) marks the connection `needs_reauth`, audits it and tells its owner on the bus;
//! another failure is recorded in `last_error` while the connection stays usable until its
//! token expires.

use std::collections::BTreeMap;
use std::time::Instant;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::exchange;
use super::refresh::NEEDS_REAUTH;
use super::service::Connectors;
use super::vault::Credentials;
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::bus::{Event, EventKind};
use crate::error::ApiError;
use crate::storage::connections::{self as sql, ConnectionRow};
use crate::storage::now_ms;

impl Connectors {
    /// Records a refresh's outcome: the new tokens (and moved kept values) stored under the
    /// lease, or the failure recorded as the module says.
    pub(super) async fn store_outcome(
        &self,
        row: &ConnectionRow,
        holder: &str,
        mut credentials: Credentials,
        started: Instant,
        outcome: Result<exchange::TokenSet, ConnectError>,
    ) -> Result<ConnectionRow, ConnectorError> {
        let provider = row.provider.as_str();
        metrics::histogram!("connector_refresh_duration_seconds", "provider" => provider.to_owned())
            .record(started.elapsed().as_secs_f64());
        let tokens = match outcome {
            Ok(tokens) => tokens,
            // A sign-in's refused credential is what `invalid_grant` is to a refresh token.
            Err(e) if matches!(e.code, ErrorCode::InvalidGrant | ErrorCode::InvalidCredentials) => {
                return self.mark_needs_reauth(row, &e).await;
            }
            Err(e) => {
                let outcome = if e.code.is_transient() { "transient" } else { "error" };
                metrics::counter!("connector_refreshes_total", "provider" => provider.to_owned(), "outcome" => outcome)
                    .increment(1);
                tracing::warn!(provider, connection_id = %row.id, code = e.code.as_str(), "connector refresh failed");
                let mut tx = self.db().begin().await?;
                sql::record_failure(&mut tx, &row.id, "active", &e.stored(), now_ms()).await?;
                // The connection's history (the admin view) shows failures beside refreshes.
                let event = AuditEvent::new(
                    Actor::System,
                    "connection.refresh_failed",
                    Outcome::Failure,
                    &RequestContext::default(),
                )
                .target(row.id.clone())
                .details(serde_json::json!({ "provider": provider, "error": e.code.as_str() }));
                audit::record(&mut tx, event).await?;
                tx.commit().await?;
                // Still usable while its token is valid.
                if row.expires_at.is_some_and(|expires| expires > now_ms()) {
                    return sql::by_id(self.db(), &row.id).await?.ok_or(ApiError::NotFound.into());
                }
                return Err(e.into());
            }
        };
        let now = now_ms();
        credentials.access_token = Some(tokens.access_token.clone());
        if let Some(rotated) = &tokens.refresh_token {
            credentials.refresh_token = Some(rotated.clone());
        }
        if tokens.token_type.is_some() {
            credentials.token_type.clone_from(&tokens.token_type);
        }
        let expires_at = tokens.expires_in.filter(|s| *s > 0).map(|s| now.saturating_add(s.saturating_mul(1000)));
        let (params, moved) = moved_params(&row.params, &tokens.kept);
        let sealed = credentials.seal(&self.keyring(), &row.id, &row.user_id)?;
        let mut tx = self.db().begin().await?;
        let stored =
            sql::store_refreshed(&mut tx, &row.id, holder, &sealed, params.as_deref(), expires_at, now).await?;
        if stored {
            let event =
                AuditEvent::new(Actor::System, "connection.refreshed", Outcome::Success, &RequestContext::default())
                    .target(row.id.clone())
                    .details(serde_json::json!({
                        "provider": provider,
                        "rotated": tokens.refresh_token.is_some(),
                        "moved": moved,
                    }));
            audit::record(&mut tx, event).await?;
        }
        tx.commit().await?;
        if !stored {
            // The lease ran out and another holder took over: its tokens stand. The ones
            // just obtained are dropped (a provider that rotates has invalidated ours anyway).
            tracing::warn!(provider, connection_id = %row.id, "connector refresh: lease lost; newer tokens kept");
        }
        metrics::counter!("connector_refreshes_total", "provider" => provider.to_owned(), "outcome" => "success")
            .increment(1);
        sql::by_id(self.db(), &row.id).await?.ok_or(ApiError::NotFound.into())
    }

    /// `invalid_grant`: the connection needs its user again. Audited with the change; the
    /// owner hears of it on the bus.
    pub(super) async fn mark_needs_reauth(
        &self,
        row: &ConnectionRow,
        error: &ConnectError,
    ) -> Result<ConnectionRow, ConnectorError> {
        metrics::counter!("connector_refreshes_total", "provider" => row.provider.clone(), "outcome" => "invalid_grant")
            .increment(1);
        let mut tx = self.db().begin().await?;
        sql::record_failure(&mut tx, &row.id, "needs_reauth", &error.stored(), now_ms()).await?;
        let event = AuditEvent::new(
            Actor::System,
            "connection.needs_reauth",
            Outcome::Failure,
            &RequestContext::default(),
        )
        .target(row.id.clone())
        .details(serde_json::json!({ "provider": row.provider, "user_id": row.user_id, "error": error.code.as_str() }));
        audit::record(&mut tx, event).await?;
        tx.commit().await?;
        tracing::warn!(provider = %row.provider, connection_id = %row.id, "connection needs re-authorization");
        self.bus()
            .publish(Event {
                user_id: row.user_id.clone(),
                // Delivered to the owner's sockets as `notification`.
                kind: EventKind::Notification {
                    notification_type: NEEDS_REAUTH.to_owned(),
                    data: serde_json::json!({ "connection_id": row.id, "provider": row.provider }),
                },
            })
            .await;
        Err(ConnectError::new(ErrorCode::NeedsReauth, "the provider refused the refresh token; authorize again").into())
    }
}

/// The connection's stored parameters (a JSON object, which also holds its kept values) with
/// the kept values a refresh answer carried, when any of them changed (Salesforce's
/// `instance_url` after an org moves), and the names that changed. Each value already passed
/// its pattern when the answer was read. `None` leaves the stored object as it is.
fn moved_params(stored: &str, kept: &BTreeMap<String, String>) -> (Option<String>, Vec<String>) {
    let mut params: serde_json::Map<String, serde_json::Value> = serde_json::from_str(stored).unwrap_or_default();
    let mut moved = Vec::new();
    for (name, value) in kept {
        if params.get(name).and_then(serde_json::Value::as_str) != Some(value.as_str()) {
            params.insert(name.clone(), serde_json::Value::from(value.as_str()));
            moved.push(name.clone());
        }
    }
    if moved.is_empty() {
        return (None, moved);
    }
    (Some(serde_json::Value::Object(params).to_string()), moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_kept_value_that_changed_rewrites_the_stored_parameters() {
        let stored = r#"{"domain":"login","instance_url":"https://acme.my.salesforce.com"}"#;
        let same = BTreeMap::from([("instance_url".to_owned(), "https://acme.my.salesforce.com".to_owned())]);
        assert_eq!(moved_params(stored, &same), (None, Vec::new()));
        assert_eq!(moved_params(stored, &BTreeMap::new()), (None, Vec::new()));
        let moved = BTreeMap::from([("instance_url".to_owned(), "https://acme2.my.salesforce.com".to_owned())]);
        let (params, names) = moved_params(stored, &moved);
        assert_eq!(names, ["instance_url"]);
        let params: serde_json::Value = serde_json::from_str(&params.expect("rewritten")).expect("json");
        assert_eq!(params, serde_json::json!({ "domain": "login", "instance_url": "https://acme2.my.salesforce.com" }));
    }
}
