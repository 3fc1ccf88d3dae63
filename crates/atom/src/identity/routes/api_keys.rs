//! The caller's API keys: create (the secret shown once), list (by cursor), revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{self, AuditEvent, Outcome, RequestContext};
use crate::cache::Namespace;
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Query};
use crate::identity::accounts::PageQuery;
use crate::identity::auth::Principal;
use crate::identity::{random_secret, secret_hash};
use crate::state::AppState;
use crate::storage::api_keys::{self as sql, ApiKeyRow};
use crate::storage::now_ms;

use crate::identity::api_keys::*;

#[utoipa::path(post, path = "/v1/api-keys", tag = "identity", security(("bearer" = [])), request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 422, description = "Invalid fields")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let scopes = body.scopes.clone().unwrap_or_else(|| vec!["api".to_owned()]);
    // The account's role; whether an API key in use may pass its own scopes on is checked below.
    if scopes.iter().any(|s| s == "admin") && principal.role != crate::identity::Role::Admin {
        return Err(ApiError::Validation(vec![FieldError::new("scopes", "admin needs an admin account")]));
    }
    let name = body.name.trim();
    // A key made with an API key cannot carry more than that key's scopes.
    if let crate::identity::Credential::ApiKey { scopes: own, .. } = &principal.credential
        && scopes.iter().any(|s| !own.contains(s))
    {
        return Err(ApiError::Forbidden("A key cannot grant scopes its creator lacks.".to_owned()));
    }
    let unknown: Vec<&String> =
        body.providers.iter().flatten().filter(|p| state.catalog.get(p.as_str()).is_none()).collect();
    if let Some(p) = unknown.first() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "providers",
            format!("{p} is no provider of the catalog"),
        )]));
    }
    // Nor reach providers beyond the creating key's.
    if let crate::identity::Credential::ApiKey { providers: Some(own), .. } = &principal.credential
        && scopes.iter().any(|s| s == CONNECTIONS_USE)
        && body.providers.as_ref().is_none_or(|p| p.iter().any(|p| !own.contains(p)))
    {
        return Err(ApiError::Forbidden("A key cannot reach providers its creator's key may not.".to_owned()));
    }
    let providers = body.providers.as_ref().map(|p| {
        let mut p = p.clone();
        p.sort();
        p.dedup();
        p.join(" ")
    });

    let prefix: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let key = format!("{API_KEY_PREFIX}{prefix}_{}", random_secret());
    let now = now_ms();
    let row = ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: principal.user_id.clone(),
        name: name.to_owned(),
        prefix,
        key_hash: secret_hash(&key),
        scopes: scopes.join(" "),
        created_at: now,
        last_used_at: None,
        expires_at: body.expires_in_days.map(|d| now + i64::from(d) * 86_400_000),
        revoked_at: None,
        providers,
    };
    let mut tx = state.db.begin().await?;
    sql::insert(&mut tx, &row).await?;
    let event = AuditEvent::new(principal.actor(), "api_key.created", Outcome::Success, &context)
        .target(row.id.clone())
        .details(serde_json::json!({ "name": row.name, "scopes": scopes, "providers": body.providers }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, api_key: ApiKeyView::from(&row) })))
}

/// A page of the caller's keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A list cursor: the last key's creation time (ms) and id, `<created_at>.<id>`.
fn parse_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (created_at, id) = cursor.split_once('.')?;
    let created_at: i64 = created_at.parse().ok().filter(|t| *t >= 0)?;
    (!id.is_empty()).then_some((created_at, id))
}

#[utoipa::path(get, path = "/v1/api-keys", tag = "identity", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = ApiKeyList), (status = 422, description = "Invalid cursor or limit")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let mut errors = Vec::new();
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 200"));
    }
    let after = match page.cursor.as_deref().map(parse_cursor) {
        Some(None) => {
            errors.push(FieldError::new("cursor", "is not a cursor from this API"));
            None
        }
        Some(after) => after,
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let rows = sql::list_for_user(&state.db, &principal.user_id, after, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if more { rows.last().map(|k| format!("{}.{}", k.created_at, k.id)) } else { None };
    Ok(Json(ApiKeyList { api_keys: rows.iter().map(ApiKeyView::from).collect(), next_cursor }))
}

#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204, description = "Revoked"), (status = 404)))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    context: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    let Some(prefix) = sql::revoke(&mut tx, &id, &principal.user_id, now_ms()).await? else {
        return Err(ApiError::NotFound);
    };
    let event = AuditEvent::new(principal.actor(), "api_key.revoked", Outcome::Success, &context).target(id.clone());
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    state.cache.invalidate(Namespace::API_KEY, &prefix).await;
    let event = crate::bus::Event {
        user_id: principal.user_id.clone(),
        kind: crate::bus::EventKind::ApiKeyRevoked { key_id: id },
    };
    state.identity.bus().publish(event).await;
    Ok(StatusCode::NO_CONTENT)
}
