//! Pushed authorization requests (RFC 9126): the authorization request's parameters are
//! posted to the server, authenticated as at the token endpoint, and the browser is sent with
//! only `client_id` and the `request_uri` the server answered. Used when the template says
//! `par` or names its endpoint (`par_url`, for a server whose metadata is not read), or the
//! server's metadata says `require_pushed_authorization_requests`; the request never shows
//! its parameters in the browser's address bar.

use secrecy::ExposeSecret;
use serde_json::Value;

use super::error::{ConnectError, ErrorCode, scrub};
use super::exchange::ClientApp;
use super::spec::{OAuth2Spec, TokenAuth};

/// Pushes `params` (the authorization request's, without `client_id`) to `spec.par_url`;
/// the `request_uri` to send the browser with.
pub async fn push(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    app: &ClientApp,
    mut params: Vec<(String, String)>,
) -> Result<String, ConnectError> {
    let url = spec.par_url.as_deref().ok_or_else(|| {
        ConnectError::new(ErrorCode::NotConfigured, "the provider names no pushed authorization request endpoint")
    })?;
    let mut request = client.post(url).header(reqwest::header::ACCEPT, "application/json");
    match spec.token_auth {
        TokenAuth::Basic => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
            let id: String = form_urlencoded::byte_serialize(app.client_id.as_bytes()).collect();
            let secret: String =
                form_urlencoded::byte_serialize(app.client_secret.expose_secret().as_bytes()).collect();
            request = request.basic_auth(id, Some(secret));
            params.push(("client_id".to_owned(), app.client_id.clone()));
        }
        TokenAuth::Post => {
            params.push(("client_id".to_owned(), app.client_id.clone()));
            params.push(("client_secret".to_owned(), app.client_secret.expose_secret().to_owned()));
        }
    }
    let response = request.form(&params).send().await.map_err(|e| {
        let code = if e.is_timeout() { ErrorCode::Timeout } else { ErrorCode::ProviderUnavailable };
        ConnectError::new(code, "the provider's pushed authorization request endpoint could not be reached")
    })?;
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if let Some(error) = json.as_ref().and_then(|j| j.get("error")).and_then(Value::as_str) {
        let description = json.as_ref().and_then(|j| j.get("error_description")).and_then(Value::as_str);
        return Err(ConnectError::new(
            ErrorCode::ProviderError,
            format!("pushed authorization request refused: {} {}", scrub(error), description.unwrap_or("")).trim(),
        ));
    }
    if status.is_server_error() {
        return Err(ConnectError::new(ErrorCode::ProviderUnavailable, format!("the provider answered {status}")));
    }
    // RFC 9126 §2.2: 201 Created with `request_uri` and `expires_in`.
    match json.as_ref().and_then(|j| j.get("request_uri")).and_then(Value::as_str) {
        Some(uri) if status.is_success() && !uri.is_empty() && uri.len() <= 2048 => Ok(uri.to_owned()),
        _ => Err(ConnectError::new(
            ErrorCode::InvalidResponse,
            format!("the pushed authorization request answered {status} without a request_uri"),
        )),
    }
}
