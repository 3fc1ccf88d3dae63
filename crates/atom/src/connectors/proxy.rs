//! The agent's proxy: a call to `/v1/proxy/{connection_id}/{path}` goes to the connection's
//! provider with the credential injected, so that the credential never leaves the server.
//!
//! - The target is the template's `api.base_url`, its placeholders filled with the
//!   connection's parameters and kept values, each checked again by its pattern, then the
//!   caller's path below it ([`super::ssrf::join_path`]) and the caller's query.
//! - The credential goes where the template says: a bearer token, a header, a query
//!   parameter, HTTP Basic, the URL itself, or an OAuth 1.0a signature ([`super::oauth1`]).
//!   Template headers (`Notion-Version`, `xero-tenant-id`) are set too; a caller's header of
//!   the same name is replaced, and the caller's own `Authorization` and cookies never go out.
//! - Bodies stream both ways. The first `connectors.proxy_replay_bytes` of a request body are
//!   held before the call starts: a body that ends within them can be sent again, so a 401
//!   from the provider is answered by one refresh (single-flight, [`super::refresh`]) and one
//!   retry; a longer body streams through as it arrives and a 401 goes back to the caller.
//!   Request bodies are capped at `connectors.proxy_max_body_bytes` as they stream.
//! - Only the provider's response head is waited for (`connectors.proxy_timeout_secs`); the
//!   response body streams back. Hop-by-hop headers and `Set-Cookie` are dropped both ways.
//!   A provider's status passes back as it is: a 3xx is not followed (the client's redirect
//!   policy is `none`), a 429 keeps its `Retry-After`.
//! - A form body to an OAuth 1.0a provider is signed with the rest of the request (RFC 5849
//!   §3.4.1.3.1), so it is held whole before the call, up to
//!   `connectors.proxy_signed_form_max_bytes` (a larger one is `body_too_large`), and never
//!   streamed.
//! - Addresses are checked by [`super::ssrf`] at connect time. Calls are rate-limited per
//!   connection and per caller (API key or user), shared across nodes through Redis when
//!   configured.
//! - Who used the connection goes on its record ([`super::proxy_use`]): the first call of a
//!   caller in a window is audited before it goes out.
//!
//! Metrics: `connector_proxy_requests_total{provider,status}` (the provider's status, or the
//! proxy's own error code) and `connector_proxy_duration_seconds{provider}` (until the
//! provider's response head).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{Stream, StreamExt};
use hyper::body::Bytes;
use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::catalog::Catalog;
use super::oauth1;
use super::pattern::Pattern;
use super::placeholders::Values;
use super::proxy_error::{ProxyCode, ProxyError};
use super::proxy_use::ProxyUse;
use super::service::Connectors;
use super::ssrf::{AddressPolicy, GuardedResolver, Refusal, Refused};
use super::template::{CredentialPlacement, Template};
use super::vault::Credentials;
use crate::audit::RequestContext;
use crate::cache::Redis;
use crate::config::Config;
use crate::edge::ratelimit::{Limiter, Policy};
use crate::identity::Principal;
use crate::storage::connections::ConnectionRow;

const PER_CONNECTION: &str = "proxy_connection";
const PER_CALLER: &str = "proxy_caller";

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), and those of
/// ours that must not reach a provider.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
];
/// The caller's credentials for Atom and where it is: never forwarded.
const CALLER_ONLY: &[&str] =
    &["authorization", "cookie", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];
/// Provider headers that stay with the proxy: a session cookie is a credential.
const PROVIDER_ONLY: &[&str] = &["set-cookie", "set-cookie2"];

/// One call through the proxy, as the route hands it over.
#[allow(missing_debug_implementations)]
pub struct Call<S> {
    pub method: Method,
    /// The raw path below `/v1/proxy/{connection_id}/`, still percent-encoded.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: S,
}

/// The provider's answer, to stream back.
#[derive(Debug)]
pub struct Forwarded {
    pub response: reqwest::Response,
    /// The headers to pass back: the provider's, less hop-by-hop and cookies.
    pub headers: HeaderMap,
}

pub struct Proxy {
    connectors: Arc<Connectors>,
    catalog: Arc<Catalog>,
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    limiter: Limiter,
    max_body: u64,
    replay_bytes: usize,
    /// The most of a form body held to be signed for an OAuth 1.0a provider.
    signed_form_max: usize,
    timeout: Duration,
    uses: ProxyUse,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(
        config: &Config,
        connectors: Arc<Connectors>,
        catalog: Arc<Catalog>,
        redis: Option<Arc<Redis>>,
    ) -> Result<Self, reqwest::Error> {
        let c = &config.connectors;
        let policy = Arc::new(AddressPolicy::new(&c.proxy_allow_ranges));
        let timeout = Duration::from_secs(c.proxy_timeout_secs);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A system proxy would connect where the guarded resolver never looks.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))))
            .connect_timeout(timeout)
            .user_agent(concat!("atom/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let policies = HashMap::from([
            (
                PER_CONNECTION,
                Policy { quota: c.proxy_connection_per_minute, window_secs: 60, burst: c.proxy_connection_burst },
            ),
            (PER_CALLER, Policy { quota: c.proxy_key_per_minute, window_secs: 60, burst: c.proxy_key_burst }),
        ]);
        Ok(Self {
            connectors,
            catalog,
            http,
            policy,
            limiter: Limiter::new(policies, redis),
            max_body: c.proxy_max_body_bytes,
            replay_bytes: c.proxy_replay_bytes,
            signed_form_max: c
                .proxy_signed_form_max_bytes
                .min(usize::try_from(c.proxy_max_body_bytes).unwrap_or(usize::MAX)),
            timeout,
            uses: ProxyUse::new(Duration::from_secs(c.proxy_use_window_secs)),
        })
    }

    /// Forwards `call` to connection `id`'s provider as `principal`; records the metrics, and
    /// the caller's use of the connection once per window.
    pub async fn forward<S, E>(
        &self,
        principal: &Principal,
        id: &str,
        call: Call<S>,
        context: &RequestContext,
    ) -> Result<Forwarded, ProxyError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let mut provider = None;
        let result = self.forward_inner(principal, id, call, context, &mut provider).await;
        let provider = provider.unwrap_or_else(|| "none".to_owned());
        let status = match &result {
            Ok(f) => f.response.status().as_u16().to_string(),
            Err(e) => e.label().to_owned(),
        };
        metrics::counter!("connector_proxy_requests_total", "provider" => provider.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("connector_proxy_duration_seconds", "provider" => provider)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn forward_inner<S, E>(
        &self,
        principal: &Principal,
        id: &str,
        call: Call<S>,
        context: &RequestContext,
        provider: &mut Option<String>,
    ) -> Result<Forwarded, ProxyError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        self.limit(PER_CALLER, &crate::edge::principal_key(principal)).await?;
        let row = super::access::usable(&self.connectors, principal, id).await?;
        *provider = Some(row.provider.clone());
        self.limit(PER_CONNECTION, &row.id).await?;
        let template = self.catalog.get(&row.provider).cloned().ok_or_else(|| {
            ProxyError::new(ProxyCode::NotConfigured, "this connection's provider is not in this server's catalog")
        })?;
        if let Some(length) = content_length(&call.headers)
            && length > self.max_body
        {
            return Err(too_large(self.max_body));
        }
        // RFC 5849 §3.4.1.3.1: an OAuth 1.0a signature covers a form body's parameters.
        let signed_form =
            matches!(template.api.credential.placement, CredentialPlacement::Oauth1) && is_form(&call.headers);
        if signed_form && content_length(&call.headers).is_some_and(|length| length > self.signed_form_max as u64) {
            return Err(form_too_large(self.signed_form_max));
        }
        let row = self.connectors.fresh(row).await?;
        let mut body = if signed_form { self.hold_whole(call.body).await? } else { self.hold(call.body).await? };
        let target = Target { method: call.method, path: call.path, query: call.query, headers: call.headers };

        let credentials = Credentials::open(&self.connectors.keyring(), &row)?;
        self.uses.record(self.connectors.db(), principal, &row, context).await?;
        let first = self.send(&template, &row, &credentials, &target, &mut body).await?;
        // Renewable: a refresh token, or a sign-in's session (Tableau) signed in again.
        let renewable = (row.auth_kind == "oauth2" && credentials.refresh_token.is_some())
            || (template.lookup.is_some_and(super::template::Lookup::signs_in) && credentials.access_token.is_some());
        let retry = first.status() == reqwest::StatusCode::UNAUTHORIZED && body.replayable() && renewable;
        if !retry {
            return Ok(forwarded(first));
        }
        let refreshed = self.connectors.refresh_rejected(&row.id, &row.credentials).await?;
        if refreshed.credentials == row.credentials {
            // Nothing new to try (a transient refresh failure with the token still valid).
            return Ok(forwarded(first));
        }
        drop(first);
        tracing::info!(provider = %row.provider, connection_id = %row.id, "proxy: 401 from the provider; retrying once after a refresh");
        let credentials = Credentials::open(&self.connectors.keyring(), &refreshed)?;
        let second = self.send(&template, &refreshed, &credentials, &target, &mut body).await?;
        Ok(forwarded(second))
    }

    async fn limit(&self, policy: &'static str, key: &str) -> Result<(), ProxyError> {
        let decision = self.limiter.check(policy, key).await;
        if decision.allowed {
            return Ok(());
        }
        let detail = if policy == PER_CONNECTION {
            "Too many proxy calls for this connection; slow down."
        } else {
            "Too many proxy calls for this API key; slow down."
        };
        Err(ProxyError::Proxy {
            code: ProxyCode::RateLimited,
            detail: detail.to_owned(),
            retry_after_secs: Some(decision.retry_after_secs.max(1)),
        })
    }

    /// Reads up to `replay_bytes` of the body: all of it when it ends within them (a body that
    /// can be sent again), else what was read and the rest, to stream, counted against the cap.
    async fn hold<S, E>(&self, mut body: S) -> Result<Held, ProxyError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut held = Vec::new();
        let mut size = 0usize;
        let over = Arc::new(AtomicBool::new(false));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| unreadable(&e))?;
            size += chunk.len();
            held.push(chunk);
            if size > self.replay_bytes {
                let (max, flag) = (self.max_body, Arc::clone(&over));
                let mut sent = 0u64;
                let stream = futures_util::stream::iter(held.into_iter().map(Ok::<_, BoxError>))
                    .chain(body.map(|chunk| chunk.map_err(|e| Box::new(e) as BoxError)))
                    .map(move |chunk| {
                        let chunk = chunk?;
                        sent += chunk.len() as u64;
                        if sent > max {
                            flag.store(true, Ordering::Release);
                            return Err(BoxError::from("the request body exceeds the proxy's limit"));
                        }
                        Ok(chunk)
                    });
                return Ok(Held { body: HeldBody::Streaming(Some(reqwest::Body::wrap_stream(stream))), over });
            }
        }
        let mut whole = Vec::with_capacity(size);
        for chunk in held {
            whole.extend_from_slice(&chunk);
        }
        Ok(Held { body: HeldBody::Whole(Bytes::from(whole)), over })
    }

    /// Reads the whole body, to be signed with the request: at most `signed_form_max` bytes.
    async fn hold_whole<S, E>(&self, mut body: S) -> Result<Held, ProxyError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut whole = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| unreadable(&e))?;
            if whole.len() + chunk.len() > self.signed_form_max {
                return Err(form_too_large(self.signed_form_max));
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(Held { body: HeldBody::Whole(Bytes::from(whole)), over: Arc::new(AtomicBool::new(false)) })
    }

    /// One request to the provider with `credentials` injected; the response head.
    async fn send(
        &self,
        template: &Template,
        row: &ConnectionRow,
        credentials: &Credentials,
        target: &Target,
        held: &mut Held,
    ) -> Result<reqwest::Response, ProxyError> {
        let values = values(template, row, credentials)?;
        let base = values.substitute(&template.api.base_url).map_err(|e| invalid(&e.field))?;
        let base = url::Url::parse(&base)
            .map_err(|_| ProxyError::new(ProxyCode::ConnectionInvalid, "the provider's base URL does not parse"))?;
        let mut url = super::ssrf::join_path(&base, &target.path, target.query.as_deref())
            .map_err(|e| ProxyError::new(ProxyCode::InvalidPath, e.0))?;
        self.policy.check_url(&url).map_err(refused)?;

        let mut headers = outgoing_headers(&target.headers);
        for (name, value) in &template.api.headers {
            let value = values.substitute(value).map_err(|e| invalid(&e.field))?;
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                headers.insert(name, value);
            }
        }
        let (body, form) = match &mut held.body {
            HeldBody::Whole(bytes) => {
                headers.remove(header::CONTENT_LENGTH);
                // A form body is signed with the rest by OAuth 1.0a (RFC 5849 §3.4.1.3).
                let form = if is_form(&headers) {
                    form_urlencoded::parse(bytes).into_owned().collect::<Vec<_>>()
                } else {
                    Vec::new()
                };
                (reqwest::Body::from(bytes.clone()), form)
            }
            // Sent once: a streamed body is not replayed.
            HeldBody::Streaming(stream) => {
                (stream.take().unwrap_or_else(|| reqwest::Body::from(Bytes::new())), Vec::new())
            }
        };
        self.inject(template, row, credentials, &values, &target.method, &mut url, &mut headers, &form).await?;

        let request = self.http.request(target.method.clone(), url).headers(headers).body(body);
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(ProxyError::new(ProxyCode::ProviderTimeout, "the provider sent no response in time")),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) if held.over.load(Ordering::Acquire) => Err(too_large(self.max_body)),
            Ok(Err(e)) => Err(send_error(&e)),
        }
    }

    /// Puts the credential where the template says.
    #[allow(clippy::too_many_arguments)]
    async fn inject(
        &self,
        template: &Template,
        row: &ConnectionRow,
        credentials: &Credentials,
        values: &Values,
        method: &Method,
        url: &mut url::Url,
        headers: &mut HeaderMap,
        form: &[(String, String)],
    ) -> Result<(), ProxyError> {
        let c = &template.api.credential;
        let fill = |template: Option<&String>| {
            values.substitute(template.map_or("{access_token}", String::as_str)).map_err(|e| invalid(&e.field))
        };
        let secret_header = |value: String| -> Result<HeaderValue, ProxyError> {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| ProxyError::new(ProxyCode::ConnectionInvalid, "the credential is not a header value"))?;
            value.set_sensitive(true);
            Ok(value)
        };
        match c.placement {
            CredentialPlacement::Bearer => {
                headers.insert(header::AUTHORIZATION, secret_header(format!("Bearer {}", fill(c.value.as_ref())?))?);
            }
            CredentialPlacement::Header => {
                let name =
                    c.name.as_deref().and_then(|n| HeaderName::from_bytes(n.as_bytes()).ok()).ok_or_else(|| {
                        ProxyError::new(ProxyCode::NotConfigured, "the template's credential header has no valid name")
                    })?;
                headers.insert(name, secret_header(fill(c.value.as_ref())?)?);
            }
            CredentialPlacement::Query => {
                let name = c.name.clone().unwrap_or_default();
                let value = fill(c.value.as_ref())?;
                let kept: Vec<(String, String)> =
                    url.query_pairs().filter(|(k, _)| *k != name.as_str()).map(|(k, v)| (k.into(), v.into())).collect();
                url.query_pairs_mut().clear().extend_pairs(kept).append_pair(&name, &value);
            }
            CredentialPlacement::Basic => {
                let user = values.substitute(c.username.as_deref().unwrap_or("")).map_err(|e| invalid(&e.field))?;
                let password = values.substitute(c.password.as_deref().unwrap_or("")).map_err(|e| invalid(&e.field))?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                headers.insert(header::AUTHORIZATION, secret_header(format!("Basic {encoded}"))?);
            }
            CredentialPlacement::Url => {}
            CredentialPlacement::Oauth1 => {
                let app = self.connectors.app(&row.provider).await.map_err(|_| {
                    ProxyError::new(ProxyCode::NotConfigured, "this instance has no OAuth 1.0a app for this provider")
                })?;
                let token_secret = credentials.token_secret.as_deref().unwrap_or("");
                let signer = oauth1::Signer {
                    consumer_key: &app.client.client_id,
                    consumer_secret: secrecy::ExposeSecret::expose_secret(&app.client.client_secret),
                    token: credentials.access_token.as_deref(),
                    token_secret,
                };
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let timestamp = u64::try_from(crate::storage::now_ms() / 1000).unwrap_or_default();
                let signed = oauth1::authorization_header(method.as_str(), url, form, &signer, &[], &nonce, timestamp);
                headers.insert(header::AUTHORIZATION, secret_header(signed)?);
            }
        }
        Ok(())
    }
}

/// What is sent, less the body.
struct Target {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body, and whether its stream passed the size cap.
struct Held {
    body: HeldBody,
    over: Arc<AtomicBool>,
}

enum HeldBody {
    /// The whole body, which can be sent again.
    Whole(Bytes),
    /// Its first bytes and the rest of the caller's stream: sent once.
    Streaming(Option<reqwest::Body>),
}

impl Held {
    fn replayable(&self) -> bool {
        matches!(self.body, HeldBody::Whole(_))
    }
}

/// The connection's values for the template's placeholders: its parameters and kept values,
/// each checked again by its pattern (a row changed behind the vault's back cannot steer the
/// proxy to another host), and the credential's secrets.
fn values(template: &Template, row: &ConnectionRow, credentials: &Credentials) -> Result<Values, ProxyError> {
    let stored: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&row.params).unwrap_or_default();
    let text = |name: &str| stored.get(name).and_then(serde_json::Value::as_str);
    let mut values = Values::default();
    for param in &template.params {
        if let Some(value) = text(&param.name).or(param.default.as_deref()) {
            values.insert_checked(&param.name, value, Some(&param.pattern)).map_err(|e| invalid(&e.field))?;
        }
    }
    for keep in &template.keep {
        // A value kept without a pattern never enters a URL (the catalog refuses that).
        if let (Some(value), Some(pattern)) = (text(&keep.name), &keep.pattern) {
            values.insert_checked(&keep.name, value, Some(pattern)).map_err(|e| invalid(&e.field))?;
        }
    }
    if let Some(lookup) = template.lookup {
        for (name, pattern, _) in lookup.provides() {
            if let (Some(value), Ok(pattern)) = (text(name), Pattern::new(pattern)) {
                values.insert_checked(name, value, Some(&pattern)).map_err(|e| invalid(&e.field))?;
            }
        }
    }
    if let Some(token) = &credentials.access_token {
        values.insert_secret("access_token", SecretString::from(token.as_str()));
    }
    for (name, value) in &credentials.fields {
        values.insert_secret(name, SecretString::from(value.as_str()));
    }
    Ok(values)
}

/// The caller's headers that go on to the provider.
fn outgoing_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    for name in CALLER_ONLY {
        headers.remove(*name);
    }
    headers.remove(crate::wire::REQUEST_ID);
    headers
}

/// The provider's headers that go back to the caller.
pub fn returned_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    for name in PROVIDER_ONLY {
        headers.remove(*name);
    }
    headers
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .filter(|n| !n.is_empty())
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP.iter().copied()) {
        headers.remove(name);
    }
}

fn forwarded(response: reqwest::Response) -> Forwarded {
    let headers = returned_headers(response.headers());
    Forwarded { response, headers }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

fn too_large(max: u64) -> ProxyError {
    ProxyError::new(ProxyCode::BodyTooLarge, format!("the request body is larger than the proxy accepts ({max} bytes)"))
}

fn form_too_large(max: usize) -> ProxyError {
    ProxyError::new(
        ProxyCode::BodyTooLarge,
        format!(
            "a form body to an OAuth 1.0a provider is signed whole, so the proxy holds it: at most {max} bytes \
             (connectors.proxy_signed_form_max_bytes)"
        ),
    )
}

fn unreadable(error: &(dyn std::error::Error + 'static)) -> ProxyError {
    tracing::debug!(error = %error, "proxy: the caller's body could not be read");
    ProxyError::Api(crate::error::ApiError::BadRequest("The request body could not be read to its end.".to_owned()))
}

fn invalid(field: &str) -> ProxyError {
    ProxyError::new(
        ProxyCode::ConnectionInvalid,
        format!("the connection's {field} is missing or no longer matches the provider's pattern; connect again"),
    )
}

fn refused(refusal: Refusal) -> ProxyError {
    let detail = match refusal {
        Refusal::Metadata => "the provider's address is a cloud metadata endpoint, which the proxy never calls",
        Refusal::Internal => {
            "the provider's address is internal, which the proxy does not call unless an operator allows its range"
        }
    };
    ProxyError::new(ProxyCode::DestinationRefused, detail)
}

/// A failed send, by cause: the guarded resolver's refusal, a timeout, or an unreachable
/// provider. The error text (which may hold the URL, and so a credential placed in it) is
/// not shown.
fn send_error(error: &reqwest::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        // By type, or by text where a wrapper in between does not expose it as a source.
        if e.downcast_ref::<Refused>().is_some() || e.to_string().contains(Refused::MARKER) {
            return refused(Refusal::Internal);
        }
        source = e.source();
    }
    if error.is_timeout() {
        return ProxyError::new(ProxyCode::ProviderTimeout, "the provider did not answer in time");
    }
    // The source, not the error itself: its text names the URL.
    let cause = std::error::Error::source(error).map(ToString::to_string).unwrap_or_default();
    tracing::info!(cause, "proxy: the provider could not be reached");
    ProxyError::new(ProxyCode::ProviderUnreachable, "the provider could not be reached")
}
