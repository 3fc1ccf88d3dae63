//! The post-exchange lookups a template names ([`Lookup`]): a call with the new access token
//! whose answer gives values the connection keeps and later URLs use (Atlassian's cloud id,
//! Mailchimp's data centre, Xero's tenant). Each value is checked by the pattern the lookup
//! declares before it is kept; a lookup that fails fails the connection, with the code of
//! what went wrong (`provider_unavailable`, `invalid_response`, `missing_field`…), so that
//! no connection is stored without the values its calls need.

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

/// Runs `t`'s lookup, if any, with the new access token; the values it provides.
pub async fn run(
    http: &reqwest::Client,
    t: &Template,
    values: &Values,
    access_token: &str,
) -> Result<BTreeMap<String, String>, ConnectError> {
    let Some(lookup) = t.lookup else { return Ok(BTreeMap::new()) };
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
        Lookup::TableauSignin => &[],
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
