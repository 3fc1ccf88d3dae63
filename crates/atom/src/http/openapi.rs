//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is committed
//! at `docs/openapi.json`; a test fails when the two drift apart.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::error::{FieldError, Problem};
use crate::identity;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Atom Core", description = "The backend of the Atom conversational agent."),
    paths(
        super::health::health, super::health::ready, super::health::status, super::health::metrics,
        identity::routes::signing::jwks,
        identity::routes::accounts::register, identity::routes::signin::login, identity::routes::signin::refresh,
        identity::routes::signin::logout, identity::routes::accounts::me, identity::routes::accounts::change_password,
        identity::routes::accounts::delete_me, identity::routes::admin::admin_delete_user,
        identity::routes::admin::admin_list_users, identity::routes::admin::admin_disable,
        identity::routes::admin::admin_enable, identity::routes::admin::admin_invite,
        identity::routes::api_keys::create, identity::routes::api_keys::list, identity::routes::api_keys::revoke,
        crate::audit::routes::list,
        crate::conversations::routes::create, crate::conversations::routes::list, crate::conversations::routes::read,
        crate::conversations::routes::add_member, crate::conversations::routes::remove_member,
        crate::conversations::routes::messages, crate::conversations::routes::send,
        crate::realtime::routes::admin_list_connections, crate::realtime::routes::admin_disconnect_all,
        crate::realtime::routes::admin_disconnect_one,
        crate::connectors::connection_routes::set_app, crate::connectors::connection_routes::get_app, crate::connectors::connection_routes::delete_app,
        crate::connectors::connection_routes::authorize, crate::connectors::connection_routes::callback, crate::connectors::connection_routes::list,
        crate::connectors::connection_routes::get_one, crate::connectors::connection_routes::disconnect, crate::connectors::connection_routes::refresh,
        crate::connectors::connection_routes::submit,
        crate::connectors::routes::list, crate::connectors::routes::show,
        crate::connectors::agent_routes::token, crate::connectors::agent_routes::proxy,
        crate::connectors::agent_routes::proxy_base, crate::connectors::agent_routes::proxy_base_slash,
        crate::connectors::webhook_routes::receive, crate::connectors::webhook_routes::receive_for_connection,
        crate::connectors::webhook_routes::list_events,
        crate::connectors::admin_routes::list, crate::connectors::admin_routes::stats,
        crate::connectors::admin_routes::history, crate::connectors::admin_routes::refresh,
        crate::connectors::admin_routes::revoke,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Health, readiness, status and metrics"),
        (name = "identity", description = "Accounts, sessions and API keys"),
        (name = "admin", description = "Administration (admin role)"),
        (name = "connectors", description = "The provider catalog, connections to outside services and the instance's OAuth apps"),
        (name = "conversations", description = "Conversations, members and messages (members only)"),
        (name = "webhooks", description = "Verified incoming webhooks from the providers, and the events each user received"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme: an access token or an API key.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT access token or atom_sk_ API key")
                    .build(),
            ),
        );
    }
}

/// The document as served and as committed: pretty JSON with a trailing newline.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut text = doc.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

pub async fn serve() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.get_or_init(document).as_str())
}
