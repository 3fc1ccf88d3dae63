//! `GET /v1/providers` and `GET /v1/providers/{id}`: the catalog as a UI needs it, for any
//! authenticated caller. What to ask the user for (connection parameters, the fields of key
//! and basic services), the default scopes, and whether this instance has its app at the
//! provider, so a UI can tell "connect" from "ask your admin".

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use crate::connectors::template::{AuthMode, Field, Param, Template};
use crate::connectors::{app_configured, callback_url};
use crate::error::ApiError;
use crate::http::Json;
use crate::identity::Principal;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/providers", get(list)).route("/v1/providers/{id}", get(show))
}

/// One provider as a UI shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub auth_mode: AuthMode,
    /// Scopes requested by default (OAuth 2.0).
    pub scopes: Vec<String>,
    /// What to ask the user before connecting (a shop, a subdomain), each with its pattern.
    pub params: Vec<Param>,
    /// For `api_key` and `basic`: the fields the user submits.
    pub fields: Vec<Field>,
    /// Whether this instance has its OAuth app (client id and secret) at the provider; always
    /// true for `api_key` and `basic`, which need none.
    pub app_configured: bool,
    /// The provider's documentation pages.
    pub docs: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
    /// The redirect URI to register at every provider (`public_url` +
    /// `/v1/connections/callback`); null until `public_url` is configured.
    pub callback_url: Option<String>,
}

fn view(state: &AppState, t: &Template) -> ProviderView {
    ProviderView {
        id: t.id.clone(),
        name: t.name.clone(),
        auth_mode: t.auth_mode,
        scopes: t.oauth2.as_ref().map(|o| o.scopes.clone()).unwrap_or_default(),
        params: t.params.clone(),
        fields: t.fields.clone(),
        app_configured: !t.auth_mode.needs_app() || app_configured(&state.config.connectors, &t.id),
        docs: t.docs.clone(),
    }
}

#[utoipa::path(get, path = "/v1/providers", tag = "connectors", security(("bearer" = [])),
    responses((status = 200, body = ProviderList), (status = 401, description = "No or invalid credentials")))]
pub async fn list(State(state): State<AppState>, _principal: Principal) -> Json<ProviderList> {
    let providers = state.catalog.iter().map(|t| view(&state, t)).collect();
    Json(ProviderList { providers, callback_url: callback_url(state.config.public_url.as_deref()) })
}

#[utoipa::path(get, path = "/v1/providers/{id}", tag = "connectors", security(("bearer" = [])),
    params(("id" = String, Path, description = "The provider's id, e.g. `slack`")),
    responses((status = 200, body = ProviderView), (status = 401, description = "No or invalid credentials"),
        (status = 404, description = "No such provider")))]
pub async fn show(
    State(state): State<AppState>,
    _principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ProviderView>, ApiError> {
    let template = state.catalog.get(&id).ok_or(ApiError::NotFound)?;
    Ok(Json(view(&state, template)))
}
