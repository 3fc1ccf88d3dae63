//! The template-driven halves of OAuth 2.0 that need no network: the authorization URL, the
//! values kept from the callback, and the token response turned into a [`TokenSet`]. The
//! flows call these around their HTTP exchanges; tests call them for every template.
//!
//! Every function takes [`Values`] that already passed their patterns
//! ([`Values::from_params`]), so what they put into a URL is checked.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::Value;
use time::OffsetDateTime;

use super::placeholders::{ValueError, Values};
use super::template::{AuthMode, Template, TokenResponse};

/// What the flow supplies to build an authorization URL.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizationRequest<'a> {
    pub client_id: &'a str,
    /// `public_url` + `/v1/connections/callback`.
    pub redirect_uri: &'a str,
    pub state: &'a str,
    /// The S256 challenge (RFC 7636 §4.2); required when the template says `pkce`, ignored
    /// otherwise.
    pub pkce_challenge: Option<&'a str>,
    /// Scopes asked for beyond the template's defaults.
    pub extra_scopes: &'a [String],
    /// The endpoint discovered from `oauth2.issuer`, used instead of the template's.
    pub endpoint: Option<&'a str>,
}

/// Why a template-driven step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The template does not support this step (an API-key service has no authorization URL).
    #[error("provider {0} does not support this step")]
    Unsupported(String),
    /// A value failed its pattern or is missing.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// The filled URL does not parse.
    #[error("{0} is not a URL once filled")]
    BadUrl(&'static str),
    /// The template asks for PKCE and no challenge was given.
    #[error("this provider needs a PKCE challenge")]
    MissingPkce,
    /// The provider answered with an error (`error`, `error_description`).
    #[error("the provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider { error: String, description: Option<String> },
    /// The answer lacks a value the template says it carries, or it failed its pattern.
    #[error("the provider's answer lacks a valid {0}")]
    Missing(String),
}

/// The normalized result of a token response.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// `None` when the token does not expire, or the provider said nothing and the template
    /// gives no default lifetime.
    pub expires_at: Option<OffsetDateTime>,
    /// The granted scopes, when the answer says; `None` means "as requested".
    pub scopes: Option<Vec<String>>,
    /// The template's `keep` values found in the answer (`instance_url`, a team id).
    pub kept: BTreeMap<String, String>,
}

/// The URL the user is sent to for consent.
pub fn authorization_url(t: &Template, values: &Values, req: &AuthorizationRequest<'_>) -> Result<url::Url, FlowError> {
    let o = match (&t.oauth2, t.auth_mode) {
        (Some(o), AuthMode::Oauth2AuthorizationCode) => o,
        _ => return Err(FlowError::Unsupported(t.id.clone())),
    };
    let endpoint = match (req.endpoint, &o.authorization_url) {
        (Some(e), _) => e.to_owned(),
        (None, Some(template)) => values.substitute(template)?,
        (None, None) => return Err(FlowError::Unsupported(t.id.clone())),
    };
    let mut url = url::Url::parse(&endpoint).map_err(|_| FlowError::BadUrl("oauth2.authorization_url"))?;
    let mut scopes: Vec<&str> = o.scopes.iter().map(String::as_str).collect();
    for s in req.extra_scopes {
        if !scopes.contains(&s.as_str()) {
            scopes.push(s);
        }
    }
    let extra = o
        .authorization_params
        .iter()
        .map(|(k, v)| Ok((k.as_str(), values.substitute(v)?)))
        .collect::<Result<Vec<_>, ValueError>>()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", req.client_id);
        q.append_pair("redirect_uri", req.redirect_uri);
        if !scopes.is_empty() {
            q.append_pair(&o.scope_param, &scopes.join(&o.scope_separator));
        }
        q.append_pair("state", req.state);
        if o.pkce {
            let challenge = req.pkce_challenge.ok_or(FlowError::MissingPkce)?;
            q.append_pair("code_challenge", challenge);
            q.append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &extra {
            q.append_pair(k, v);
        }
    }
    Ok(url)
}

/// The values the template keeps from the callback's query (QuickBooks' `realmId`), checked
/// by their patterns. A required one that is missing is an error.
pub fn callback_values(t: &Template, query: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, FlowError> {
    let mut kept = BTreeMap::new();
    for k in &t.keep {
        let Some(param) = &k.callback else { continue };
        match query.get(param) {
            Some(v) if k.pattern.as_ref().is_none_or(|p| p.is_match(v)) => {
                kept.insert(k.name.clone(), v.clone());
            }
            Some(_) => return Err(FlowError::Missing(k.name.clone())),
            None if k.required => return Err(FlowError::Missing(k.name.clone())),
            None => {}
        }
    }
    Ok(kept)
}

/// A token endpoint's body as JSON. RFC 6749 says JSON; a few servers answer
/// `application/x-www-form-urlencoded` (GitHub without `Accept: application/json`), whose
/// pairs become a flat object.
pub fn token_body_json(content_type: Option<&str>, body: &[u8]) -> Result<Value, FlowError> {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        return Ok(json);
    }
    let form =
        content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded") || c.starts_with("text/plain"));
    if form {
        let map = form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
        return Ok(Value::Object(map));
    }
    Err(FlowError::Missing("JSON body".into()))
}

/// A token response of the code exchange or the client credentials grant, as the template
/// reads it: tokens at its pointers, expiry by its rules, kept values checked by their
/// patterns. `now` is when the response arrived.
pub fn parse_token_response(t: &Template, json: &Value, now: OffsetDateTime) -> Result<TokenSet, FlowError> {
    let o = t.oauth2.as_ref().ok_or_else(|| FlowError::Unsupported(t.id.clone()))?;
    parse_with(t, &o.response, json, now, true)
}

/// A refresh response: as [`parse_token_response`], at `oauth2.refresh_response`'s pointers
/// when the template has them. Kept values it carries are read (a Salesforce
/// `instance_url` may move), none is required. Apply [`keep_refresh_token`] to the result.
pub fn parse_refresh_response(t: &Template, json: &Value, now: OffsetDateTime) -> Result<TokenSet, FlowError> {
    let o = t.oauth2.as_ref().ok_or_else(|| FlowError::Unsupported(t.id.clone()))?;
    parse_with(t, o.refresh_response.as_ref().unwrap_or(&o.response), json, now, false)
}

fn parse_with(
    t: &Template,
    r: &TokenResponse,
    json: &Value,
    now: OffsetDateTime,
    exchange: bool,
) -> Result<TokenSet, FlowError> {
    let Some(o) = t.oauth2.as_ref() else { return Err(FlowError::Unsupported(t.id.clone())) };
    if let Some(error) = json.pointer(&r.error).filter(|e| !e.is_null() && *e != &Value::Bool(false)) {
        let description = json.get("error_description").and_then(Value::as_str).map(str::to_owned);
        return Err(FlowError::Provider { error: scalar(error).unwrap_or_else(|| error.to_string()), description });
    }
    let text = |pointer: &str| json.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token =
        text(&r.access_token).ok_or_else(|| FlowError::Missing("access_token".into()))?.to_owned().into();
    let refresh_token = text(&r.refresh_token).map(|s| SecretString::from(s.to_owned()));
    let expires_in = json.pointer(&r.expires_in).and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let lifetime = if o.expiry.never { None } else { expires_in.or(o.expiry.default_lifetime_secs) };
    let expires_at = lifetime.map(|secs| now + time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2)));
    let scopes = match json.pointer(&r.scope) {
        Some(Value::String(s)) => {
            Some(s.split(o.scope_separator.as_str()).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        }
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        _ => None,
    };
    let mut kept = BTreeMap::new();
    for k in &t.keep {
        let Some(pointer) = &k.token else { continue };
        match json.pointer(pointer).and_then(scalar) {
            Some(v) if k.pattern.as_ref().is_none_or(|p| p.is_match(&v)) => {
                kept.insert(k.name.clone(), v);
            }
            Some(_) => return Err(FlowError::Missing(k.name.clone())),
            None if k.required && exchange => return Err(FlowError::Missing(k.name.clone())),
            None => {}
        }
    }
    Ok(TokenSet { access_token, refresh_token, expires_at, scopes, kept })
}

/// After a refresh: when the answer carried no refresh token and the template keeps the old
/// one (RFC 6749 §6), the previous token stays.
pub fn keep_refresh_token(t: &Template, refreshed: &mut TokenSet, previous: Option<SecretString>) {
    let keep = t.oauth2.as_ref().is_some_and(|o| o.expiry.keep_refresh_token);
    if refreshed.refresh_token.is_none() && keep {
        refreshed.refresh_token = previous;
    }
}

/// A JSON string, number or boolean as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
