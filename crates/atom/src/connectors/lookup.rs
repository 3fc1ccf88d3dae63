//! The post-exchange lookups a template names ([`Lookup`]): a call with the new access token
//! whose answer gives values the connection keeps and later URLs use (Atlassian's cloud id,
//! Mailchimp's data centre, Xero's tenant). Each value is checked by the pattern the lookup
//! declares before it is kept; a lookup that fails fails the connection, with the code of
//! what went wrong (`provider_unavailable`, `invalid_response`, `missing_field`…), so that
//! no connection is stored without the values its calls need.
//!
//! A sign-in ([`Lookup::signs_in`], Tableau's) is the other kind: the submitted credential
//! (a personal access token's name and secret) is exchanged for a session token, which the
//! calls carry, and for values the calls' URLs name (the site id). The vault stores the
//! session as the connection's access token with the credential beside it; when the session
//! ends (its assumed lifetime, or a 401 to the proxy) the refresher signs in again with the
//! stored credential ([`sign_in`]), and disconnecting signs the session out ([`sign_out`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::{ConnectError, ErrorCode};
use super::exchange::transport;
use super::pattern::Pattern;
use super::placeholders::Values;
use super::template::{Lookup, Template};

impl Lookup {
    /// The provider's documented endpoint.
    fn default_url(self) -> Option<&'static str> {
        match self {
            Self::AtlassianAccessibleResources => Some("https://api.atlassian.com/oauth/token/accessible-resources"),
            Self::MailchimpMetadata => Some("https://login.mailchimp.com/oauth2/metadata"),
            Self::XeroConnections => Some("https://api.xero.com/connections"),
            Self::TableauSignin => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::AtlassianAccessibleResources => "accessible-resources lookup",
            Self::MailchimpMetadata => "metadata lookup",
            Self::XeroConnections => "connections lookup",
            Self::TableauSignin => "sign-in",
        }
    }
}

/// Runs `t`'s lookup, if any, with the new access token; the values it provides. A sign-in
/// ([`Lookup::signs_in`]) has no access token to run with: [`sign_in`] is its step.
pub async fn run(
    http: &reqwest::Client,
    t: &Template,
    values: &Values,
    access_token: &str,
) -> Result<BTreeMap<String, String>, ConnectError> {
    let Some(lookup) = t.lookup.filter(|l| !l.signs_in()) else { return Ok(BTreeMap::new()) };
    let url = match (&t.lookup_url, lookup.default_url()) {
        (Some(template), _) => values.substitute(template).ok(),
        (None, Some(url)) => Some(url.to_owned()),
        (None, None) => None,
    }
    .ok_or_else(|| ConnectError::new(ErrorCode::NotConfigured, format!("the {} is not run here", lookup.name())))?;
    // Mailchimp's metadata endpoint takes the token as `OAuth <token>`; the others as Bearer.
    let authorization = match lookup {
        Lookup::MailchimpMetadata => format!("OAuth {access_token}"),
        _ => format!("Bearer {access_token}"),
    };
    let response = http
        .get(&url)
        .header(reqwest::header::AUTHORIZATION, authorization)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(&e, lookup.name()))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| transport(&e, lookup.name()))?;
    read(lookup, status, &body)
}

/// The pure part of [`run`]: the values in a lookup's answer, each checked by its pattern.
pub fn read(lookup: Lookup, status: u16, body: &[u8]) -> Result<BTreeMap<String, String>, ConnectError> {
    let what = lookup.name();
    match status {
        200..=299 => {}
        429 => return Err(ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down")),
        500..=599 => {
            return Err(ConnectError::new(ErrorCode::ProviderUnavailable, format!("the {what} answered {status}")));
        }
        _ => return Err(ConnectError::new(ErrorCode::ProviderError, format!("the {what} answered {status}"))),
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| {
        let kind = if body.trim_ascii_start().starts_with(b"<") { "an HTML page" } else { "a body that is not JSON" };
        ConnectError::new(ErrorCode::InvalidResponse, format!("the {what} answered with {kind}"))
    })?;
    // Where each provided value sits in the answer.
    let pointers: &[(&str, &str)] = match lookup {
        // The sites the grant covers; the first is the connection's.
        Lookup::AtlassianAccessibleResources => &[("cloud_id", "/0/id"), ("site_url", "/0/url")],
        Lookup::MailchimpMetadata => &[("dc", "/dc"), ("api_endpoint", "/api_endpoint")],
        Lookup::XeroConnections => &[("tenant_id", "/0/tenantId")],
        Lookup::TableauSignin => &[("site_id", "/credentials/site/id"), ("user_id", "/credentials/user/id")],
    };
    let mut found = BTreeMap::new();
    for (name, pattern, _) in lookup.provides() {
        let Some((_, pointer)) = pointers.iter().find(|(n, _)| n == name) else { continue };
        let value =
            json.pointer(pointer).and_then(Value::as_str).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConnectError::new(ErrorCode::MissingField, format!("the {what}'s answer has no {name}"))
            })?;
        let pattern =
            Pattern::new(pattern).map_err(|_| ConnectError::new(ErrorCode::NotConfigured, "a lookup pattern"))?;
        if !pattern.is_match(value) {
            return Err(ConnectError::new(
                ErrorCode::InvalidResponse,
                format!("the {what}'s {name} does not have the expected form"),
            ));
        }
        found.insert((*name).to_owned(), value.to_owned());
    }
    Ok(found)
}

/// How long a Tableau session is assumed to last: its credentials token ends after 240
/// minutes by default (Tableau Server's `wgserver.session.idle_limit`); the vault signs in
/// again before then, or when a call is refused sooner.
const TABLEAU_SESSION_SECS: i64 = 240 * 60;

/// A sign-in's session: the token the calls carry, its assumed lifetime, the values it gives.
pub struct Session {
    pub token: String,
    pub lifetime_secs: i64,
    pub values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("values", &self.values).finish_non_exhaustive()
    }
}

fn sign_in_url(t: &Template, values: &Values) -> Result<url::Url, ConnectError> {
    t.lookup_url
        .as_deref()
        .and_then(|template| values.substitute(template).ok())
        .and_then(|u| url::Url::parse(&u).ok())
        .ok_or_else(|| ConnectError::new(ErrorCode::NotConfigured, "the template names no sign-in URL"))
}

/// Signs in with the credential in `values` (checked fields and parameters), as `t`'s
/// sign-in lookup says: Tableau's `POST …/auth/signin` with a JSON body. A refused credential
/// is `invalid_credentials`; the rest is read as [`read`] reads a lookup's answer.
pub async fn sign_in(http: &reqwest::Client, t: &Template, values: &Values) -> Result<Session, ConnectError> {
    let Some(lookup) = t.lookup.filter(|l| l.signs_in()) else {
        return Err(ConnectError::new(ErrorCode::NotConfigured, "this provider has no sign-in"));
    };
    let url = sign_in_url(t, values)?;
    let field = |name: &str| {
        values
            .get(name)
            .ok_or_else(|| ConnectError::new(ErrorCode::NotConfigured, format!("no {name} to sign in with")))
    };
    // https://help.tableau.com/current/api/rest_api/en-us/REST/rest_api_concepts_auth.htm
    let body = serde_json::json!({
        "credentials": {
            "personalAccessTokenName": field("pat_name")?,
            "personalAccessTokenSecret": field("pat_secret")?,
            "site": { "contentUrl": values.get("site").unwrap_or("") },
        }
    });
    let response = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|e| transport(&e, lookup.name()))?;
    let status = response.status().as_u16();
    let answer = response.bytes().await.map_err(|e| transport(&e, lookup.name()))?;
    if matches!(status, 401 | 403) {
        return Err(ConnectError::new(ErrorCode::InvalidCredentials, "the provider refused the credential"));
    }
    let found = read(lookup, status, &answer)?;
    let token = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|json| json.pointer("/credentials/token").and_then(Value::as_str).map(str::to_owned))
        .filter(|token| !token.is_empty() && token.len() <= 4096 && !token.chars().any(char::is_control))
        .ok_or_else(|| ConnectError::new(ErrorCode::MissingField, "the sign-in's answer has no token"))?;
    Ok(Session { token, lifetime_secs: TABLEAU_SESSION_SECS, values: found })
}

/// The values a stored connection signs in with: its parameters, checked again by their
/// patterns, and the credential's fields.
pub fn stored_values(
    t: &Template,
    params: &str,
    credentials: &super::vault::Credentials,
) -> Result<Values, ConnectError> {
    let given = super::endpoints::stored_param_list(&t.params, params);
    let mut values = Values::from_params(t, &given)
        .map_err(|_| ConnectError::new(ErrorCode::NotConfigured, "the connection's parameters no longer fit"))?;
    for (name, value) in &credentials.fields {
        values.insert_secret(name, secrecy::SecretString::from(value.clone()));
    }
    Ok(values)
}

/// Ends connection `row`'s session at the provider: Tableau's `POST …/auth/signout` beside
/// the sign-in URL, with the session token. The PAT itself stays the user's to revoke.
pub async fn sign_out(
    connectors: &super::service::Connectors,
    t: &Template,
    row: &crate::storage::connections::ConnectionRow,
) -> Result<(), super::error::ConnectorError> {
    let credentials = super::vault::Credentials::open(&connectors.keyring(), row)?;
    let Some(token) = credentials.access_token.as_deref() else { return Ok(()) };
    let mut url = sign_in_url(t, &stored_values(t, &row.params, &credentials)?)?;
    url.path_segments_mut()
        .map_err(|()| ConnectError::new(ErrorCode::NotConfigured, "the sign-in URL has no path"))?
        .pop()
        .push("signout");
    let response = connectors
        .http()
        .post(url)
        .header("X-Tableau-Auth", token)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(&e, "sign-out"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let code = if status.is_server_error() { ErrorCode::ProviderUnavailable } else { ErrorCode::ProviderError };
    Err(ConnectError::new(code, format!("the sign-out answered {status}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_read_their_values_and_refuse_what_does_not_fit() {
        let atlassian = br#"[{"id":"11223344-a1b2-3b33-c444-def123456789","url":"https://acme.atlassian.net","name":"acme","scopes":["read:jira-work"]}]"#;
        let found = read(Lookup::AtlassianAccessibleResources, 200, atlassian).expect("read");
        assert_eq!(found["cloud_id"], "11223344-a1b2-3b33-c444-def123456789");
        assert_eq!(found["site_url"], "https://acme.atlassian.net");
        let code = |l, s, b: &[u8]| read(l, s, b).expect_err("refused").code;
        assert_eq!(code(Lookup::AtlassianAccessibleResources, 200, b"[]"), ErrorCode::MissingField);
        let evil = br#"[{"id":"11223344-a1b2-3b33-c444-def123456789","url":"https://evil.example.com"}]"#;
        assert_eq!(code(Lookup::AtlassianAccessibleResources, 200, evil), ErrorCode::InvalidResponse);
        let mailchimp = br#"{"dc":"us6","api_endpoint":"https://us6.api.mailchimp.com","accountname":"Acme"}"#;
        assert_eq!(read(Lookup::MailchimpMetadata, 200, mailchimp).expect("read")["dc"], "us6");
        assert_eq!(code(Lookup::MailchimpMetadata, 200, b"<html></html>"), ErrorCode::InvalidResponse);
        assert_eq!(code(Lookup::MailchimpMetadata, 503, b""), ErrorCode::ProviderUnavailable);
        assert_eq!(code(Lookup::MailchimpMetadata, 401, b"{}"), ErrorCode::ProviderError);
    }
}
