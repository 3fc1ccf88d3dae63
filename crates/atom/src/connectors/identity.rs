//! Who a credential belongs to: the template's identity endpoint called with the credential
//! as the agent's calls carry it (`api.credential`, `api.headers`), or signed with OAuth 1.0a.
//! Its answer labels the connection and gives the provider account's stable id, so that
//! connecting the same account again updates its connection; for a submitted key, it is also
//! the proof that the key works before anything is stored.
//!
//! The answer is checked as the token endpoint's is: 401/403 means the provider refused the
//! credential (`invalid_credentials`), 429, 5xx, a timeout, an HTML page and a missing id each
//! have their code, and nothing of the request (whose URL may hold a key, as Telegram's does)
//! reaches an error's text.

use serde_json::Value;

use super::error::{ConnectError, ErrorCode};
use super::exchange::transport;
use super::oauth1;
use super::placeholders::Values;
use super::template::{CredentialPlacement, HttpMethod, Template};

/// How the identity request is authenticated.
#[derive(Debug, Clone, Copy)]
pub enum CallAuth<'a> {
    /// As `api.credential` says, its placeholders filled from the values (a pasted key).
    Credential,
    /// An OAuth 1.0a signature with the access token (Trello).
    OAuth1(oauth1::Signer<'a>),
}

/// The account the credential belongs to: its stable id and a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub label: String,
}

fn not_configured(what: &str) -> ConnectError {
    ConnectError::new(ErrorCode::NotConfigured, format!("the template's {what} cannot be filled"))
}

/// The identity endpoint's URL, filled: an absolute template, or a path under `api.base_url`.
pub fn identity_url(t: &Template, values: &Values) -> Result<Option<url::Url>, ConnectError> {
    let Some(identity) = &t.identity else { return Ok(None) };
    let filled = values.substitute(&identity.url).map_err(|_| not_configured("identity.url"))?;
    let full = if filled.starts_with("https://") || filled.starts_with("http://") {
        filled
    } else {
        let base = values.substitute(&t.api.base_url).map_err(|_| not_configured("api.base_url"))?;
        format!("{}/{}", base.trim_end_matches('/'), filled.trim_start_matches('/'))
    };
    url::Url::parse(&full).map(Some).map_err(|_| not_configured("identity.url"))
}

/// Calls the template's identity endpoint; `None` when the template has none.
pub async fn identify(
    http: &reqwest::Client,
    t: &Template,
    values: &Values,
    auth: CallAuth<'_>,
) -> Result<Option<Account>, ConnectError> {
    let Some(identity) = &t.identity else { return Ok(None) };
    let Some(mut url) = identity_url(t, values)? else { return Ok(None) };
    let method = match identity.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let mut headers = Vec::new();
    for (name, value) in &t.api.headers {
        headers.push((name.clone(), values.substitute(value).map_err(|_| not_configured("api.headers"))?));
    }
    let fill = |template: &Option<String>, fallback: &str, what: &str| {
        values.substitute(template.as_deref().unwrap_or(fallback)).map_err(|_| not_configured(what))
    };
    let mut basic = None;
    match auth {
        CallAuth::OAuth1(signer) => {
            let nonce = crate::identity::random_secret();
            let timestamp = u64::try_from(crate::storage::now_ms() / 1000).unwrap_or_default();
            let header = oauth1::authorization_header(method.as_str(), &url, &[], &signer, &[], &nonce, timestamp);
            headers.push(("Authorization".to_owned(), header));
        }
        CallAuth::Credential => {
            let c = &t.api.credential;
            match c.placement {
                CredentialPlacement::Bearer => {
                    let token = fill(&c.value, "{access_token}", "api.credential.value")?;
                    headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
                }
                CredentialPlacement::Header => {
                    let name = c.name.clone().ok_or_else(|| not_configured("api.credential.name"))?;
                    headers.push((name, fill(&c.value, "{access_token}", "api.credential.value")?));
                }
                CredentialPlacement::Query => {
                    let name = c.name.clone().ok_or_else(|| not_configured("api.credential.name"))?;
                    let value = fill(&c.value, "{access_token}", "api.credential.value")?;
                    url.query_pairs_mut().append_pair(&name, &value);
                }
                CredentialPlacement::Basic => {
                    let user = fill(&c.username, "", "api.credential.username")?;
                    let password = fill(&c.password, "", "api.credential.password")?;
                    basic = Some((user, password));
                }
                // In the URL already.
                CredentialPlacement::Url => {}
                CredentialPlacement::Oauth1 => return Err(not_configured("api.credential")),
            }
        }
    }
    let mut request = http.request(method, url);
    // The template's own Accept (GitHub's `application/vnd.github+json`) replaces the default.
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("accept")) {
        request = request.header(reqwest::header::ACCEPT, "application/json");
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().await.map_err(|e| transport(&e, "identity endpoint"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(&e, "identity endpoint"))?;
    read_identity(t, status.as_u16(), &body).map(Some)
}

/// The pure part of [`identify`]: the account in an identity answer, or what the answer means.
pub fn read_identity(t: &Template, status: u16, body: &[u8]) -> Result<Account, ConnectError> {
    let Some(identity) = &t.identity else {
        return Err(ConnectError::new(ErrorCode::NotConfigured, "the template has no identity endpoint"));
    };
    match status {
        200..=299 => {}
        401 | 403 => {
            return Err(ConnectError::new(
                ErrorCode::InvalidCredentials,
                format!("the provider refused the credential ({status})"),
            ));
        }
        429 => return Err(ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down")),
        500..=599 => {
            return Err(ConnectError::new(ErrorCode::ProviderUnavailable, format!("the provider answered {status}")));
        }
        _ => {
            return Err(ConnectError::new(
                ErrorCode::ProviderError,
                format!("the identity endpoint answered {status}"),
            ));
        }
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        let what = if body.trim_ascii_start().starts_with(b"<") { "an HTML page" } else { "a body that is not JSON" };
        ConnectError::new(ErrorCode::InvalidResponse, format!("the identity endpoint answered with {what}"))
    })?;
    let text = |pointer: &str| match json.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let id_pointer = identity.account_id.as_deref().unwrap_or(&identity.label);
    let id = text(id_pointer).ok_or_else(|| {
        ConnectError::new(ErrorCode::MissingField, format!("the identity answer has no {id_pointer}"))
    })?;
    let label = text(&identity.label).unwrap_or_else(|| id.clone());
    Ok(Account { id, label: label.chars().filter(|c| !c.is_control()).take(200).collect() })
}
