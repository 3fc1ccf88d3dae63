//! The template-driven requests of an OAuth 2.0 connection: the code exchange, the refresh,
//! the client credentials grant and the revocation, built as data the flows send as they are.
//! Here, and only here, `client_auth`, `token_body`, the extra parameters and the revocation
//! style take their meaning, so every flow reads a template the same way.
//!
//! A [`PreparedRequest`] holds the client secret, codes and tokens; its `Debug` shows the
//! parameter names only.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::oauth2::FlowError;
use super::placeholders::{ValueError, Values};
use super::template::{
    BodyFormat, ClientAuth, HttpMethod, OAuth2, RevocationStyle, Template, TokenPlacement, WhichToken,
};

/// The instance's app at the provider.
#[derive(Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub id: &'a str,
    pub secret: &'a SecretString,
}

impl fmt::Debug for ClientCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials").field("id", &self.id).finish_non_exhaustive()
    }
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `application/json`, an object of string values.
    Json,
}

/// A request ready to send.
#[derive(Clone)]
pub struct PreparedRequest {
    pub method: HttpMethod,
    pub url: url::Url,
    /// `Authorization: Basic` of these, when the client authenticates that way.
    pub basic: Option<(String, SecretString)>,
    /// `Authorization: Bearer` of this (revocations that take the token so).
    pub bearer: Option<SecretString>,
    /// The body's parameters, in order; none for a request without a body.
    pub params: Vec<(String, SecretString)>,
    pub encoding: Encoding,
}

impl PreparedRequest {
    /// The value of body parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.expose_secret())
    }

    /// The body as bytes with its content type, or `None` when there are no parameters.
    pub fn body(&self) -> Option<(&'static str, Vec<u8>)> {
        if self.params.is_empty() {
            return None;
        }
        Some(match self.encoding {
            Encoding::Form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (k, v) in &self.params {
                    form.append_pair(k, v.expose_secret());
                }
                ("application/x-www-form-urlencoded", form.finish().into_bytes())
            }
            Encoding::Json => {
                let map: serde_json::Map<String, serde_json::Value> = self
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.expose_secret().to_owned())))
                    .collect();
                ("application/json", serde_json::Value::Object(map).to_string().into_bytes())
            }
        })
    }
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("basic", &self.basic.as_ref().map(|(user, _)| user))
            .field("bearer", &self.bearer.is_some())
            .field("params", &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("encoding", &self.encoding)
            .finish()
    }
}

fn oauth2(t: &Template) -> Result<&OAuth2, FlowError> {
    t.oauth2.as_ref().ok_or_else(|| FlowError::Unsupported(t.id.clone()))
}

fn parse(url: &str, field: &'static str) -> Result<url::Url, FlowError> {
    url::Url::parse(url).map_err(|_| FlowError::BadUrl(field))
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

/// A token endpoint request: the grant's parameters, the template's extra ones, and the
/// client's authentication as the template says.
fn token_endpoint(
    o: &OAuth2,
    url: url::Url,
    client: &ClientCredentials<'_>,
    mut params: Vec<(String, SecretString)>,
) -> PreparedRequest {
    let mut basic = None;
    match o.client_auth {
        ClientAuth::Basic => basic = Some((client.id.to_owned(), client.secret.clone())),
        ClientAuth::Form | ClientAuth::Json => {
            params.push(("client_id".into(), secret(client.id)));
            params.push(("client_secret".into(), client.secret.clone()));
        }
        ClientAuth::None => params.push(("client_id".into(), secret(client.id))),
    }
    let json = o.client_auth == ClientAuth::Json || o.token_body == BodyFormat::Json;
    PreparedRequest {
        method: HttpMethod::Post,
        url,
        basic,
        bearer: None,
        params,
        encoding: if json { Encoding::Json } else { Encoding::Form },
    }
}

fn extra(
    values: &Values,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, SecretString)>, ValueError> {
    params.iter().map(|(k, v)| Ok((k.clone(), SecretString::from(values.substitute(v)?)))).collect()
}

/// The code exchange. `values` holds the connection's parameters and the callback's kept
/// values; `endpoint` is the token endpoint discovered from `oauth2.issuer`, if any.
pub fn code_exchange(
    t: &Template,
    values: &Values,
    client: &ClientCredentials<'_>,
    code: &str,
    redirect_uri: &str,
    code_verifier: Option<&str>,
    endpoint: Option<&str>,
) -> Result<PreparedRequest, FlowError> {
    let o = oauth2(t)?;
    let url = match (endpoint, &o.token_url) {
        (Some(e), _) => e.to_owned(),
        (None, Some(template)) => values.substitute(template)?,
        (None, None) => return Err(FlowError::Unsupported(t.id.clone())),
    };
    let mut params = vec![
        ("grant_type".to_owned(), secret("authorization_code")),
        ("code".to_owned(), secret(code)),
        ("redirect_uri".to_owned(), secret(redirect_uri)),
    ];
    if o.pkce {
        params.push(("code_verifier".into(), secret(code_verifier.ok_or(FlowError::MissingPkce)?)));
    }
    params.extend(extra(values, &o.token_params)?);
    Ok(token_endpoint(o, parse(&url, "oauth2.token_url")?, client, params))
}

/// A refresh, at `oauth2.refresh_url` or else the token endpoint.
pub fn refresh(
    t: &Template,
    values: &Values,
    client: &ClientCredentials<'_>,
    refresh_token: &SecretString,
    endpoint: Option<&str>,
) -> Result<PreparedRequest, FlowError> {
    let o = oauth2(t)?;
    let url = match (&o.refresh_url, endpoint, &o.token_url) {
        (Some(template), _, _) => values.substitute(template)?,
        (None, Some(e), _) => e.to_owned(),
        (None, None, Some(template)) => values.substitute(template)?,
        (None, None, None) => return Err(FlowError::Unsupported(t.id.clone())),
    };
    let mut params =
        vec![("grant_type".to_owned(), secret("refresh_token")), ("refresh_token".to_owned(), refresh_token.clone())];
    params.extend(extra(values, &o.refresh_params)?);
    let field = if o.refresh_url.is_some() { "oauth2.refresh_url" } else { "oauth2.token_url" };
    Ok(token_endpoint(o, parse(&url, field)?, client, params))
}

/// The client credentials grant, with the template's scopes and `extra_scopes`.
pub fn client_credentials(
    t: &Template,
    values: &Values,
    client: &ClientCredentials<'_>,
    extra_scopes: &[String],
    endpoint: Option<&str>,
) -> Result<PreparedRequest, FlowError> {
    let o = oauth2(t)?;
    let url = match (endpoint, &o.token_url) {
        (Some(e), _) => e.to_owned(),
        (None, Some(template)) => values.substitute(template)?,
        (None, None) => return Err(FlowError::Unsupported(t.id.clone())),
    };
    let mut scopes: Vec<&str> = o.scopes.iter().map(String::as_str).collect();
    scopes.extend(extra_scopes.iter().map(String::as_str).filter(|s| !o.scopes.iter().any(|d| d == s)));
    let mut params = vec![("grant_type".to_owned(), secret("client_credentials"))];
    if !scopes.is_empty() {
        params.push(("scope".into(), secret(&scopes.join(&o.scope_separator))));
    }
    params.extend(extra(values, &o.token_params)?);
    Ok(token_endpoint(o, parse(&url, "oauth2.token_url")?, client, params))
}

/// The revocation of a connection's grant, or `None` when the template declares none (or the
/// token it revokes is not held). `values` holds every kept value; `{client_id}` is filled here.
pub fn revocation(
    t: &Template,
    values: &Values,
    client: &ClientCredentials<'_>,
    access_token: &SecretString,
    refresh_token: Option<&SecretString>,
) -> Result<Option<PreparedRequest>, FlowError> {
    let o = oauth2(t)?;
    let Some(r) = &o.revocation else { return Ok(None) };
    let (token, hint) = match (r.token, refresh_token) {
        (WhichToken::Refresh, Some(rt)) => (rt.clone(), "refresh_token"),
        (WhichToken::Refresh, None) | (WhichToken::Access, _) => (access_token.clone(), "access_token"),
    };
    let mut values = values.clone();
    values.insert_trusted("client_id", client.id);
    let mut url = parse(&values.substitute(&r.url)?, "oauth2.revocation.url")?;
    let mut params = Vec::new();
    let mut bearer = None;
    match r.token_in {
        TokenPlacement::Form | TokenPlacement::Json => params.push((r.token_field.clone(), token)),
        TokenPlacement::Query => {
            url.query_pairs_mut().append_pair(&r.token_field, token.expose_secret());
        }
        TokenPlacement::Bearer => bearer = Some(token),
    }
    if r.style == RevocationStyle::Rfc7009 {
        params.push(("token_type_hint".into(), secret(hint)));
    }
    let mut basic = None;
    match r.client_auth {
        ClientAuth::Basic => basic = Some((client.id.to_owned(), client.secret.clone())),
        ClientAuth::Form | ClientAuth::Json => {
            params.push(("client_id".into(), secret(client.id)));
            params.push(("client_secret".into(), client.secret.clone()));
        }
        ClientAuth::None => {}
    }
    let json = r.token_in == TokenPlacement::Json || r.client_auth == ClientAuth::Json;
    Ok(Some(PreparedRequest {
        method: r.method,
        url,
        basic,
        bearer,
        params,
        encoding: if json { Encoding::Json } else { Encoding::Form },
    }))
}
