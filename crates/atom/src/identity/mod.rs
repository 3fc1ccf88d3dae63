//! Identity: accounts, sessions (access JWTs and rotating refresh tokens), API keys, roles,
//! login throttling, and the authentication of every protected request.
//!
//! [`Identity`] is the shared service: it holds the signing keys (reloaded from the
//! database on an unknown `kid` and once a minute, so a rotation by one node or the CLI
//! reaches every node) and reads account status and API keys through the cache
//! ([`crate::cache`]). Every change of an account or a key invalidates its entry after the
//! commit, on every node with Redis; where an invalidation cannot reach (several nodes
//! without Redis, Redis down during the write) a disabled account's access token or a
//! revoked key works for at most 30 s (account status) or the cache TTL (API keys).
//!
//! An access token is accepted only while its session lives. Each token carries its session
//! (refresh-token family) in its `sid` claim; the cached account status holds the sessions
//! revoked lately (logout, a stolen refresh token) and the time before which every token of
//! the account is refused (`tokens_valid_after`: a password change, a disable or re-enable),
//! so the check costs no database read per request. Tokens without a `sid` are refused: none
//! can be logged out. After the commit of such a change the identity code publishes it on the
//! [`crate::bus`], and every node closes the Socket.io connections that used those
//! credentials.
//! Invariants: no password, token or key secret is stored, cached or logged, only argon2id
//! or SHA-256 of it; every change of an account and its audit row commit together.

pub mod accounts;
pub mod api_keys;
pub mod auth;
pub mod passwords;
pub mod routes;
mod sessions;
pub mod signing;
mod throttle;
pub mod tokens;
mod verified;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use auth::{Credential, Principal, Role};

use crate::bus::{Bus, Event, EventKind};
use crate::cache::{Cache, Namespace};
use crate::config::{AuthConfig, Config};
use crate::crypto::MasterKeyring;
use crate::error::ApiError;
use crate::storage::{Db, now_ms, sessions as session_sql, users};
use tokens::{AccessTokens, TokenConfig, TokenError};

/// The longest an account's status (role, disabled flag, revoked sessions) is cached (less
/// when `cache.ttl_secs` is less): the bound on how long a disabled account's or a revoked
/// session's unexpired access token keeps working on a node that the invalidation could not
/// reach.
const STATUS_TTL: Duration = Duration::from_secs(30);
/// How often signing keys are re-read from the database.
const KEY_RELOAD_EVERY: Duration = Duration::from_secs(60);
/// The soonest an unknown `kid` may trigger another reload.
const KEY_RELOAD_MIN_GAP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("database error")]
    Storage(#[from] sqlx::Error),
    #[error(transparent)]
    Signing(#[from] signing::SigningError),
    #[error("invalid token settings")]
    TokenConfig(#[from] tokens::TokenConfigError),
    #[error("bootstrap admin")]
    Bootstrap(#[from] accounts::CreateAccountError),
}

/// What authentication needs of an account; cached under [`Namespace::USER`]. No field has a
/// serde default: an entry of an older shape (another version's node) fails to decode and is
/// loaded again, rather than read as "nothing revoked".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct UserStatus {
    role: Role,
    disabled: bool,
    /// Milliseconds since the Unix epoch; access tokens issued in an earlier second are refused.
    tokens_valid_after: i64,
    /// Sessions revoked within an access token's lifetime: their tokens are refused.
    revoked_sessions: RevokedSessions,
}

impl UserStatus {
    /// Whether the access token with `claims` may act for this account.
    fn accepts(&self, claims: &tokens::AccessClaims) -> bool {
        // `iat` has whole seconds: a token issued in the second of the change itself passes
        // here (a sign-in just after it must work) and is refused by its revoked session.
        let issued_ms = i64::try_from(claims.iat).unwrap_or(i64::MAX).saturating_mul(1000);
        !self.disabled
            && issued_ms >= self.tokens_valid_after - self.tokens_valid_after.rem_euclid(1000)
            && claims.sid.as_deref().is_some_and(|sid| !self.revoked_sessions.contains(sid))
    }
}

/// A shared list, so that reading a cached status in process copies a pointer, not the list.
#[derive(Debug, Clone, Default)]
struct RevokedSessions(Arc<[String]>);

impl RevokedSessions {
    fn contains(&self, sid: &str) -> bool {
        self.0.iter().any(|s| s == sid)
    }
}

impl serde::Serialize for RevokedSessions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

impl<'de> serde::Deserialize<'de> for RevokedSessions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(deserializer).map(|v| Self(v.into()))
    }
}

fn session_ended() -> ApiError {
    ApiError::Unauthorized { error: "invalid_token", description: "The session has ended; sign in again." }
}

fn account_disabled() -> ApiError {
    ApiError::Unauthorized { error: "invalid_token", description: "The account is disabled." }
}

/// The identity service shared by every request.
#[derive(Debug)]
pub struct Identity {
    db: Db,
    keyring: RwLock<Arc<MasterKeyring>>,
    /// Re-read with the signing keys, so that a master-key rotation by `atom keys rotate`
    /// reaches running servers. `None` when the key comes from ATOM_MASTER_KEY.
    keyring_file: Option<std::path::PathBuf>,
    token_config: TokenConfig,
    tokens: RwLock<Arc<AccessTokens>>,
    last_reload: Mutex<Instant>,
    pub settings: AuthConfig,
    cache: Cache,
    key_use: api_keys::UseRecorder,
    /// Access tokens already verified: an EdDSA verification costs tens of microseconds, a
    /// hit here a small fraction of one. The account's status is still checked on every
    /// request.
    verified: verified::VerifiedTokens,
    /// Counts the changes of account statuses made on this node ([`Identity::forget_user_status`]):
    /// the verified tokens' status memos hold only within one generation.
    status_generation: AtomicU64,
    /// Where revoked credentials are announced to every node's live connections.
    bus: Bus,
}

impl Identity {
    /// Loads the signing keys (creating the first one on a new installation) and creates the
    /// bootstrap admin when configured and no account exists yet.
    pub async fn start(
        db: &Db,
        keyring: Arc<MasterKeyring>,
        config: &Config,
        cache: Cache,
        bus: Bus,
    ) -> Result<Self, IdentityError> {
        let mut token_config = TokenConfig::new(config.token_issuer(), config.auth.audience.clone());
        token_config.access_ttl = Duration::from_secs(config.auth.access_ttl_secs);
        passwords::warm_up().await;
        let keys = signing::load_or_create(db, &keyring, &cache).await?;
        let tokens = AccessTokens::new(token_config.clone(), keys)?;
        let keyring_file = config.master_key.is_none().then(|| {
            config.master_key_file.clone().unwrap_or_else(|| config.data_dir.join(crate::crypto::KEY_FILE_NAME))
        });
        let identity = Self {
            db: db.clone(),
            keyring: RwLock::new(keyring),
            keyring_file,
            token_config,
            tokens: RwLock::new(Arc::new(tokens)),
            last_reload: Mutex::new(Instant::now()),
            settings: config.auth.clone(),
            cache,
            key_use: api_keys::UseRecorder::new(config.cache.max_entries),
            verified: verified::VerifiedTokens::new(config.cache.max_entries),
            status_generation: AtomicU64::new(0),
            bus,
        };
        if let (Some(email), Some(password)) =
            (&config.auth.bootstrap_admin_email, &config.auth.bootstrap_admin_password)
            && users::count(db).await? == 0
        {
            accounts::create_admin(db, email, password.clone()).await?;
            tracing::info!("created the bootstrap admin account");
        }
        Ok(identity)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn keyring(&self) -> Arc<MasterKeyring> {
        self.keyring.read().map(|k| Arc::clone(&k)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// The current token issuer/verifier, reloaded from the database when it is stale.
    pub async fn tokens(&self) -> Arc<AccessTokens> {
        let stale = self.last_reload.lock().map(|t| t.elapsed() >= KEY_RELOAD_EVERY).unwrap_or(true);
        if stale {
            self.reload_keys().await;
        }
        self.tokens.read().map(|t| Arc::clone(&t)).unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// Re-reads the signing keys; on failure keeps the ones it has and logs why.
    pub async fn reload_keys(&self) {
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Instant::now();
        }
        if let Some(path) = &self.keyring_file {
            match MasterKeyring::load(path) {
                Ok(fresh) => {
                    if let Ok(mut slot) = self.keyring.write() {
                        *slot = Arc::new(fresh);
                    }
                }
                Err(e) => tracing::warn!(error = %crate::error::ErrorChain(&e), "could not reload the master key file"),
            }
        }
        let keys = match signing::load(&self.db, &self.keyring()).await {
            Ok(Some(keys)) => keys,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %crate::error::ErrorChain(&e), "could not reload signing keys");
                return;
            }
        };
        match AccessTokens::new(self.token_config.clone(), keys) {
            Ok(tokens) => {
                let changed = self.tokens.read().map(|t| t.keys().jwks() != tokens.keys().jwks()).unwrap_or(true);
                if let Ok(mut slot) = self.tokens.write() {
                    *slot = Arc::new(tokens);
                }
                // The published keys must include any key this node may now sign with; the
                // rotating process invalidated them too, but without Redis only on its node.
                if changed {
                    self.cache.invalidate(Namespace::JWKS, signing::JWKS_KEY).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reloaded signing keys are unusable"),
        }
    }

    /// The principal of a credential if everything it needs is already in process: an access
    /// token verified before, or an API key cached with its use recorded lately, and the
    /// account's status cached here (for a token, remembered by its verified entry for a
    /// second: `verified::StatusMemo`). `None` means "ask
    /// [`Identity::authenticate_access_token`]", not "refused": the request path's fast way,
    /// which neither awaits nor allocates beyond the principal. The credential is the header's
    /// bytes, unchecked: a hit means they equal a credential that passed every check.
    pub fn authenticate_cached(&self, credential: &[u8]) -> Option<Principal> {
        if credential.starts_with(api_keys::API_KEY_PREFIX.as_bytes()) {
            let credential = std::str::from_utf8(credential).ok()?;
            let key = api_keys::verify_cached(&self.cache, &self.key_use, credential)?;
            let status = self.cache.peek::<UserStatus>(Namespace::USER, &key.user_id)?;
            return (!status.disabled).then(|| key_principal(key, status));
        }
        let now = unix_now();
        // Read before the status: a change after this read makes the memo stale.
        let generation = self.status_generation.load(Ordering::Acquire);
        self.verified.with(credential, now, |claims, memo| {
            let role = match memo.role(now, generation) {
                Some(role) => role,
                None => {
                    let status = self.cache.peek::<UserStatus>(Namespace::USER, &claims.sub)?;
                    if !status.accepts(claims) {
                        return None;
                    }
                    memo.set(status.role, now, generation);
                    status.role
                }
            };
            Some(principal_of(Arc::clone(claims), role))
        })
    }

    pub async fn authenticate_access_token(&self, token: &str) -> Result<Principal, ApiError> {
        let now = unix_now();
        let claims = match self.verified.get(token.as_bytes(), now) {
            Some(claims) => claims,
            None => {
                // Boxed: the full check may reload keys from the database, a large future.
                let claims = Arc::new(Box::pin(self.verify_access_token(token)).await?);
                self.verified.insert(token, Arc::clone(&claims), now);
                claims
            }
        };
        let status = self.user_status(&claims.sub).await?.filter(|s| !s.disabled).ok_or_else(account_disabled)?;
        if !status.accepts(&claims) {
            return Err(session_ended());
        }
        Ok(principal_of(claims, status.role))
    }

    /// The full check of a token's signature and claims.
    async fn verify_access_token(&self, token: &str) -> Result<tokens::AccessClaims, ApiError> {
        match self.tokens().await.verify(token) {
            Err(TokenError::UnknownKey) => {
                // Perhaps another node rotated; look once more, but not on every bad token.
                let gap = self.last_reload.lock().map(|t| t.elapsed()).unwrap_or(KEY_RELOAD_MIN_GAP);
                if gap >= KEY_RELOAD_MIN_GAP {
                    self.reload_keys().await;
                }
                self.tokens().await.verify(token)
            }
            other => other,
        }
        .map_err(|e| ApiError::Unauthorized { error: "invalid_token", description: e.description() })
    }

    pub async fn authenticate_api_key(&self, token: &str) -> Result<Principal, ApiError> {
        let key = api_keys::verify(&self.db, &self.cache, &self.key_use, token).await?;
        let status = self.user_status(&key.user_id).await?.filter(|s| !s.disabled).ok_or_else(account_disabled)?;
        Ok(key_principal(key, status))
    }

    async fn user_status(&self, user_id: &str) -> Result<Option<UserStatus>, ApiError> {
        let load = || async {
            let Some(user) = users::status_by_id(&self.db, user_id).await? else { return Ok(None) };
            // A session revoked earlier than this has no unexpired access token left.
            let lifetime = self.token_config.access_ttl + self.token_config.leeway;
            let since = now_ms().saturating_sub(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX));
            let revoked = session_sql::revoked_families(&self.db, user_id, since).await?;
            Ok::<_, sqlx::Error>(Some(UserStatus {
                role: Role::parse(&user.role),
                disabled: user.disabled_at.is_some(),
                tokens_valid_after: user.tokens_valid_after,
                revoked_sessions: RevokedSessions(revoked.into()),
            }))
        };
        Ok(self.cache.get_or_load(Namespace::USER, user_id, Some(STATUS_TTL), load).await?)
    }

    /// Drops the cached status of an account after a change to it (on every node that the
    /// cache reaches).
    pub async fn forget_user_status(&self, user_id: &str) {
        self.cache.invalidate(Namespace::USER, user_id).await;
        // After the invalidation: a memo made from the old status carries an older generation.
        self.status_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// After the commit of a change that ended credentials of `user_id`: drops the account's
    /// cached status, then tells every node's live connections (through the bus).
    pub async fn credentials_revoked(&self, user_id: &str, kind: EventKind) {
        self.forget_user_status(user_id).await;
        self.bus.publish(Event { user_id: user_id.to_owned(), kind }).await;
    }
}

fn principal_of(claims: Arc<tokens::AccessClaims>, role: Role) -> Principal {
    Principal { user_id: claims.sub.clone(), role, credential: Credential::AccessToken { claims } }
}

fn key_principal(key: api_keys::StoredKey, status: UserStatus) -> Principal {
    let scopes = key.scopes.split_whitespace().map(str::to_owned).collect();
    Principal {
        user_id: key.user_id,
        role: status.role,
        credential: Credential::ApiKey {
            key_id: key.id,
            scopes,
            expires_at: key.expires_at,
            providers: key.providers.map(|p| p.split_whitespace().map(str::to_owned).collect()),
        },
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// SHA-256 hex of a high-entropy secret (refresh token, API key, invite code). A fast hash
/// is right here: the secrets are 256-bit random, so there is nothing to brute-force.
pub fn secret_hash(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// A URL-safe random secret of 256 bits.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
