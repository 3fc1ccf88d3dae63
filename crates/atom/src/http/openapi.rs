//! The OpenAPI 3.1 document, generated from the handlers' annotations. A copy is committed
//! at `docs/openapi.json`; a test fails when the two drift apart.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::error::{FieldError, Problem};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Atom Core", description = "The backend of the Atom conversational agent."),
    paths(super::health::health, super::health::ready, super::health::status, super::health::metrics),
    components(schemas(Problem, FieldError)),
    tags((name = "operations", description = "Health, readiness, status and metrics"))
)]
pub struct ApiDoc;

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
