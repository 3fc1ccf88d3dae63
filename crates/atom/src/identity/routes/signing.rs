//! The JWKS: the public keys that verify access tokens, for anyone.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::cache::Namespace;
use crate::state::AppState;

use crate::identity::signing::{JWKS_KEY, load_jwks};

/// `GET /.well-known/jwks.json`: the public keys that verify our access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity",
    responses((status = 200, description = "JSON Web Key Set (RFC 7517)", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let cached = state.cache.get_or_load(Namespace::JWKS, JWKS_KEY, None, || load_jwks(&state.db)).await;
    let jwks = match cached {
        Ok(Some(jwks)) => jwks,
        // The keys this node holds are a correct answer too: verifiers keep working while
        // the database is unreachable.
        other => {
            if let Err(e) = other {
                tracing::warn!(error = %crate::error::ErrorChain(&e), "JWKS served from this node's keys");
            }
            state.identity.tokens().await.keys().jwks()
        }
    };
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(jwks))
}
