//! Identity's HTTP handlers, above its domain code: they extract, call the domain, answer.
//! [`router`] mounts them: the public ones, and the protected ones behind
//! [`auth::authenticate`].

pub mod accounts;
pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod signin;
pub mod signing;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::state::AppState;

/// Identity routes: the public ones, and the protected ones (with `protected_extra`, routes
/// other modules or an embedder add) behind [`auth::authenticate`] and the per-principal
/// rate limit.
pub fn router(state: &AppState, protected_extra: Router<AppState>) -> Router<AppState> {
    let public = Router::new()
        .route("/v1/auth/register", post(accounts::register))
        .route("/v1/auth/login", post(signin::login))
        .route("/v1/auth/refresh", post(signin::refresh))
        .route("/v1/auth/logout", post(signin::logout))
        .route("/.well-known/jwks.json", get(signing::jwks));
    let protected = Router::new()
        .route("/v1/me", get(accounts::me).delete(accounts::delete_me))
        .route("/v1/me/password", post(accounts::change_password))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route("/v1/admin/users", get(admin::admin_list_users))
        .route("/v1/admin/users/{id}", delete(admin::admin_delete_user))
        .route("/v1/admin/users/{id}/disable", post(admin::admin_disable))
        .route("/v1/admin/users/{id}/enable", post(admin::admin_enable))
        .route("/v1/admin/invites", post(admin::admin_invite))
        .merge(protected_extra)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    public.merge(protected)
}
