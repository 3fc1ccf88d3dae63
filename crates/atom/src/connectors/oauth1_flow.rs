//! The OAuth 1.0a three-legged flow (RFC 5849 §2), for Trello: temporary credentials (the
//! request token) asked for with `oauth_callback`, the user sent to authorize them, the
//! callback with `oauth_token` and `oauth_verifier`, and the token credentials (the access
//! token and its secret) obtained with them; every request signed with HMAC-SHA1
//! ([`super::oauth1`]).
//!
//! The same guarantees as the OAuth 2.0 flow: the pending authorization is stored bound to
//! the user who started it, keyed by the SHA-256 of the request token (which the provider
//! hands back in the callback: the callback finds it by that and nothing else, never by a
//! guess), with the request token's secret sealed like a PKCE verifier; it lives
//! [`super::flows::AUTHORIZATION_TTL_MS`] and is deleted by the first callback that presents
//! it, whatever that callback's outcome.
//!
//! Disconnecting revokes the token where the template says (`oauth1.revocation`: Trello's
//! `DELETE /1/tokens/{token}`), in a request signed with the token and its secret like the
//! agent's calls; [`super::disconnect`] deletes the connection whatever the answer.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::exchange::transport;
use super::flows::{
    AUTHORIZATION_TTL_MS, AuthorizationStarted, CallbackOutcome, CallbackQuery, PendingSecrets, StartAuthorization,
    audit_failure, secrets_aad, state_hash, take_pending,
};
use super::identity::{self, CallAuth};
use super::oauth1::{self, Signer};
use super::placeholders::Values;
use super::service::Connectors;
use super::template::{OAuth1, Template};
use super::vault::{self, Credentials, Obtained};
use crate::audit::{self, Actor, AuditEvent, Outcome, RequestContext};
use crate::crypto::{from_base64, to_base64};
use crate::error::{ApiError, FieldError};
use crate::storage::connections::{self as sql, AuthorizationRow, ConnectionRow};
use crate::storage::now_ms;
use crate::wire::rfc3339;

fn oauth1(t: &Template) -> Result<&OAuth1, ConnectError> {
    t.oauth1
        .as_ref()
        .ok_or_else(|| ConnectError::new(ErrorCode::WrongAuthKind, format!("{} is not an OAuth 1.0a provider", t.id)))
}

fn values(t: &Template, params: &BTreeMap<String, String>) -> Result<Values, ApiError> {
    Values::from_params(t, params).map_err(|errors| {
        ApiError::Validation(
            errors.into_iter().map(|e| FieldError::new(format!("params.{}", e.field), e.message)).collect(),
        )
    })
}

fn url(values: &Values, template: &str, field: &str) -> Result<url::Url, ConnectError> {
    values
        .substitute(template)
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .ok_or_else(|| ConnectError::new(ErrorCode::NotConfigured, format!("the template's {field} cannot be filled")))
}

/// A signed `POST` to a credentials endpoint (§2.1, §2.3: POST, no body, the protocol
/// parameters in the `Authorization` header); its form-encoded answer.
async fn signed_post(
    http: &reqwest::Client,
    url: &url::Url,
    signer: &Signer<'_>,
    extra: &[(&str, &str)],
    what: &str,
) -> Result<BTreeMap<String, String>, ConnectError> {
    let nonce = crate::identity::random_secret();
    let timestamp = u64::try_from(now_ms() / 1000).unwrap_or_default();
    let header = oauth1::authorization_header("POST", url, &[], signer, extra, &nonce, timestamp);
    let response = http
        .post(url.clone())
        .header(reqwest::header::AUTHORIZATION, header)
        .send()
        .await
        .map_err(|e| transport(&e, what))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| transport(&e, what))?;
    match status.as_u16() {
        200..=299 => {}
        429 => return Err(ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down")),
        500..=599 => {
            return Err(ConnectError::new(
                ErrorCode::ProviderUnavailable,
                format!("the provider's {what} answered {status}"),
            ));
        }
        _ => {
            // Trello answers a refused signature or verifier with a line of text.
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(ConnectError::new(
                ErrorCode::ProviderError,
                format!("the provider's {what} answered {status}: {text}"),
            ));
        }
    }
    if body.trim_ascii_start().starts_with(b"<") || body.trim_ascii_start().starts_with(b"{") {
        return Err(ConnectError::new(
            ErrorCode::InvalidResponse,
            format!("the provider's {what} answered with something other than a form"),
        ));
    }
    Ok(form_urlencoded::parse(&body).into_owned().collect())
}

fn field(answer: &BTreeMap<String, String>, name: &str) -> Result<String, ConnectError> {
    answer
        .get(name)
        .filter(|v| !v.is_empty() && v.len() <= 4096)
        .cloned()
        .ok_or_else(|| ConnectError::new(ErrorCode::MissingField, format!("the provider's answer has no {name}")))
}

/// Starts an OAuth 1.0a authorization for `user_id`: obtains a request token, stores the
/// pending authorization, returns the URL to send the browser to.
pub async fn start(
    connectors: &Connectors,
    t: &Template,
    user_id: &str,
    request: &StartAuthorization,
) -> Result<AuthorizationStarted, ConnectorError> {
    let o = oauth1(t)?;
    if !request.scopes.is_empty() {
        return Err(ApiError::Validation(vec![FieldError::new(
            "scopes",
            "this provider's scope is fixed by its template (OAuth 1.0a)",
        )])
        .into());
    }
    let values = values(t, &request.params)?;
    let app = connectors.app(&t.id).await?;
    let callback = connectors.callback_url()?;
    let return_to = connectors.return_to(request.return_to.as_deref())?;
    let signer = Signer {
        consumer_key: &app.client.client_id,
        consumer_secret: app.client.client_secret.expose_secret(),
        token: None,
        token_secret: "",
    };
    let request_url = url(&values, &o.request_token_url, "oauth1.request_token_url")?;
    let answer = signed_post(
        connectors.http(),
        &request_url,
        &signer,
        &[("oauth_callback", &callback)],
        "request token endpoint",
    )
    .await?;
    // §2.1: the server confirms it took the callback; without it the flow cannot complete.
    if answer.get("oauth_callback_confirmed").map(String::as_str) != Some("true") {
        return Err(ConnectError::new(ErrorCode::InvalidResponse, "the provider did not confirm the callback").into());
    }
    let token = field(&answer, "oauth_token")?;
    let secret = field(&answer, "oauth_token_secret")?;

    let hash = state_hash(&token);
    let now = now_ms();
    let secrets = serde_json::to_vec(&PendingSecrets { pkce_verifier: None, request_token_secret: Some(secret) })
        .unwrap_or_default();
    let sealed = connectors.keyring().encrypt(&secrets_aad(&hash, user_id), &secrets)?;
    let row = AuthorizationRow {
        state_hash: hash,
        user_id: user_id.to_owned(),
        provider: t.id.clone(),
        secrets: to_base64(&sealed),
        scopes: String::new(),
        params: serde_json::to_string(&request.params).unwrap_or_else(|_| "{}".to_owned()),
        return_to: return_to.unwrap_or_default(),
        created_at: now,
        expires_at: now + AUTHORIZATION_TTL_MS,
    };
    let mut tx = connectors.db().begin().await?;
    sql::insert_authorization(&mut tx, &row).await?;
    tx.commit().await?;

    let mut authorize = url(&values, &o.authorization_url, "oauth1.authorization_url")?;
    {
        let mut query = authorize.query_pairs_mut();
        query.append_pair("oauth_token", &token);
        for (name, value) in &o.authorization_params {
            let value = values.substitute(value).map_err(|_| {
                ConnectError::new(
                    ErrorCode::NotConfigured,
                    "the template's oauth1.authorization_params cannot be filled",
                )
            })?;
            query.append_pair(name, &value);
        }
    }
    Ok(AuthorizationStarted { authorization_url: authorize.into(), expires_at: rfc3339(row.expires_at) })
}

/// Completes an OAuth 1.0a authorization from the provider's redirect.
pub async fn callback(connectors: &Connectors, query: &CallbackQuery, context: &RequestContext) -> CallbackOutcome {
    let Some(token) = query.oauth_token.as_deref().filter(|t| !t.is_empty() && t.len() <= 4096) else {
        let e = ConnectError::new(ErrorCode::InvalidCallback, "the callback carries no request token");
        return CallbackOutcome { return_to: None, provider: None, result: Err(e.into()) };
    };
    let pending = match take_pending(connectors, token).await {
        Ok(pending) => pending,
        Err(outcome) => return outcome,
    };
    let return_to = Some(pending.return_to.clone()).filter(|r| !r.is_empty());
    let result = complete(connectors, query, token, &pending, context).await;
    if let Err(e) = &result {
        audit_failure(connectors, &pending.user_id, &pending.provider, e, context).await;
    }
    CallbackOutcome { return_to, provider: Some(pending.provider.clone()), result }
}

async fn complete(
    connectors: &Connectors,
    query: &CallbackQuery,
    request_token: &str,
    pending: &AuthorizationRow,
    context: &RequestContext,
) -> Result<ConnectionRow, ConnectorError> {
    let now = now_ms();
    if pending.expires_at < now {
        return Err(ConnectError::new(ErrorCode::StateExpired, "this authorization expired; start again").into());
    }
    let t = connectors.template(&pending.provider)?;
    let o = oauth1(&t)?;
    if query.error.as_deref() == Some("access_denied") {
        return Err(ConnectError::new(ErrorCode::AccessDenied, "the user refused").into());
    }
    let verifier = query
        .oauth_verifier
        .as_deref()
        .filter(|v| !v.is_empty() && v.len() <= 4096)
        .ok_or_else(|| ConnectError::new(ErrorCode::InvalidCallback, "the callback carries no oauth_verifier"))?;
    let stored = from_base64(&pending.secrets)?;
    let plain = connectors.keyring().decrypt(&secrets_aad(&pending.state_hash, &pending.user_id), &stored)?;
    let secrets: PendingSecrets =
        serde_json::from_slice(&plain).map_err(|_| ApiError::internal("pending authorization secrets are not JSON"))?;
    let request_secret = secrets
        .request_token_secret
        .as_deref()
        .ok_or_else(|| ApiError::internal("an OAuth 1.0a authorization without its request token secret"))?;
    let params: BTreeMap<String, String> = serde_json::from_str(&pending.params).unwrap_or_default();
    let values = values(&t, &params)?;
    let app = connectors.app(&pending.provider).await?;
    let consumer_secret = app.client.client_secret.expose_secret();
    let signer = Signer {
        consumer_key: &app.client.client_id,
        consumer_secret,
        token: Some(request_token),
        token_secret: request_secret,
    };
    let access_url = url(&values, &o.access_token_url, "oauth1.access_token_url")?;
    let answer =
        signed_post(connectors.http(), &access_url, &signer, &[("oauth_verifier", verifier)], "access token endpoint")
            .await?;
    let access_token = field(&answer, "oauth_token")?;
    let token_secret = field(&answer, "oauth_token_secret")?;

    let signer = Signer {
        consumer_key: &app.client.client_id,
        consumer_secret,
        token: Some(&access_token),
        token_secret: &token_secret,
    };
    let account = identity::identify(connectors.http(), &t, &values, CallAuth::OAuth1(signer)).await?;
    let (account_id, label) = account.map_or_else(|| ("default".to_owned(), t.name.clone()), |a| (a.id, a.label));
    let scope =
        o.authorization_params.get("scope").map(|s| s.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let obtained = Obtained {
        user_id: pending.user_id.clone(),
        provider: pending.provider.clone(),
        auth_kind: "oauth1",
        account_id,
        label,
        scopes: scope,
        params: serde_json::to_value(&params).unwrap_or_else(|_| serde_json::json!({})),
        credentials: Credentials {
            access_token: Some(access_token.clone()),
            refresh_token: None,
            token_type: None,
            token_secret: Some(token_secret.clone()),
            fields: BTreeMap::new(),
        },
        expires_at: None,
    };
    let mut tx = connectors.db().begin().await?;
    let (row, created) = vault::store(&mut tx, &connectors.keyring(), &obtained, now).await?;
    let action = if created { "connection.created" } else { "connection.reauthorized" };
    let event = AuditEvent::new(Actor::User(row.user_id.clone()), action, Outcome::Success, context)
        .target(row.id.clone())
        .details(serde_json::json!({ "provider": row.provider, "auth_kind": "oauth1" }));
    audit::record(&mut tx, event).await?;
    tx.commit().await?;
    Ok(row)
}

/// Revokes connection `row`'s token at its OAuth 1.0a provider, when the template says how:
/// the request signed with the consumer key and the token (HMAC-SHA1). `Ok` when the
/// provider accepted it or the template names no revocation.
pub async fn revoke(connectors: &Connectors, t: &Template, row: &ConnectionRow) -> Result<(), ConnectorError> {
    let Some(revocation) = t.oauth1.as_ref().and_then(|o| o.revocation.as_ref()) else { return Ok(()) };
    let credentials = Credentials::open(&connectors.keyring(), row)?;
    let (Some(token), Some(token_secret)) = (credentials.access_token.as_deref(), credentials.token_secret.as_deref())
    else {
        return Ok(());
    };
    let params = super::endpoints::stored_param_list(&t.params, &row.params);
    let mut values = values(t, &params)?;
    // In a path segment: encoded as RFC 5849 encodes (unreserved characters only).
    values.insert_secret("access_token", secrecy::SecretString::from(oauth1::encode(token)));
    let target = url(&values, &revocation.url, "oauth1.revocation.url")?;
    let app = connectors.app(&row.provider).await?;
    let signer = Signer {
        consumer_key: &app.client.client_id,
        consumer_secret: app.client.client_secret.expose_secret(),
        token: Some(token),
        token_secret,
    };
    let method = match revocation.method {
        super::template::HttpMethod::Get => reqwest::Method::GET,
        super::template::HttpMethod::Post => reqwest::Method::POST,
        super::template::HttpMethod::Delete => reqwest::Method::DELETE,
    };
    let nonce = crate::identity::random_secret();
    let timestamp = u64::try_from(now_ms() / 1000).unwrap_or_default();
    let header = oauth1::authorization_header(method.as_str(), &target, &[], &signer, &[], &nonce, timestamp);
    let response = connectors
        .http()
        .request(method, target)
        .header(reqwest::header::AUTHORIZATION, header)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(&e, "revocation endpoint"))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        429 => Err(ConnectError::new(ErrorCode::RateLimited, "the provider asked to slow down").into()),
        500..=599 => Err(ConnectError::new(
            ErrorCode::ProviderUnavailable,
            format!("the provider's revocation endpoint answered {status}"),
        )
        .into()),
        // The answer's text is not kept: a refusal may echo the token.
        _ => Err(ConnectError::new(
            ErrorCode::ProviderError,
            format!("the provider's revocation endpoint answered {status}"),
        )
        .into()),
    }
}
