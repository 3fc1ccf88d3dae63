//! Connecting: the authorization URL a user is sent to, and the callback the provider sends
//! the browser back to (RFC 6749 §4.1 with PKCE, RFC 7636, and `iss`, RFC 9207).
//!
//! The `state` is 256 random bits, stored only as its SHA-256, bound to the user who started
//! the flow, the provider, the PKCE verifier (encrypted, owner the user) and where to return;
//! it lives [`AUTHORIZATION_TTL_MS`] and is deleted by the first callback that presents it,
//! whatever that callback's outcome. The callback has no bearer token (it is a browser
//! redirect): the user is the state's, never a guess, so a token lands only on the connection
//! of the user who started the flow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use super::error::{ConnectError, ConnectorError, ErrorCode, scrub};
use super::identity::Account;
use super::requests::ClientCredentials;
use super::service::Connectors;
use super::spec::{AuthSpec, OAuth2Spec};
use super::tokens::{self, CodeGrant, Exchanged};
use super::vault::{Credentials, Obtained};
use super::{apps, endpoints, exchange, par, vault};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::crypto::{Aad, from_base64, to_base64};
use crate::error::{ApiError, FieldError};
use crate::http::{Validate, has_unprintable};
use crate::storage::connections::{self as sql, AuthorizationRow, ConnectionRow};
use crate::storage::now_ms;
use crate::wire::rfc3339;

/// How long a started authorization may wait for its callback: 10 minutes.
pub const AUTHORIZATION_TTL_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAuthorization {
    /// The provider's template name.
    pub provider: String,
    /// The template's connection parameters (a subdomain, a region), name to value.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Scopes beyond the template's defaults.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Where the callback sends the browser afterwards: one of `connectors.return_urls`
    /// exactly; the first of them when absent.
    #[serde(default)]
    pub return_to: Option<String>,
}

impl Validate for StartAuthorization {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.params.len() > 20
            || self.params.iter().any(|(k, v)| {
                k.is_empty()
                    || k.len() > 64
                    || v.is_empty()
                    || v.len() > 500
                    || has_unprintable(k)
                    || has_unprintable(v)
            })
        {
            errors.push(FieldError::new("params", "at most 20 entries of printable names and values"));
        }
        if self.scopes.len() > 50
            || self.scopes.iter().any(|s| {
                s.is_empty()
                    || s.len() > 200
                    || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            })
        {
            errors.push(FieldError::new("scopes", "at most 50 scopes, each without spaces or quotes"));
        }
        errors
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationStarted {
    /// Send the user's browser here.
    pub authorization_url: String,
    /// After this the authorization can no longer complete.
    pub expires_at: String,
}

/// What the provider's redirect carries to the callback.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The authorization server's issuer (RFC 9207).
    pub iss: Option<String>,
    /// OAuth 1.0a (RFC 5849 §2.2): the request token the user authorized, which finds the
    /// pending authorization.
    pub oauth_token: Option<String>,
    /// OAuth 1.0a: the verifier to exchange with the request token.
    pub oauth_verifier: Option<String>,
    /// Every parameter of the redirect, for the values a template keeps from it
    /// (QuickBooks' `realmId`); filled by the handler from the raw query.
    #[serde(skip)]
    #[param(ignore)]
    pub extra: BTreeMap<String, String>,
}

/// What the callback did: where to send the browser (when the state named a place), and
/// the connection or the error.
#[derive(Debug)]
pub struct CallbackOutcome {
    pub return_to: Option<String>,
    pub provider: Option<String>,
    pub result: Result<ConnectionRow, ConnectorError>,
}

pub(super) fn state_hash(state: &str) -> String {
    format!("{:x}", Sha256::digest(state.as_bytes()))
}

fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth2_spec(spec: &super::spec::ProviderSpec) -> Result<&OAuth2Spec, ConnectError> {
    match &spec.auth {
        AuthSpec::OAuth2(oauth) => Ok(oauth),
        AuthSpec::Credential { .. } => Err(ConnectError::new(
            ErrorCode::WrongAuthKind,
            format!("{} is connected by submitting its credential, not by authorization", spec.name),
        )),
    }
}

/// What is secret in a pending authorization.
#[derive(Serialize, Deserialize)]
pub(super) struct PendingSecrets {
    pub(super) pkce_verifier: Option<String>,
    /// OAuth 1.0a: the request token's secret, which signs the access token request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) request_token_secret: Option<String>,
}

pub(super) fn secrets_aad<'a>(state_hash: &'a str, user_id: &'a str) -> Aad<'a> {
    Aad::new("connection_authorizations", "secrets", state_hash, user_id)
}

/// Starts an authorization for `user_id`: stores the pending state and returns the URL to
/// send the browser to.
pub async fn start(
    connectors: &Connectors,
    user_id: &str,
    request: &StartAuthorization,
) -> Result<AuthorizationStarted, ConnectorError> {
    let provider = request.provider.as_str();
    let spec = connectors.provider(provider)?;
    let oauth = oauth2_spec(&spec)?;
    let values = endpoints::check_params(oauth, &request.params)?;
    // Slack asks for user scopes under `user_scope`.
    let scope_param = connectors
        .template(provider)
        .ok()
        .and_then(|t| t.oauth2.as_ref().map(|o| o.scope_param.clone()))
        .unwrap_or_else(|| "scope".to_owned());
    let app = connectors.app(provider).await?;
    let oauth = connectors.endpoints(oauth, &values, &app.client.client_id).await?;
    let redirect_uri = connectors.callback_url()?;
    let return_to = connectors.return_to(request.return_to.as_deref())?;

    let state = Zeroizing::new(crate::identity::random_secret());
    let hash = state_hash(&state);
    let verifier = oauth.pkce.then(crate::identity::random_secret);
    let mut scopes: Vec<String> = oauth.default_scopes.clone();
    for scope in &request.scopes {
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }

    // The authorization request's parameters, in the browser's URL or pushed (RFC 9126).
    let mut pairs: Vec<(String, String)> = vec![
        ("response_type".to_owned(), "code".to_owned()),
        ("redirect_uri".to_owned(), redirect_uri.clone()),
        ("state".to_owned(), state.to_string()),
    ];
    if !scopes.is_empty() {
        pairs.push((scope_param, scopes.join(&oauth.scope_separator)));
    }
    if let Some(verifier) = &verifier {
        pairs.push(("code_challenge".to_owned(), pkce_challenge(verifier)));
        pairs.push(("code_challenge_method".to_owned(), "S256".to_owned()));
    }
    for (name, value) in &oauth.authorize_params {
        pairs.push((name.clone(), value.clone()));
    }
    let mut url = url::Url::parse(&oauth.authorization_url)
        .map_err(|_| ConnectError::new(ErrorCode::NotConfigured, "the template's authorization URL is not a URL"))?;
    if oauth.par {
        let request_uri = par::push(connectors.http(), &oauth, &app.client, pairs).await?;
        url.query_pairs_mut().append_pair("client_id", &app.client.client_id).append_pair("request_uri", &request_uri);
    } else {
        let mut query = url.query_pairs_mut();
        query.append_pair("client_id", &app.client.client_id);
        for (name, value) in &pairs {
            query.append_pair(name, value);
        }
    }

    let now = now_ms();
    let secrets = serde_json::to_vec(&PendingSecrets { pkce_verifier: verifier.clone(), request_token_secret: None })
        .unwrap_or_default();
    let sealed = connectors.keyring().encrypt(&secrets_aad(&hash, user_id), &secrets)?;
    let row = AuthorizationRow {
        state_hash: hash.clone(),
        user_id: user_id.to_owned(),
        provider: provider.to_owned(),
        secrets: to_base64(&sealed),
        scopes: scopes.join(" "),
        // With the defaults applied: every later step fills the same URLs.
        params: serde_json::to_string(values.plain()).unwrap_or_else(|_| "{}".to_owned()),
        return_to: return_to.unwrap_or_default(),
        created_at: now,
        expires_at: now + AUTHORIZATION_TTL_MS,
    };
    let mut tx = connectors.db().begin().await?;
    sql::insert_authorization(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(AuthorizationStarted { authorization_url: url.into(), expires_at: rfc3339(row.expires_at) })
}

/// Takes (deletes and returns) the pending authorization that `key` (a state, or OAuth
/// 1.0a's request token) names, in one statement, so that it works once whatever happens
/// next; an unknown or used key is `state_invalid`.
pub(super) async fn take_pending(connectors: &Connectors, key: &str) -> Result<AuthorizationRow, CallbackOutcome> {
    let failed = |e: ConnectorError| CallbackOutcome { return_to: None, provider: None, result: Err(e) };
    match sql::take_authorization(connectors.db(), &state_hash(key)).await {
        Ok(Some(pending)) => Ok(pending),
        Ok(None) => Err(failed(
            ConnectError::new(
                ErrorCode::StateInvalid,
                "this authorization is unknown or was already completed; start again",
            )
            .into(),
        )),
        Err(e) => Err(failed(e.into())),
    }
}

/// Completes an authorization from the provider's redirect. Every outcome that names a user
/// is audited; the pending state is gone afterwards whatever happened.
pub async fn callback(connectors: &Connectors, query: &CallbackQuery, context: &RequestContext) -> CallbackOutcome {
    if query.state.is_none() && query.oauth_token.is_some() {
        return super::oauth1_flow::callback(connectors, query, context).await;
    }
    let Some(state) = query.state.as_deref().filter(|s| !s.is_empty() && s.len() <= 512) else {
        let e = ConnectError::new(ErrorCode::InvalidCallback, "the callback carries no state");
        return CallbackOutcome { return_to: None, provider: None, result: Err(e.into()) };
    };
    let pending = match take_pending(connectors, state).await {
        Ok(pending) => pending,
        Err(outcome) => return outcome,
    };
    let return_to = Some(pending.return_to.clone()).filter(|r| !r.is_empty());
    let result = complete(connectors, query, &pending, context).await;
    if let Err(e) = &result {
        audit_failure(connectors, &pending.user_id, &pending.provider, e, context).await;
    }
    CallbackOutcome { return_to, provider: Some(pending.provider.clone()), result }
}

/// Audits a failed connection of `user_id` under the error's stable code (alone: whatever
/// else failed, the failure is on record).
pub(super) async fn audit_failure(
    connectors: &Connectors,
    user_id: &str,
    provider: &str,
    error: &ConnectorError,
    context: &RequestContext,
) {
    let code = match error {
        ConnectorError::Connect(c) => c.code.as_str(),
        ConnectorError::Api(_) => "internal",
    };
    let event = AuditEvent::new(Actor::User(user_id.to_owned()), "connection.failed", Outcome::Failure, context)
        .details(serde_json::json!({ "provider": provider, "error": code }));
    if let Err(e) = audit::record_alone(connectors.db(), event).await {
        tracing::warn!(error = %crate::error::ErrorChain(&e), "connection failure not audited");
    }
}

async fn complete(
    connectors: &Connectors,
    query: &CallbackQuery,
    pending: &AuthorizationRow,
    context: &RequestContext,
) -> Result<ConnectionRow, ConnectorError> {
    let now = now_ms();
    if pending.expires_at < now {
        return Err(ConnectError::new(ErrorCode::StateExpired, "this authorization expired; start again").into());
    }
    let spec = connectors.provider(&pending.provider)?;
    let oauth = oauth2_spec(&spec)?;
    if let Some(issuer) = &oauth.issuer
        && query.iss.as_deref() != Some(issuer.as_str())
    {
        return Err(ConnectError::new(
            ErrorCode::IssuerMismatch,
            "the response does not come from this provider's authorization server (iss)",
        )
        .into());
    }
    if let Some(error) = &query.error {
        let code = if error == "access_denied" { ErrorCode::AccessDenied } else { ErrorCode::ProviderError };
        let description = query.error_description.as_deref().unwrap_or("");
        return Err(ConnectError::new(code, format!("{} {}", scrub(error), description).trim()).into());
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or_else(|| ConnectError::new(ErrorCode::InvalidCallback, "the callback carries no code"))?;
    let stored = from_base64(&pending.secrets)?;
    let plain = connectors.keyring().decrypt(&secrets_aad(&pending.state_hash, &pending.user_id), &stored)?;
    let secrets: PendingSecrets =
        serde_json::from_slice(&plain).map_err(|_| ApiError::internal("pending authorization secrets are not JSON"))?;
    let given: BTreeMap<String, String> = serde_json::from_str(&pending.params).unwrap_or_default();
    let values = endpoints::check_params(oauth, &given)?;
    let app = connectors.app(&pending.provider).await?;
    let oauth = &connectors.endpoints(oauth, &values, &app.client.client_id).await?;
    let redirect_uri = connectors.callback_url()?;
    let params = given;
    let exchanged = match connectors.template(&pending.provider) {
        // A catalog provider: its template says how to exchange and read the answer, which
        // values to keep, what to look up afterwards.
        Ok(template) => {
            let client = ClientCredentials { id: &app.client.client_id, secret: &app.client.client_secret };
            let grant = CodeGrant {
                code,
                redirect_uri: &redirect_uri,
                pkce_verifier: secrets.pkce_verifier.as_deref(),
                callback_query: &query.extra,
                params: &params,
                // Discovered from the issuer (RFC 8414), when the template names one.
                token_endpoint: template
                    .oauth2
                    .as_ref()
                    .and_then(|o| o.issuer.as_ref())
                    .map(|_| oauth.token_url.as_str()),
            };
            tokens::exchange_code(connectors.http(), &template, &client, &grant).await?
        }
        // A provider added beside the catalog (embedders, tests): the spec's fixed shape.
        Err(_) => {
            let tokens = exchange::exchange_code(
                connectors.http(),
                oauth,
                &app.client,
                code,
                &redirect_uri,
                secrets.pkce_verifier.as_deref(),
            )
            .await?;
            let account = exchange::identity(connectors.http(), oauth, &tokens.access_token)
                .await?
                .map(|(id, label)| Account { id, label });
            Exchanged {
                expires_at: tokens.expires_in.filter(|s| *s > 0).map(|s| now.saturating_add(s.saturating_mul(1000))),
                scopes: tokens.scope.as_deref().map(|s| s.split([' ', ',']).map(str::to_owned).collect()),
                access_token: tokens.access_token.clone(),
                refresh_token: tokens.refresh_token.clone(),
                token_type: tokens.token_type.clone(),
                account,
                kept: params.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect(),
            }
        }
    };
    let (account_id, label) = match &exchanged.account {
        Some(account) => (account.id.clone(), account.label.clone()),
        None => ("default".to_owned(), spec.display_name.clone()),
    };
    let scopes: Vec<String> = exchanged
        .scopes
        .clone()
        .unwrap_or_else(|| vec![pending.scopes.clone()])
        .iter()
        // Some providers join granted scopes with commas whatever they were asked with (GitHub).
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let obtained = Obtained {
        user_id: pending.user_id.clone(),
        provider: pending.provider.clone(),
        auth_kind: "oauth2",
        account_id,
        label,
        scopes,
        params: serde_json::Value::Object(exchanged.kept.clone()),
        credentials: Credentials {
            access_token: Some(exchanged.access_token.clone()),
            refresh_token: exchanged.refresh_token.clone(),
            token_type: exchanged.token_type.clone(),
            token_secret: None,
            fields: BTreeMap::new(),
        },
        expires_at: exchanged.expires_at,
    };
    let mut tx = connectors.db().begin().await?;
    let (row, created) = vault::store(&mut tx, &connectors.keyring(), &obtained, now).await?;
    let action = if created { "connection.created" } else { "connection.reauthorized" };
    let event = AuditEvent::new(Actor::User(row.user_id.clone()), action, Outcome::Success, context)
        .target(row.id.clone())
        .details(serde_json::json!({ "provider": row.provider, "scopes": row.scopes }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(row)
}

/// Where the callback sends the browser: `return_to` with `connection_id` (and `provider`),
/// or with `error` (a stable code).
pub fn redirect_target(
    return_to: &str,
    provider: Option<&str>,
    result: &Result<ConnectionRow, ConnectorError>,
) -> String {
    let Ok(mut url) = url::Url::parse(return_to) else { return return_to.to_owned() };
    {
        let mut query = url.query_pairs_mut();
        if let Some(provider) = provider {
            query.append_pair("provider", provider);
        }
        match result {
            Ok(row) => query.append_pair("connection_id", &row.id),
            Err(ConnectorError::Connect(e)) => query.append_pair("error", e.code.as_str()),
            Err(ConnectorError::Api(_)) => query.append_pair("error", "internal"),
        };
    }
    url.into()
}

/// The callback URL, for building `redirect_uri` in both legs of the flow.
pub fn callback_url(public_url: Option<&str>) -> Option<String> {
    apps::callback_url(public_url)
}
