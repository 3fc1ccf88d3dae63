//! The client side of OAuth 2.0 against one provider: the code exchange (RFC 6749 §4.1.3,
//! with the PKCE verifier of RFC 7636), the refresh (§6), revocation (RFC 7009) and the
//! identity lookup that labels a connection.
//!
//! Every answer is checked before it is believed: a status that is not 2xx becomes the
//! OAuth error it carries (or `provider_unavailable`, `rate_limited`), a body that is not a
//! JSON object becomes `invalid_response` (an HTML login page is the usual one), a missing
//! `access_token` becomes `missing_field`, a request that takes longer than the client's
//! timeout becomes `timeout`. Nothing of a body is quoted except through [`scrub`].

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::error::{ConnectError, ErrorCode, scrub};
use super::spec::{OAuth2Spec, TokenAuth};

/// The outbound client: rustls, no redirects (a token endpoint that redirects is refused, never
/// followed with the credentials), a timeout on every request.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("atom/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The app the instance is registered as at the provider.
#[derive(Clone)]
pub struct ClientApp {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for ClientApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientApp").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// A token endpoint's successful answer.
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: Option<String>,
    pub expires_in: Option<i64>,
    /// The granted scopes when the provider says them (§5.1: absent means as requested).
    pub scope: Option<String>,
    /// The whole answer, for values a template keeps (an instance URL).
    pub raw: serde_json::Map<String, Value>,
    /// The template's kept values the answer carried, each checked by its pattern (a
    /// Salesforce `instance_url` that moved): stored again with the new tokens.
    pub kept: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet").field("expires_in", &self.expires_in).field("scope", &self.scope).finish()
    }
}

/// Maps a transport failure to its code; the error's text (which may hold the URL) is not kept.
pub(super) fn transport(e: &reqwest::Error, what: &str) -> ConnectError {
    if e.is_timeout() {
        ConnectError::new(ErrorCode::Timeout, format!("the provider's {what} did not answer in time"))
    } else {
        ConnectError::new(ErrorCode::ProviderUnavailable, format!("the provider's {what} could not be reached"))
    }
}

/// Reads a token endpoint's answer into a [`TokenSet`] or the error it means.
pub async fn read_token_response(response: reqwest::Response) -> Result<TokenSet, ConnectError> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = response.bytes().await.map_err(|e| transport(&e, "token endpoint"))?;
    parse_token_body(status.as_u16(), retry_after, &body)
}

/// The pure part of [`read_token_response`].
pub fn parse_token_body(status: u16, retry_after: Option<u64>, body: &[u8]) -> Result<TokenSet, ConnectError> {
    let json: Option<serde_json::Map<String, Value>> = serde_json::from_slice(body).ok();
    if status == 429 {
        let mut e = ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down");
        e.retry_after_secs = retry_after;
        return Err(e);
    }
    if let Some(error) = json.as_ref().and_then(|j| j.get("error")).and_then(Value::as_str) {
        let description = json.as_ref().and_then(|j| j.get("error_description")).and_then(Value::as_str).unwrap_or("");
        let code = match error {
            "invalid_grant" => ErrorCode::InvalidGrant,
            "access_denied" => ErrorCode::AccessDenied,
            "temporarily_unavailable" => ErrorCode::ProviderUnavailable,
            _ => ErrorCode::ProviderError,
        };
        return Err(ConnectError::new(code, format!("{} {}", scrub(error), description).trim()));
    }
    if status >= 500 {
        return Err(ConnectError::new(ErrorCode::ProviderUnavailable, format!("the provider answered {status}")));
    }
    let Some(mut json) = json.filter(|_| (200..300).contains(&status)) else {
        let what = if body.trim_ascii_start().starts_with(b"<") { "an HTML page" } else { "a body that is not JSON" };
        return Err(ConnectError::new(
            ErrorCode::InvalidResponse,
            format!("the token endpoint answered {status} with {what} where JSON was expected"),
        ));
    };
    let access_token = match json.remove("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        _ => return Err(ConnectError::new(ErrorCode::MissingField, "the token response has no access_token")),
    };
    let refresh_token = match json.remove("refresh_token") {
        Some(Value::String(token)) if !token.is_empty() => Some(token),
        _ => None,
    };
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let token_type = json.get("token_type").and_then(Value::as_str).map(str::to_owned);
    let scope = json.get("scope").and_then(Value::as_str).map(str::to_owned);
    // Secrets that some providers add (an id_token) are not kept with the raw answer.
    json.remove("id_token");
    Ok(TokenSet { access_token, refresh_token, token_type, expires_in, scope, raw: json, kept: Default::default() })
}

/// Sends a form to the token endpoint, authenticated as the template says.
async fn token_request(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    app: &ClientApp,
    mut form: Vec<(&str, String)>,
) -> Result<TokenSet, ConnectError> {
    let mut request = client.post(&spec.token_url).header(reqwest::header::ACCEPT, "application/json");
    match spec.token_auth {
        TokenAuth::Basic => {
            // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
            let id: String = form_urlencoded::byte_serialize(app.client_id.as_bytes()).collect();
            let secret: String =
                form_urlencoded::byte_serialize(app.client_secret.expose_secret().as_bytes()).collect();
            request = request.basic_auth(id, Some(secret));
        }
        TokenAuth::Post => {
            form.push(("client_id", app.client_id.clone()));
            form.push(("client_secret", app.client_secret.expose_secret().to_owned()));
        }
    }
    let response = request.form(&form).send().await.map_err(|e| transport(&e, "token endpoint"))?;
    read_token_response(response).await
}

/// Exchanges an authorization code (RFC 6749 §4.1.3).
pub async fn exchange_code(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    app: &ClientApp,
    code: &str,
    redirect_uri: &str,
    pkce_verifier: Option<&str>,
) -> Result<TokenSet, ConnectError> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
    ];
    if let Some(verifier) = pkce_verifier {
        form.push(("code_verifier", verifier.to_owned()));
    }
    token_request(client, spec, app, form).await
}

/// Uses a refresh token (RFC 6749 §6).
pub async fn refresh(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    app: &ClientApp,
    refresh_token: &str,
) -> Result<TokenSet, ConnectError> {
    let form = vec![("grant_type", "refresh_token".to_owned()), ("refresh_token", refresh_token.to_owned())];
    token_request(client, spec, app, form).await
}

/// Revokes a token (RFC 7009 §2.1); a 200 is success, whatever the token's state was.
pub async fn revoke(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    app: &ClientApp,
    token: &str,
    hint: &str,
) -> Result<(), ConnectError> {
    let Some(url) = &spec.revocation_url else { return Ok(()) };
    let mut form = vec![("token", token.to_owned()), ("token_type_hint", hint.to_owned())];
    let mut request = client.post(url);
    match spec.token_auth {
        TokenAuth::Basic => {
            let id: String = form_urlencoded::byte_serialize(app.client_id.as_bytes()).collect();
            let secret: String =
                form_urlencoded::byte_serialize(app.client_secret.expose_secret().as_bytes()).collect();
            request = request.basic_auth(id, Some(secret));
        }
        TokenAuth::Post => {
            form.push(("client_id", app.client_id.clone()));
            form.push(("client_secret", app.client_secret.expose_secret().to_owned()));
        }
    }
    let response = request.form(&form).send().await.map_err(|e| transport(&e, "revocation endpoint"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    match parse_token_body(status.as_u16(), None, &body) {
        Err(e) => Err(e),
        Ok(_) => Err(ConnectError::new(ErrorCode::ProviderError, format!("revocation answered {status}"))),
    }
}

/// Revokes a grant through the provider's own call, as its template declares it (GitHub's
/// `DELETE /applications/{client_id}/grant` with HTTP Basic and `{"access_token": …}`,
/// Dropbox's `POST /2/auth/token/revoke` with the token as a bearer, Google's
/// `POST /revoke?token=…`). `revocation.url` is already filled. The token the template names
/// is sent (the access token when the refresh token it prefers is not held); any 2xx is success.
pub async fn revoke_provider(
    client: &reqwest::Client,
    revocation: &super::template::Revocation,
    app: &ClientApp,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
) -> Result<(), ConnectError> {
    use super::template::{ClientAuth, HttpMethod, TokenPlacement, WhichToken};
    let token = match revocation.token {
        WhichToken::Refresh => refresh_token.or(access_token),
        WhichToken::Access => access_token,
    };
    let Some(token) = token else { return Ok(()) };
    let mut url = url::Url::parse(&revocation.url)
        .map_err(|_| ConnectError::new(ErrorCode::NotConfigured, "the template's revocation URL is not a URL"))?;
    let mut body: Vec<(String, String)> = Vec::new();
    let mut bearer = None;
    match revocation.token_in {
        TokenPlacement::Form | TokenPlacement::Json => body.push((revocation.token_field.clone(), token.to_owned())),
        TokenPlacement::Query => {
            url.query_pairs_mut().append_pair(&revocation.token_field, token);
        }
        TokenPlacement::Bearer => bearer = Some(token),
    }
    let mut basic = false;
    match revocation.client_auth {
        ClientAuth::Basic => basic = true,
        ClientAuth::Form | ClientAuth::Json => {
            body.push(("client_id".to_owned(), app.client_id.clone()));
            body.push(("client_secret".to_owned(), app.client_secret.expose_secret().to_owned()));
        }
        ClientAuth::None => {}
    }
    let method = match revocation.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut request = client.request(method, url);
    if basic {
        request = request.basic_auth(&app.client_id, Some(app.client_secret.expose_secret()));
    }
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let json = revocation.token_in == TokenPlacement::Json || revocation.client_auth == ClientAuth::Json;
    if json {
        let map: serde_json::Map<String, Value> = body.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        request = request.json(&Value::Object(map));
    } else if !body.is_empty() {
        request = request.form(&body);
    }
    let response = request.send().await.map_err(|e| transport(&e, "revocation endpoint"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let code = match status.as_u16() {
        429 => ErrorCode::RateLimited,
        500.. => ErrorCode::ProviderUnavailable,
        _ => ErrorCode::ProviderError,
    };
    Err(ConnectError::new(code, format!("revocation answered {status}")))
}

/// Who the token belongs to at the provider: (stable account id, label).
pub async fn identity(
    client: &reqwest::Client,
    spec: &OAuth2Spec,
    access_token: &str,
) -> Result<Option<(String, String)>, ConnectError> {
    let Some(url) = &spec.identity_url else { return Ok(None) };
    let response = client
        .get(url)
        .bearer_auth(access_token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(&e, "identity endpoint"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(&e, "identity endpoint"))?;
    if !status.is_success() {
        let code = if status.is_server_error() { ErrorCode::ProviderUnavailable } else { ErrorCode::ProviderError };
        return Err(ConnectError::new(code, format!("the identity endpoint answered {status}")));
    }
    let json: Value = serde_json::from_slice(&body).map_err(|_| {
        ConnectError::new(ErrorCode::InvalidResponse, "the identity endpoint answered with something that is not JSON")
    })?;
    let text = |pointer: &str| match json.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let account_id = text(&spec.account_id_pointer).ok_or_else(|| {
        ConnectError::new(ErrorCode::MissingField, format!("the identity answer has no {}", spec.account_id_pointer))
    })?;
    let label = text(&spec.label_pointer).unwrap_or_else(|| account_id.clone());
    Ok(Some((account_id, label.chars().filter(|c| !c.is_control()).take(200).collect())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_map_to_their_codes() {
        let code = |status, body: &str| parse_token_body(status, None, body.as_bytes()).err().map(|e| e.code);
        assert_eq!(code(400, r#"{"error":"invalid_grant"}"#), Some(ErrorCode::InvalidGrant));
        assert_eq!(code(200, "<html><body>login</body></html>"), Some(ErrorCode::InvalidResponse));
        assert_eq!(code(200, r#"{"token_type":"Bearer"}"#), Some(ErrorCode::MissingField));
        assert_eq!(code(502, "<html>Bad Gateway</html>"), Some(ErrorCode::ProviderUnavailable));
        assert_eq!(code(429, "{}"), Some(ErrorCode::RateLimited));
        assert_eq!(code(400, r#"{"error":"unsupported_grant_type"}"#), Some(ErrorCode::ProviderError));
        let ok = parse_token_body(200, None, br#"{"access_token":"a","expires_in":"60","id_token":"x"}"#).expect("ok");
        assert_eq!((ok.access_token.as_str(), ok.expires_in), ("a", Some(60)));
        assert!(!ok.raw.contains_key("id_token"));
    }
}
