//! SQL of JWT signing keys. The private key column holds an envelope-encrypted value.

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    /// Base64 of the envelope ciphertext of the private key.
    pub private_key: String,
    pub public_jwk: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

/// Live keys, newest first: the first is the current signing key.
pub async fn live(db: &Db) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    with_pool!(db, "signing_keys.live", |conn| {
        sqlx::query_as(
            "SELECT kid, algorithm, private_key, public_jwk, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid",
        )
        .fetch_all(conn)
        .await
    })
}

/// `(kid, public JWK)` of the live keys, newest first; nothing secret is read.
pub async fn live_public_jwks(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    with_pool!(db, "signing_keys.live_public_jwks", |conn| {
        sqlx::query_as(
            "SELECT kid, public_jwk FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid",
        )
        .fetch_all(conn)
        .await
    })
}

pub async fn all(db: &Db) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    with_pool!(db, "signing_keys.all", |conn| {
        sqlx::query_as(
            "SELECT kid, algorithm, private_key, public_jwk, created_at, retired_at FROM signing_keys ORDER BY kid",
        )
        .fetch_all(conn)
        .await
    })
}

pub async fn insert(tx: &mut Tx, row: &SigningKeyRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "signing_keys.insert", |conn| {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&row.kid)
        .bind(&row.algorithm)
        .bind(&row.private_key)
        .bind(&row.public_jwk)
        .bind(row.created_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

pub async fn retire(tx: &mut Tx, kid: &str, now: i64) -> Result<(), sqlx::Error> {
    with_tx!(tx, "signing_keys.retire", |conn| {
        sqlx::query("UPDATE signing_keys SET retired_at = $2 WHERE kid = $1 AND retired_at IS NULL")
            .bind(kid)
            .bind(now)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// Replaces a key's encrypted private key (master key rotation).
pub async fn set_private_key(tx: &mut Tx, kid: &str, private_key: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, "signing_keys.set_private_key", |conn| {
        sqlx::query("UPDATE signing_keys SET private_key = $2 WHERE kid = $1")
            .bind(kid)
            .bind(private_key)
            .execute(conn)
            .await
            .map(drop)
    })
}
