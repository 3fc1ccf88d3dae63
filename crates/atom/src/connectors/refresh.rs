//! Keeping credentials alive: an access token is refreshed when it is asked for within
//! `connectors.refresh_margin_secs` of its expiry, and by a background worker before then.
//!
//! Refresh is single-flight per connection, in two layers:
//! - in this process, a lock per connection: callers queue behind the one refreshing;
//! - across processes sharing the database, a lease on the connection's row
//!   (`refresh_holder`, `refresh_lease_until`), taken by a conditional `UPDATE`; a process
//!   that finds another's lease waits and re-reads.
//!
//! Every caller remembers the credentials it saw when it decided a refresh was due, and
//! re-reads the row after each wait: when they changed meanwhile, another caller (here or in
//! another process) stored new tokens, and those are used. So a thousand callers on an
//! expired token make one request to the provider. The new access token, a rotated refresh
//! token and the kept values the answer moved (Salesforce's `instance_url`, checked by its
//! pattern like at the exchange; a malformed one fails the refresh and stores nothing) are
//! stored in one statement, only while the lease is still this caller's (a holder whose
//! lease ran out cannot overwrite newer tokens).
//!
//! `invalid_grant` marks the connection `needs_reauth`, audits it and tells its owner on the
//! bus. A transient failure (timeout, 5xx, 429) is retried with back-off (`Retry-After`
//! when the provider sends one), then recorded in `last_error`; the connection stays
//! usable while its token is still valid.
//!
//! A sign-in's session (Tableau's, [`super::lookup::sign_in`]) is renewed here too, by
//! signing in again with the stored credential. What an outcome stores is
//! [`super::refresh_outcome`]'s; the background pass is [`super::refresh_worker`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{ConnectError, ConnectorError, ErrorCode};
use super::exchange;
use super::requests::ClientCredentials;
use super::service::Connectors;
use super::spec::AuthSpec;
use super::template::{Lookup, Template};
use super::tokens;
use super::vault::{self, Credentials};
use crate::error::ApiError;
use crate::storage::connections::{self as sql, ConnectionRow};
use crate::storage::now_ms;

/// The longest back-off between two attempts, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a caller that waits on another process's lease re-reads the row.
const LEASE_POLL: Duration = Duration::from_millis(50);
/// The `type` of the notification an owner's sockets get when a connection needs them.
pub const NEEDS_REAUTH: &str = "connection.needs_reauth";

/// A usable access token, for the agent's calls.
pub struct AccessToken {
    pub token: String,
    pub token_type: Option<String>,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl Connectors {
    /// Whether `row`'s access token is within the refresh margin of its expiry at `now`.
    fn due(&self, row: &ConnectionRow, now: i64) -> bool {
        row.expires_at.is_some_and(|expires| expires.saturating_sub(self.refresh_margin_ms()) <= now)
    }

    /// The user's connection's access token, refreshed first when it is due.
    pub async fn access_token(&self, user_id: &str, id: &str) -> Result<AccessToken, ConnectorError> {
        let row = vault::get_for_user(self.db(), user_id, id).await?.ok_or(ApiError::NotFound)?;
        let row = self.fresh(row).await?;
        let credentials = Credentials::open(&self.keyring(), &row)?;
        let token = credentials.access_token.clone().ok_or_else(|| {
            ConnectError::new(ErrorCode::WrongAuthKind, "this connection holds a credential, not an access token")
        })?;
        Ok(AccessToken { token, token_type: credentials.token_type.clone(), expires_at: row.expires_at })
    }

    /// The user's connection, refreshed when due; for the refresh route.
    pub async fn refresh_for_user(&self, user_id: &str, id: &str) -> Result<ConnectionRow, ConnectorError> {
        let row = vault::get_for_user(self.db(), user_id, id).await?.ok_or(ApiError::NotFound)?;
        self.fresh(row).await
    }

    /// `row`, or its refreshed successor when its token is due.
    pub(crate) async fn fresh(&self, row: ConnectionRow) -> Result<ConnectionRow, ConnectorError> {
        if row.status == "needs_reauth" {
            return Err(
                ConnectError::new(ErrorCode::NeedsReauth, "the user must authorize this connection again").into()
            );
        }
        if !self.due(&row, now_ms()) {
            return Ok(row);
        }
        self.refresh(&row.id, &row.credentials).await
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }

    fn forget_lock(&self, id: &str) {
        let mut locks = self.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only the map's own reference left: nobody waits on it.
        if locks.get(id).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(id);
        }
    }

    /// Refreshes connection `id`, whose credentials were `seen` (stored form) when the
    /// caller found them due; single-flight as the module says.
    pub async fn refresh(&self, id: &str, seen: &str) -> Result<ConnectionRow, ConnectorError> {
        self.refresh_single_flight(id, seen, false).await
    }

    /// Refreshes connection `id` now, due or not (the admin's forced refresh); single-flight
    /// like [`Self::refresh`], so callers already waiting share its outcome.
    pub async fn force_refresh(&self, id: &str) -> Result<ConnectionRow, ConnectorError> {
        let row = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
        if row.status == "needs_reauth" {
            return Err(
                ConnectError::new(ErrorCode::NeedsReauth, "the user must authorize this connection again").into()
            );
        }
        self.refresh_single_flight(id, &row.credentials, true).await
    }

    /// Refreshes connection `id` because the provider refused its access token `seen` (a 401
    /// to the proxy), due or not; single-flight all the same, so that many calls refused at
    /// once make one refresh, and a caller that finds the tokens changed since `seen` uses
    /// the new ones.
    pub async fn refresh_rejected(&self, id: &str, seen: &str) -> Result<ConnectionRow, ConnectorError> {
        self.refresh_single_flight(id, seen, true).await
    }

    async fn refresh_single_flight(
        &self,
        id: &str,
        seen: &str,
        rejected: bool,
    ) -> Result<ConnectionRow, ConnectorError> {
        let lock = self.lock_for(id);
        let result = {
            let _held = lock.lock().await;
            self.refresh_locked(id, seen, rejected).await
        };
        drop(lock);
        self.forget_lock(id);
        result
    }

    async fn refresh_locked(&self, id: &str, seen: &str, rejected: bool) -> Result<ConnectionRow, ConnectorError> {
        let holder = uuid::Uuid::new_v4().to_string();
        let lease_ms = i64::try_from(self.settings().http_timeout_secs).unwrap_or(60).saturating_mul(1000)
            * i64::from(self.settings().refresh_attempts)
            + 10_000;
        let started = Instant::now();
        let row = loop {
            let row = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
            if row.credentials != seen || !(rejected || self.due(&row, now_ms())) {
                return Ok(row);
            }
            if row.status == "needs_reauth" {
                return Err(
                    ConnectError::new(ErrorCode::NeedsReauth, "the user must authorize this connection again").into()
                );
            }
            let now = now_ms();
            if sql::take_lease(self.db(), id, &holder, now, now + lease_ms).await? {
                // Re-read under the lease: another process may have stored new tokens
                // between this caller's read and its lease.
                let row = sql::by_id(self.db(), id).await?.ok_or(ApiError::NotFound)?;
                if row.credentials != seen {
                    sql::release_lease(self.db(), id, &holder).await?;
                    return Ok(row);
                }
                break row;
            }
            if started.elapsed() > Duration::from_millis(u64::try_from(lease_ms).unwrap_or(60_000)) {
                return Err(ConnectError::new(
                    ErrorCode::ProviderUnavailable,
                    "another node's refresh of this connection did not finish",
                )
                .into());
            }
            tokio::time::sleep(LEASE_POLL).await;
        };
        let result = self.refresh_at_provider(&row, &holder).await;
        if result.is_err() {
            // A failure path that stored nothing still frees the lease.
            let _ = sql::release_lease(self.db(), id, &holder).await;
        }
        result
    }

    /// Calls the provider with retries, stores the outcome; the lease is held.
    async fn refresh_at_provider(&self, row: &ConnectionRow, holder: &str) -> Result<ConnectionRow, ConnectorError> {
        let provider = row.provider.as_str();
        let template = self.template(provider).ok();
        if let Some(t) = template.as_ref().filter(|t| t.lookup.is_some_and(Lookup::signs_in)) {
            return self.sign_in_again(row, holder, t).await;
        }
        let spec = self.provider(provider)?;
        let AuthSpec::OAuth2(oauth) = &spec.auth else {
            return Err(ConnectError::new(ErrorCode::WrongAuthKind, "this connection has nothing to refresh").into());
        };
        let credentials = Credentials::open(&self.keyring(), row)?;
        let Some(refresh_token) = credentials.refresh_token.clone() else {
            return self.mark_needs_reauth(row, &ConnectError::new(ErrorCode::InvalidGrant, "no refresh token")).await;
        };
        let app = self.app(provider).await?;
        let values = super::endpoints::check_params(oauth, &super::endpoints::stored_params(oauth, &row.params))?;
        let oauth = &self.endpoints(oauth, &values, &app.client.client_id).await?;
        // The parameters and the values kept from the flow, all checked when they were stored.
        let mut stored = values.clone();
        let kept: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&row.params).unwrap_or_default();
        for (name, value) in kept {
            if let Some(value) = value.as_str() {
                stored.insert_trusted(&name, value);
            }
        }
        stored.insert_trusted("client_id", app.client.client_id.clone());
        let started = Instant::now();
        let (template, stored, app, refresh_token) = (template.as_deref(), &stored, &app, refresh_token.as_str());
        let outcome = self
            .with_retries(provider, move || async move {
                match template {
                    // A catalog provider: the refresh as its template says (body encoding,
                    // client authentication, where the tokens sit in the answer).
                    Some(t) => {
                        let client = ClientCredentials { id: &app.client.client_id, secret: &app.client.client_secret };
                        let endpoint =
                            t.oauth2.as_ref().and_then(|o| o.issuer.as_ref()).map(|_| oauth.token_url.as_str());
                        tokens::refresh(self.http(), t, stored, &client, refresh_token, endpoint).await
                    }
                    None => exchange::refresh(self.http(), oauth, &app.client, refresh_token).await,
                }
            })
            .await;
        self.store_outcome(row, holder, credentials, started, outcome).await
    }

    /// A sign-in's session renewed the way it began: signing in again with the stored
    /// credential (Tableau's personal access token). A refused credential needs its user
    /// again, as `invalid_grant` does; the session token and the values the sign-in gives
    /// (the site id) are stored like a refresh's.
    async fn sign_in_again(
        &self,
        row: &ConnectionRow,
        holder: &str,
        t: &Template,
    ) -> Result<ConnectionRow, ConnectorError> {
        let credentials = Credentials::open(&self.keyring(), row)?;
        let values = super::lookup::stored_values(t, &row.params, &credentials)?;
        let started = Instant::now();
        let values = &values;
        let outcome = self
            .with_retries(&row.provider, move || async move {
                let session = super::lookup::sign_in(self.http(), t, values).await?;
                Ok(exchange::TokenSet {
                    access_token: session.token,
                    refresh_token: None,
                    token_type: None,
                    expires_in: Some(session.lifetime_secs),
                    scope: None,
                    raw: serde_json::Map::new(),
                    kept: session.values,
                })
            })
            .await;
        self.store_outcome(row, holder, credentials, started, outcome).await
    }

    /// `attempt` until it succeeds, fails for good, or `connectors.refresh_attempts` ran out;
    /// a transient failure waits its back-off (`Retry-After` when given) first.
    async fn with_retries<F, Fut>(
        &self,
        provider: &str,
        mut attempt_once: F,
    ) -> Result<exchange::TokenSet, ConnectError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<exchange::TokenSet, ConnectError>>,
    {
        let attempts = self.settings().refresh_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match attempt_once().await {
                Err(e) if e.code.is_transient() && attempt < attempts => {
                    let backoff = e
                        .retry_after_secs
                        .map_or(Duration::from_millis(200 * 2u64.pow(attempt - 1)), Duration::from_secs)
                        .min(MAX_BACKOFF);
                    tracing::info!(provider, code = e.code.as_str(), attempt, ?backoff, "connector refresh: retrying");
                    tokio::time::sleep(backoff).await;
                }
                other => return other,
            }
        }
    }
}

pub use super::refresh_worker::spawn_worker;
