//! SQL of accounts and invites.

use super::{Db, Tx};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub password_changed_at: i64,
    pub disabled_at: Option<i64>,
}

/// The columns of [`UserRow`], as a literal so that each query's SQL is one `const`.
macro_rules! columns {
    () => {
        "id, email, password_hash, role, created_at, updated_at, password_changed_at, disabled_at"
    };
}

/// Hot: every login.
pub const BY_EMAIL_SQL: &str = concat!("SELECT ", columns!(), " FROM users WHERE email = $1");
/// Hot: the account status behind every authenticated request (cached for seconds).
pub const BY_ID_SQL: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
/// Hot: what authentication needs of an account, on a miss of the cached status.
pub const STATUS_BY_ID_SQL: &str = "SELECT role, disabled_at, tokens_valid_after FROM users WHERE id = $1";
/// The admin listing. The cursor is always bound (`''` sorts first) rather than optional:
/// `($1 IS NULL OR email > $1)` would keep a cached generic plan from using the index.
/// Deleted accounts (tombstones) are not listed.
pub const PAGE_SQL: &str =
    concat!("SELECT ", columns!(), " FROM users WHERE email > $1 AND deleted_at IS NULL ORDER BY email LIMIT $2");

pub async fn insert(tx: &mut Tx, user: &UserRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "users.insert", |conn| {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, password_changed_at, disabled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.role)
        .bind(user.created_at)
        .bind(user.updated_at)
        .bind(user.password_changed_at)
        .bind(user.disabled_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Creates a built-in account (an agent's) unless it exists: several nodes may start at once.
/// It has no usable password: `password_hash` is a hash of a secret nobody keeps.
pub async fn ensure_account(
    db: &Db,
    id: &str,
    email: &str,
    password_hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    with_pool!(db, "users.ensure_builtin", |conn| {
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, created_at, updated_at, password_changed_at) \
             VALUES ($1, $2, $3, 'user', $4, $4, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

pub async fn by_email(db: &Db, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    with_pool!(db, "users.by_email", |conn| sqlx::query_as(BY_EMAIL_SQL).bind(email).fetch_optional(conn).await)
}

/// What authentication needs of an account: role, disabled time, and the time before which
/// its access tokens are refused.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StatusRow {
    pub role: String,
    pub disabled_at: Option<i64>,
    pub tokens_valid_after: i64,
}

pub async fn status_by_id(db: &Db, id: &str) -> Result<Option<StatusRow>, sqlx::Error> {
    with_pool!(db, "users.status_by_id", |conn| sqlx::query_as(STATUS_BY_ID_SQL).bind(id).fetch_optional(conn).await)
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
    with_pool!(db, "users.by_id", |conn| sqlx::query_as(BY_ID_SQL).bind(id).fetch_optional(conn).await)
}

/// A page of accounts ordered by email, after `after_email` (the cursor).
pub async fn list(db: &Db, after_email: Option<&str>, limit: i64) -> Result<Vec<UserRow>, sqlx::Error> {
    let after_email = after_email.unwrap_or("");
    with_pool!(db, "users.page", |conn| {
        sqlx::query_as(PAGE_SQL).bind(after_email).bind(limit).fetch_all(conn).await
    })
}

/// The domain of built-in accounts' emails (the echo agent's), reserved by RFC 2606.
pub const BUILTIN_EMAIL_DOMAIN: &str = "agents.atom.invalid";

/// People's accounts: built-in ones (emails in [`BUILTIN_EMAIL_DOMAIN`]) do not count, so an
/// installation with only those is still empty for the bootstrap admin.
pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    with_pool!(db, "users.count", |conn| {
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email NOT LIKE $1")
            .bind(format!("%@{BUILTIN_EMAIL_DOMAIN}"))
            .fetch_one(conn)
            .await
    })
}

/// Admin accounts that can still sign in.
pub async fn count_active_admins(db: &Db) -> Result<i64, sqlx::Error> {
    with_pool!(db, "users.count_active_admins", |conn| {
        sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL AND deleted_at IS NULL",
        )
        .fetch_one(conn)
        .await
    })
}

pub async fn set_password(tx: &mut Tx, id: &str, password_hash: &str, now: i64) -> Result<u64, sqlx::Error> {
    with_tx!(tx, "users.set_password", |conn| {
        sqlx::query(
            "UPDATE users SET password_hash = $2, password_changed_at = $3, updated_at = $3, \
             tokens_valid_after = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(password_hash)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })
}

/// Disables (`Some(now)`) or re-enables (`None`) an account; either way its access tokens
/// issued before `now` are refused from then on. A deleted account is not found.
pub async fn set_disabled(tx: &mut Tx, id: &str, disabled_at: Option<i64>, now: i64) -> Result<u64, sqlx::Error> {
    with_tx!(tx, "users.set_disabled", |conn| {
        sqlx::query(
            "UPDATE users SET disabled_at = $2, updated_at = $3, tokens_valid_after = $3 \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(disabled_at)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InviteRow {
    pub code_hash: String,
    pub created_by: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub async fn insert_invite(tx: &mut Tx, invite: &InviteRow) -> Result<(), sqlx::Error> {
    with_tx!(tx, "invites.insert", |conn| {
        sqlx::query(
            "INSERT INTO invites (code_hash, created_by, email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&invite.code_hash)
        .bind(&invite.created_by)
        .bind(&invite.email)
        .bind(invite.created_at)
        .bind(invite.expires_at)
        .execute(conn)
        .await
        .map(drop)
    })
}

/// Claims an unused, unexpired invite that admits `email` (marks it used); false when there
/// is none. Run before the account is inserted, so that a refused invite is answered before
/// anything reveals whether the email is registered; [`set_invite_user`] then names the
/// account it admitted, in the same transaction.
pub async fn claim_invite(tx: &mut Tx, code_hash: &str, email: &str, now: i64) -> Result<bool, sqlx::Error> {
    with_tx!(tx, "invites.claim", |conn| {
        sqlx::query(
            "UPDATE invites SET used_at = $3 WHERE code_hash = $1 AND used_at IS NULL \
             AND expires_at > $3 AND (email IS NULL OR email = $2)",
        )
        .bind(code_hash)
        .bind(email)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() == 1)
    })
}

/// Records the account a claimed invite admitted.
pub async fn set_invite_user(tx: &mut Tx, code_hash: &str, user_id: &str) -> Result<(), sqlx::Error> {
    with_tx!(tx, "invites.set_user", |conn| {
        sqlx::query("UPDATE invites SET used_by = $2 WHERE code_hash = $1")
            .bind(code_hash)
            .bind(user_id)
            .execute(conn)
            .await
            .map(drop)
    })
}

/// The statements that erase an account's data, in order, each binding the user id as `$1`:
/// its sessions, API keys and unused invites, its conversation memberships, then the
/// conversations it owned that no member is left in (their messages cascade). Its messages in
/// conversations others are still in stay, from the tombstone. Its connections are the vault's
/// to revoke and delete, in the same transaction, before these run; the last statement sweeps
/// its pending authorizations and any connection completed meanwhile.
const ERASE_SQL: [(&str, &str); 7] = [
    ("users.erase.sessions", "DELETE FROM refresh_tokens WHERE user_id = $1"),
    ("users.erase.api_keys", "DELETE FROM api_keys WHERE user_id = $1"),
    ("users.erase.invites", "DELETE FROM invites WHERE created_by = $1 AND used_at IS NULL"),
    ("users.erase.memberships", "DELETE FROM conversation_members WHERE user_id = $1"),
    (
        "users.erase.conversations",
        "DELETE FROM conversations WHERE owner_id = $1 AND NOT EXISTS \
         (SELECT 1 FROM conversation_members m WHERE m.conversation_id = conversations.id)",
    ),
    ("users.erase.authorizations", "DELETE FROM connection_authorizations WHERE user_id = $1"),
    ("users.erase.connections", "DELETE FROM connections WHERE user_id = $1"),
];

/// Erases account `id`'s data (see [`ERASE_SQL`]) and turns its row into a tombstone: no
/// email (a placeholder unique to it), no usable password, disabled, `deleted_at` set, every
/// access token issued before `now` refused. Rows erased; 0 when there is no such account or
/// it was already deleted (then nothing is changed).
pub async fn delete_account(tx: &mut Tx, id: &str, now: i64) -> Result<u64, sqlx::Error> {
    let tombstoned = with_tx!(&mut *tx, "users.delete", |conn| {
        sqlx::query(
            "UPDATE users SET email = $2, password_hash = '!', disabled_at = $3, deleted_at = $3, \
             updated_at = $3, tokens_valid_after = $3 WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(format!("deleted-{id}@deleted.invalid"))
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    if tombstoned == 0 {
        return Ok(0);
    }
    let mut erased = 0;
    for (name, statement) in ERASE_SQL {
        erased += with_tx!(&mut *tx, name, |conn| {
            sqlx::query(statement).bind(id).execute(conn).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(1 + erased)
}
