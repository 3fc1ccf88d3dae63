//! One connection's endpoints: the provider spec's URL templates filled with the
//! connection's parameters (a Shopify shop, a Microsoft tenant), each checked by its pattern
//! first, and the endpoints an `issuer` publishes in its metadata (RFC 8414, or OpenID Connect
//! discovery).
//!
//! The flows call [`Connectors::endpoints`] at every step (authorization, code exchange,
//! refresh, revocation) with the parameters stored with the authorization or the connection,
//! so a step never reaches another host than the one the user's parameters named.
//!
//! Metadata is fetched with the outbound client (its timeout, no redirects), only over https
//! (plain http only on loopback, for local servers), and believed only when its `issuer` is
//! the one asked for (RFC 8414 §3.3) and every endpoint it names is https too. A document is
//! cached for [`METADATA_TTL`]; a failure is not, so the next flow tries again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::placeholders::Values;
use super::service::Connectors;
use super::spec::OAuth2Spec;
use crate::error::{ApiError, FieldError};

/// How long a fetched metadata document is used before it is fetched again.
pub const METADATA_TTL: Duration = Duration::from_secs(3600);

/// What Atom reads of an authorization server's metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
}

/// The metadata cache: issuer to the document and when it was fetched.
pub type MetadataCache = std::sync::Mutex<std::collections::HashMap<String, (Instant, Arc<Metadata>)>>;

/// Whether `url` may be called: https, or http to a loopback host.
pub fn allowed_url(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else { return false };
    match parsed.scheme() {
        "https" => parsed.host().is_some(),
        "http" => match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

/// The well-known URLs of `issuer`'s metadata, in the order they are tried: RFC 8414 §3.1
/// (the well-known segment before the issuer's path), then OpenID Connect Discovery §4
/// (appended to it).
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let mut urls = Vec::new();
    if let Ok(parsed) = url::Url::parse(trimmed) {
        let path = parsed.path().trim_end_matches('/');
        let origin = parsed.origin().ascii_serialization();
        urls.push(format!("{origin}/.well-known/oauth-authorization-server{path}"));
    }
    urls.push(format!("{trimmed}/.well-known/openid-configuration"));
    urls
}

/// The connection parameters `given` checked against `spec`'s declarations, defaults applied:
/// what is stored with the authorization and the connection. A failing one is a 422 naming
/// `params.<name>`.
pub fn check_params(spec: &OAuth2Spec, given: &BTreeMap<String, String>) -> Result<Values, ApiError> {
    Values::from_param_list(&spec.params, given).map_err(|errors| {
        ApiError::Validation(
            errors.into_iter().map(|e| FieldError::new(format!("params.{}", e.field), e.message)).collect(),
        )
    })
}

/// The connection parameters stored with an authorization or a connection (a JSON object).
/// A connection's object also holds the values kept from its flow (`instance_url`, a lookup's
/// `cloud_id`), which are not parameters: only the spec's parameters are returned.
pub fn stored_params(spec: &OAuth2Spec, json: &str) -> BTreeMap<String, String> {
    stored_param_list(&spec.params, json)
}

/// As [`stored_params`], for a template's parameter declarations alone.
pub fn stored_param_list(params: &[super::template::Param], json: &str) -> BTreeMap<String, String> {
    let all: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    all.into_iter()
        .filter(|(name, _)| params.iter().any(|p| &p.name == name))
        .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
        .collect()
}

fn unfillable(what: &str) -> ConnectError {
    ConnectError::new(ErrorCode::NotConfigured, format!("the provider's {what} cannot be filled for this connection"))
}

impl Connectors {
    /// `issuer`'s metadata, from the cache or fetched.
    pub async fn metadata(&self, issuer: &str) -> Result<Arc<Metadata>, ConnectError> {
        {
            let cache = self.metadata_cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, metadata)) = cache.get(issuer)
                && at.elapsed() < METADATA_TTL
            {
                return Ok(Arc::clone(metadata));
            }
        }
        let metadata = Arc::new(self.fetch_metadata(issuer).await?);
        let mut cache = self.metadata_cache().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(issuer.to_owned(), (Instant::now(), Arc::clone(&metadata)));
        Ok(metadata)
    }

    async fn fetch_metadata(&self, issuer: &str) -> Result<Metadata, ConnectError> {
        if !allowed_url(issuer) {
            return Err(ConnectError::new(
                ErrorCode::NotConfigured,
                "the provider's issuer is not an https URL; its metadata is not fetched",
            ));
        }
        let mut last = ConnectError::new(ErrorCode::ProviderUnavailable, "the provider publishes no metadata");
        for url in metadata_urls(issuer) {
            let response = match self.http().get(&url).header(reqwest::header::ACCEPT, "application/json").send().await
            {
                Ok(r) => r,
                Err(e) => {
                    let code = if e.is_timeout() { ErrorCode::Timeout } else { ErrorCode::ProviderUnavailable };
                    last = ConnectError::new(code, "the provider's metadata could not be fetched");
                    continue;
                }
            };
            if !response.status().is_success() {
                last = ConnectError::new(
                    ErrorCode::ProviderUnavailable,
                    format!("the provider's metadata answered {}", response.status()),
                );
                continue;
            }
            let Ok(metadata) = response.json::<Metadata>().await else {
                last =
                    ConnectError::new(ErrorCode::InvalidResponse, "the provider's metadata is not the JSON expected");
                continue;
            };
            if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                return Err(ConnectError::new(
                    ErrorCode::IssuerMismatch,
                    "the provider's metadata names another issuer (RFC 8414 §3.3)",
                ));
            }
            let endpoints = [
                &metadata.authorization_endpoint,
                &metadata.token_endpoint,
                &metadata.revocation_endpoint,
                &metadata.pushed_authorization_request_endpoint,
            ];
            if endpoints.iter().any(|e| e.as_deref().is_some_and(|u| !allowed_url(u))) {
                return Err(ConnectError::new(
                    ErrorCode::InvalidResponse,
                    "the provider's metadata names an endpoint that is not https",
                ));
            }
            return Ok(metadata);
        }
        Err(last)
    }

    /// `spec` for one connection: its URLs filled with `values` (checked parameters) and the
    /// app's `client_id`, then the issuer's metadata applied when the template has one.
    pub async fn endpoints(
        &self,
        spec: &OAuth2Spec,
        values: &Values,
        client_id: &str,
    ) -> Result<OAuth2Spec, ConnectorError> {
        let mut resolved = spec.clone();
        let fill = |url: &str, what: &str| values.substitute(url).map_err(|_| unfillable(what));
        resolved.authorization_url = fill(&spec.authorization_url, "authorization URL")?;
        resolved.token_url = fill(&spec.token_url, "token URL")?;
        resolved.revocation_url = spec.revocation_url.as_deref().map(|u| fill(u, "revocation URL")).transpose()?;
        resolved.identity_url = spec.identity_url.as_deref().map(|u| fill(u, "identity URL")).transpose()?;
        resolved.par_url = spec.par_url.as_deref().map(|u| fill(u, "pushed authorization request URL")).transpose()?;
        for value in resolved.authorize_params.values_mut() {
            *value = fill(value, "authorization parameters")?;
        }
        if let Some(revocation) = &mut resolved.provider_revocation {
            let mut with_client = values.clone();
            let client_id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
            with_client.insert_trusted("client_id", client_id);
            revocation.url = with_client.substitute(&revocation.url).map_err(|_| unfillable("revocation URL"))?;
        }
        if let Some(issuer) = &spec.discovery_issuer {
            match self.metadata(issuer).await {
                Ok(metadata) => {
                    if let Some(u) = &metadata.authorization_endpoint {
                        resolved.authorization_url.clone_from(u);
                    }
                    if let Some(u) = &metadata.token_endpoint {
                        resolved.token_url.clone_from(u);
                    }
                    if metadata.revocation_endpoint.is_some() && resolved.provider_revocation.is_none() {
                        resolved.revocation_url.clone_from(&metadata.revocation_endpoint);
                    }
                    // The template's own `par_url` is its author's choice; the metadata's
                    // endpoint serves the others.
                    if resolved.par_url.is_none() {
                        resolved.par_url.clone_from(&metadata.pushed_authorization_request_endpoint);
                    }
                    resolved.par = spec.par || metadata.require_pushed_authorization_requests;
                }
                // The template's own endpoints are the fallback, when it has them.
                Err(e) if !resolved.authorization_url.is_empty() && !resolved.token_url.is_empty() && !spec.par => {
                    tracing::warn!(provider_issuer = %issuer, code = e.code.as_str(),
                        "provider metadata unavailable; using the template's endpoints");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if resolved.par && resolved.par_url.is_none() {
            return Err(ConnectError::new(
                ErrorCode::NotConfigured,
                "the provider requires pushed authorization requests and names no endpoint for them",
            )
            .into());
        }
        for url in [&resolved.authorization_url, &resolved.token_url].into_iter().chain(resolved.par_url.as_ref()) {
            if url::Url::parse(url).is_err() {
                return Err(unfillable("endpoint").into());
            }
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_up_where_the_rfcs_say() {
        assert_eq!(
            metadata_urls("https://login.example.com/tenant/v2"),
            [
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2",
                "https://login.example.com/tenant/v2/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_urls("https://as.example.com/"),
            [
                "https://as.example.com/.well-known/oauth-authorization-server",
                "https://as.example.com/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn only_https_or_loopback_is_fetched() {
        assert!(allowed_url("https://as.example.com"));
        assert!(allowed_url("http://127.0.0.1:8080"));
        assert!(allowed_url("http://[::1]:8080/x"));
        assert!(allowed_url("http://localhost:3000"));
        assert!(!allowed_url("http://as.example.com"));
        assert!(!allowed_url("http://10.0.0.1"));
        assert!(!allowed_url("ftp://as.example.com"));
        assert!(!allowed_url("not a url"));
    }
}
