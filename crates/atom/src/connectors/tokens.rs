//! The OAuth 2.0 code exchange read through the provider's template: the request built by
//! [`super::requests`] (client authentication, body encoding, extra parameters) and the
//! answer read by [`super::oauth2`] (the tokens at the template's pointers, such as Slack's
//! `authed_user.access_token`, its expiry rules, the values it keeps such as Salesforce's
//! `instance_url`, each checked by its pattern).
//!
//! The answer is checked as [`super::exchange`] checks it, with the same codes: 429 is
//! `rate_limited`, an OAuth error (at the template's error pointer) maps to `invalid_grant`,
//! `access_denied` or `provider_error`, a 5xx is `provider_unavailable`, an HTML page or
//! other non-JSON body is `invalid_response`, a missing token or kept value is
//! `missing_field`.

use secrecy::ExposeSecret;
use serde_json::Value;

use super::error::{ConnectError, ErrorCode, scrub};
use super::exchange::transport;
use super::oauth2::{self, FlowError, TokenSet};
use super::requests::PreparedRequest;
use super::template::{HttpMethod, Template};

/// Sends a prepared request; status, `Retry-After` seconds, content type and body.
pub async fn send(
    http: &reqwest::Client,
    request: &PreparedRequest,
    what: &str,
) -> Result<(u16, Option<u64>, Option<String>, Vec<u8>), ConnectError> {
    let method = match request.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut builder = http.request(method, request.url.clone()).header(reqwest::header::ACCEPT, "application/json");
    if let Some((id, secret)) = &request.basic {
        // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
        let id: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
        let secret: String = form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect();
        builder = builder.basic_auth(id, Some(secret));
    }
    if let Some(token) = &request.bearer {
        builder = builder.bearer_auth(token.expose_secret());
    }
    if let Some((content_type, body)) = request.body() {
        builder = builder.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
    }
    let response = builder.send().await.map_err(|e| transport(&e, what))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.map_err(|e| transport(&e, what))?.to_vec();
    Ok((status, retry_after, content_type, body))
}

/// A token endpoint's answer to the code exchange, as `t` reads it.
pub fn read(
    t: &Template,
    status: u16,
    retry_after: Option<u64>,
    content_type: Option<&str>,
    body: &[u8],
    now: time::OffsetDateTime,
) -> Result<TokenSet, ConnectError> {
    read_answer(t, status, retry_after, content_type, body, now, false)
}

/// [`read`], for the code exchange or (`refresh`) a refresh, whose tokens may sit elsewhere
/// (`oauth2.refresh_response`) and which need not carry the kept values again.
fn read_answer(
    t: &Template,
    status: u16,
    retry_after: Option<u64>,
    content_type: Option<&str>,
    body: &[u8],
    now: time::OffsetDateTime,
    refresh: bool,
) -> Result<TokenSet, ConnectError> {
    if status == 429 {
        let mut e = ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down");
        e.retry_after_secs = retry_after;
        return Err(e);
    }
    let json = oauth2::token_body_json(content_type, body).ok();
    let error_pointer = t.oauth2.as_ref().map_or("/error", |o| o.response.error.as_str());
    if let Some(error) = json.as_ref().and_then(|j| j.pointer(error_pointer)).and_then(Value::as_str) {
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
    let Some(json) = json.filter(|j| j.is_object() && (200..300).contains(&status)) else {
        let what = if body.trim_ascii_start().starts_with(b"<") { "an HTML page" } else { "a body that is not JSON" };
        return Err(ConnectError::new(
            ErrorCode::InvalidResponse,
            format!("the token endpoint answered {status} with {what} where JSON was expected"),
        ));
    };
    let parsed = if refresh {
        oauth2::parse_refresh_response(t, &json, now)
    } else {
        oauth2::parse_token_response(t, &json, now)
    };
    parsed.map_err(|e| match e {
        FlowError::Missing(name) => {
            ConnectError::new(ErrorCode::MissingField, format!("the token response has no valid {name}"))
        }
        FlowError::Provider { error, description } => ConnectError::new(
            ErrorCode::ProviderError,
            format!("{} {}", scrub(&error), description.unwrap_or_default()).trim(),
        ),
        other => ConnectError::new(ErrorCode::NotConfigured, other.to_string()),
    })
}

/// What a code exchange brings, whichever way it was read.
pub struct Exchanged {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: Option<String>,
    /// Milliseconds since the epoch; none for a token that does not expire.
    pub expires_at: Option<i64>,
    /// The granted scopes when the answer says them.
    pub scopes: Option<Vec<String>>,
    /// The provider account: its stable id and a label, when the template has an identity endpoint.
    pub account: Option<super::identity::Account>,
    /// The connection parameters, the values kept from the callback and the token response,
    /// and the lookup's: shown with the connection, not secret.
    pub kept: serde_json::Map<String, Value>,
}

impl std::fmt::Debug for Exchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchanged")
            .field("expires_at", &self.expires_at)
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

/// The callback's side of a template-driven exchange.
#[derive(Debug, Clone, Copy)]
pub struct CodeGrant<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub pkce_verifier: Option<&'a str>,
    /// Every query parameter of the callback, for the values the template keeps from it.
    pub callback_query: &'a std::collections::BTreeMap<String, String>,
    /// The connection parameters given when the flow started.
    pub params: &'a std::collections::BTreeMap<String, String>,
    /// The token endpoint discovered from the template's issuer, used instead of its URL.
    pub token_endpoint: Option<&'a str>,
}

fn missing(what: &str, name: &str) -> ConnectError {
    ConnectError::new(ErrorCode::MissingField, format!("the {what} has no valid {name}"))
}

/// The code exchange of template `t`, then its lookup and its identity call: everything the
/// connection stores. Nothing is stored here.
pub async fn exchange_code(
    http: &reqwest::Client,
    t: &Template,
    client: &super::requests::ClientCredentials<'_>,
    grant: &CodeGrant<'_>,
) -> Result<Exchanged, ConnectError> {
    use super::placeholders::Values;
    let not_configured = |e: &dyn std::fmt::Display| ConnectError::new(ErrorCode::NotConfigured, e.to_string());
    let mut values = Values::from_params(t, grant.params).map_err(|errors| {
        let names: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        ConnectError::new(
            ErrorCode::InvalidCallback,
            format!("the connection parameters do not fit: {}", names.join(", ")),
        )
    })?;
    let mut kept = serde_json::Map::new();
    for p in &t.params {
        if let Some(v) = values.get(&p.name) {
            kept.insert(p.name.clone(), Value::from(v));
        }
    }
    let from_callback = oauth2::callback_values(t, grant.callback_query).map_err(|e| match e {
        FlowError::Missing(name) => missing("callback", &name),
        other => not_configured(&other),
    })?;
    for (name, value) in from_callback {
        values.insert_trusted(&name, value.clone());
        kept.insert(name, Value::from(value));
    }
    let request = super::requests::code_exchange(
        t,
        &values,
        client,
        grant.code,
        grant.redirect_uri,
        grant.pkce_verifier,
        grant.token_endpoint,
    )
    .map_err(|e| not_configured(&e))?;
    let (status, retry_after, content_type, body) = send(http, &request, "token endpoint").await?;
    let now = time::OffsetDateTime::now_utc();
    let tokens = read(t, status, retry_after, content_type.as_deref(), &body, now)?;
    let token_type = oauth2::token_body_json(content_type.as_deref(), &body)
        .ok()
        .and_then(|j| j.get("token_type").and_then(Value::as_str).map(str::to_owned));
    for (name, value) in &tokens.kept {
        values.insert_trusted(name, value.clone());
        kept.insert(name.clone(), Value::from(value.as_str()));
    }
    let access_token = tokens.access_token.expose_secret().to_owned();
    for (name, value) in super::lookup::run(http, t, &values, &access_token).await? {
        values.insert_trusted(&name, value.clone());
        kept.insert(name, Value::from(value));
    }
    values.insert_secret("access_token", tokens.access_token.clone());
    let account = super::identity::identify(http, t, &values, super::identity::CallAuth::Credential).await?;
    Ok(Exchanged {
        access_token,
        refresh_token: tokens.refresh_token.as_ref().map(|r| r.expose_secret().to_owned()),
        token_type,
        expires_at: tokens
            .expires_at
            .map(|at| i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)),
        scopes: tokens.scopes,
        account,
        kept,
    })
}

/// A refresh (RFC 6749 §6) as template `t` says it: the request built by
/// [`super::requests::refresh`] (at `oauth2.refresh_url`, else the token endpoint, or the
/// discovered `endpoint`), the answer read at the refresh pointers. In the shape the
/// refresher stores.
pub async fn refresh(
    http: &reqwest::Client,
    t: &Template,
    values: &super::placeholders::Values,
    client: &super::requests::ClientCredentials<'_>,
    refresh_token: &str,
    endpoint: Option<&str>,
) -> Result<super::exchange::TokenSet, ConnectError> {
    let secret = secrecy::SecretString::from(refresh_token.to_owned());
    let request = super::requests::refresh(t, values, client, &secret, endpoint)
        .map_err(|e| ConnectError::new(ErrorCode::NotConfigured, e.to_string()))?;
    let (status, retry_after, content_type, body) = send(http, &request, "token endpoint").await?;
    let now = time::OffsetDateTime::now_utc();
    let tokens = read_answer(t, status, retry_after, content_type.as_deref(), &body, now, true)?;
    let token_type = oauth2::token_body_json(content_type.as_deref(), &body)
        .ok()
        .and_then(|j| j.get("token_type").and_then(Value::as_str).map(str::to_owned));
    Ok(super::exchange::TokenSet {
        access_token: tokens.access_token.expose_secret().to_owned(),
        refresh_token: tokens.refresh_token.as_ref().map(|r| r.expose_secret().to_owned()),
        token_type,
        expires_in: tokens.expires_at.map(|at| (at - now).whole_seconds()),
        scope: tokens.scopes.map(|s| s.join(" ")),
        raw: serde_json::Map::new(),
        kept: tokens.kept,
    })
}
