//! `GET /v1/admin/audit`: the audit log, newest first, filtered and paged by cursor.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, FieldError};
use crate::http::{Json, Query, Validate};
use crate::identity::Principal;
use crate::state::AppState;
use crate::storage::audit::{self as sql, AuditFilter};
use crate::wire::{parse_rfc3339, rfc3339};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/audit", get(list))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The acting user's or API key's id.
    pub actor: Option<String>,
    /// e.g. `auth.login`.
    pub action: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// RFC 3339; rows at or after.
    pub since: Option<String>,
    /// RFC 3339; rows before.
    pub until: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500; default 100.
    pub limit: Option<u32>,
}

impl Validate for AuditQuery {}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub id: String,
    pub at: String,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, description = "Not an admin"),
        (status = 422, description = "Invalid filter")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    principal.require_admin()?;
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 500"));
    }
    if q.outcome.as_deref().is_some_and(|o| !["success", "failure", "denied"].contains(&o)) {
        errors.push(FieldError::new("outcome", "must be success, failure or denied"));
    }
    let mut time = |field: &str, value: &Option<String>| {
        value.as_deref().and_then(|v| {
            parse_rfc3339(v).or_else(|| {
                errors.push(FieldError::new(field, "must be an RFC 3339 time"));
                None
            })
        })
    };
    let since_ms = time("since", &q.since);
    let until_ms = time("until", &q.until);
    let before_seq = match q.cursor.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(seq)) if seq > 0 => Some(seq),
        Some(_) => {
            errors.push(FieldError::new("cursor", "is not a cursor from this API"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = AuditFilter {
        actor_id: q.actor,
        action: q.action,
        outcome: q.outcome,
        since_ms,
        until_ms,
        before_seq,
        limit: i64::from(limit) + 1,
    };
    let rows = sql::list(&state.db, &filter).await?;
    let more = rows.len() > limit as usize;
    let entries: Vec<AuditEntry> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| AuditEntry {
            seq: r.seq,
            id: r.id,
            at: rfc3339(r.at),
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            client_addr: r.client_addr,
            user_agent: r.user_agent,
            request_id: r.request_id,
            details: serde_json::from_str(&r.details).unwrap_or_default(),
            hash: r.hash,
        })
        .collect();
    let next_cursor = if more { entries.last().map(|e| e.seq.to_string()) } else { None };
    Ok(Json(AuditPage { entries, next_cursor }))
}
