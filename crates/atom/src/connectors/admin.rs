//! The admin view of every connection (behind the OAuth dashboard): the filtered listing,
//! counts per provider and status, one connection's history, a forced refresh and a
//! revocation.
//!
//! Invariants: nothing here reads or returns a credential (the listing's SQL does not even
//! select the encrypted column); every change an admin makes commits with its audit row
//! naming the admin; the history is what the audit log and the webhook deliveries say of the
//! connection (refreshes, failures, token use by the agent, webhooks received), not a second
//! record of it.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::service::Connectors;
use super::vault::ConnectionView;
use super::webhooks::WebhookEventView;
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::error::ApiError;
use crate::storage::audit as audit_sql;
use crate::storage::connection_admin::{self as sql, AdminConnectionRow, AdminFilter};
use crate::storage::connections::ConnectionRow;
use crate::storage::webhooks as webhooks_sql;
use crate::storage::{Db, now_ms};
use crate::wire::rfc3339;

/// A connection as an admin sees it: its owner and state, never a credential.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminConnectionView {
    #[serde(flatten)]
    pub connection: ConnectionView,
    /// The owner's user id.
    pub user_id: String,
    /// The owner's email, when the account still exists.
    pub owner_email: Option<String>,
    /// The provider account's stable id.
    pub account_id: String,
}

impl From<&AdminConnectionRow> for AdminConnectionView {
    fn from(r: &AdminConnectionRow) -> Self {
        // The view of an owner's connection, from the same columns; `credentials` is never read.
        let row = ConnectionRow {
            id: r.id.clone(),
            user_id: r.user_id.clone(),
            provider: r.provider.clone(),
            auth_kind: r.auth_kind.clone(),
            account_id: r.account_id.clone(),
            label: r.label.clone(),
            status: r.status.clone(),
            scopes: r.scopes.clone(),
            params: r.params.clone(),
            credentials: String::new(),
            expires_at: r.expires_at,
            last_refresh_at: r.last_refresh_at,
            last_error: r.last_error.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        };
        Self {
            connection: ConnectionView::from(&row),
            user_id: r.user_id.clone(),
            owner_email: r.owner_email.clone(),
            account_id: r.account_id.clone(),
        }
    }
}

/// The cursor of the listing: `<created_at>.<id>` of the last row shown.
pub fn parse_cursor(cursor: &str) -> Option<(i64, String)> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.to_owned())).filter(|(_, id)| !id.is_empty())
}

/// One page of the listing and the next page's cursor.
pub async fn list(db: &Db, mut filter: AdminFilter) -> Result<(Vec<AdminConnectionView>, Option<String>), ApiError> {
    let limit = usize::try_from(filter.limit).unwrap_or(50);
    filter.limit += 1;
    let rows = sql::list(db, &filter).await?;
    let next =
        (rows.len() > limit).then(|| rows.get(limit - 1).map(|r| format!("{}.{}", r.created_at, r.id))).flatten();
    Ok((rows.iter().take(limit).map(AdminConnectionView::from).collect(), next))
}

/// Counts of one provider's connections.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderCounts {
    pub provider: String,
    pub total: i64,
    /// By status (`active`, `needs_reauth`).
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionStats {
    pub total: i64,
    pub by_status: BTreeMap<String, i64>,
    pub providers: Vec<ProviderCounts>,
}

pub async fn stats(db: &Db) -> Result<ConnectionStats, ApiError> {
    let mut stats = ConnectionStats { total: 0, by_status: BTreeMap::new(), providers: Vec::new() };
    for (provider, status, n) in sql::counts(db).await? {
        stats.total += n;
        *stats.by_status.entry(status.clone()).or_default() += n;
        match stats.providers.last_mut() {
            Some(p) if p.provider == provider => {
                p.total += n;
                *p.by_status.entry(status).or_default() += n;
            }
            _ => stats.providers.push(ProviderCounts { provider, total: n, by_status: BTreeMap::from([(status, n)]) }),
        }
    }
    Ok(stats)
}

/// One audited action on the connection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub at: String,
    /// `connection.refreshed`, `connection.refresh_failed`, `connection.needs_reauth`,
    /// `connection.token_read` (a caller took its token), `connection.proxy_used` (a caller's
    /// first proxied call in a window), `connection.deleted`, `connection.admin_refresh`…
    pub action: String,
    pub outcome: String,
    /// `user`, `api_key`, `system` or `anonymous`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionHistory {
    pub connection: AdminConnectionView,
    /// Newest first: refreshes, failures, who used its token, admin actions.
    pub actions: Vec<HistoryEntry>,
    /// Newest first: the webhooks routed to it.
    pub webhooks: Vec<WebhookEventView>,
}

/// The connection's last `limit` audited actions and webhooks.
pub async fn history(db: &Db, id: &str, limit: i64) -> Result<ConnectionHistory, ApiError> {
    let row = sql::by_id(db, id).await?.ok_or(ApiError::NotFound)?;
    let actions = audit_sql::list_by_target(db, id, i64::MAX, limit)
        .await?
        .into_iter()
        .map(|r| HistoryEntry {
            at: rfc3339(r.at),
            action: r.action,
            outcome: r.outcome,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            details: serde_json::from_str(&r.details).unwrap_or_default(),
        })
        .collect();
    let webhooks = webhooks_sql::list_for_connection(db, id, i64::MAX, limit).await?;
    Ok(ConnectionHistory {
        connection: AdminConnectionView::from(&row),
        actions,
        webhooks: webhooks.iter().map(WebhookEventView::from).collect(),
    })
}

impl Connectors {
    /// An admin's forced refresh of any connection, audited with its outcome.
    pub async fn admin_refresh(
        &self,
        admin: Actor,
        id: &str,
        context: &RequestContext,
    ) -> Result<AdminConnectionView, ConnectorError> {
        let before = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
        let result = match self.force_refresh(id).await {
            // A transient failure leaves a still-valid token in use and answers with the
            // row; asked for a refresh, the admin hears that none happened.
            Ok(row) if row.last_refresh_at == before.last_refresh_at && row.last_error.is_some() => {
                Err(ConnectorError::connect(
                    ErrorCode::ProviderUnavailable,
                    row.last_error.as_deref().unwrap_or("the refresh failed"),
                ))
            }
            other => other,
        };
        let (outcome, error) = match &result {
            Ok(_) => (Outcome::Success, None),
            Err(ConnectorError::Connect(e)) => (Outcome::Failure, Some(e.code.as_str())),
            Err(ConnectorError::Api(_)) => (Outcome::Failure, Some("internal")),
        };
        let event = AuditEvent::new(admin, "connection.admin_refresh", outcome, context).target(id.to_owned()).details(
            serde_json::json!({ "provider": before.provider, "owner": before.user_id, "error": error, "at": now_ms() }),
        );
        audit::record_alone(self.db(), event).await?;
        result?;
        let row = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
        Ok(AdminConnectionView::from(&row))
    }

    /// An admin's revocation of any connection: revoked at the provider, deleted, audited
    /// (`connection.deleted`, the admin as actor). The revocation's failure, if any.
    pub async fn admin_revoke(
        &self,
        admin: Actor,
        id: &str,
        context: &RequestContext,
    ) -> Result<Option<ConnectError>, ConnectorError> {
        let row = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
        self.disconnect(admin, &row.user_id, id, context).await
    }
}
