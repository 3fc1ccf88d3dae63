//! Every envelope-encrypted column in the schema, and the passes over all of them: re-wrap
//! under the current master key (rotation), list the key versions in use (retirement), and
//! check that each value decrypts (restore, start-up).
//!
//! A feature that stores a new encrypted column adds one line to [`ENCRYPTED_COLUMNS`]; the
//! passes cover it from then on. Updates compare-and-swap on the old value, so a pass running
//! beside a live server never overwrites a value the server changed meanwhile.

use std::collections::BTreeSet;

use crate::crypto::{Aad, CryptoError, MasterKeyring, from_base64, key_version, to_base64};

use super::Db;

/// Where the AAD's `owner` comes from.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Constant(&'static str),
    Column(&'static str),
}

/// One encrypted column; values are base64 of the stored form, bound to
/// (table, column, id, owner).
#[derive(Debug, Clone, Copy)]
pub struct EncryptedColumn {
    pub table: &'static str,
    pub id_column: &'static str,
    pub column: &'static str,
    pub owner: Owner,
}

pub const ENCRYPTED_COLUMNS: &[EncryptedColumn] = &[
    EncryptedColumn {
        table: "signing_keys",
        id_column: "kid",
        column: "private_key",
        owner: Owner::Constant("system"),
    },
    EncryptedColumn {
        table: "provider_apps",
        id_column: "provider",
        column: "client_secret",
        owner: Owner::Constant("system"),
    },
    EncryptedColumn { table: "connections", id_column: "id", column: "credentials", owner: Owner::Column("user_id") },
    EncryptedColumn {
        table: "provider_webhook_secrets",
        id_column: "provider",
        column: "secret",
        owner: Owner::Constant("system"),
    },
    EncryptedColumn {
        table: "connection_authorizations",
        id_column: "state_hash",
        column: "secrets",
        owner: Owner::Column("user_id"),
    },
];

/// One encrypted value and where it lives.
#[derive(Debug, Clone)]
pub struct EncryptedValue {
    pub id: String,
    pub owner: String,
    pub value: String,
}

impl EncryptedColumn {
    fn owner_sql(&self) -> String {
        match self.owner {
            Owner::Constant(_) => "''".to_owned(),
            Owner::Column(c) => c.to_owned(),
        }
    }

    /// Up to `limit` values with an id after `after`, in id order.
    pub async fn page(&self, db: &Db, after: &str, limit: i64) -> Result<Vec<EncryptedValue>, sqlx::Error> {
        let sql = format!(
            "SELECT {id}, {owner}, {col} FROM {table} WHERE {id} > $1 ORDER BY {id} LIMIT $2",
            id = self.id_column,
            owner = self.owner_sql(),
            col = self.column,
            table = self.table,
        );
        let rows: Vec<(String, String, String)> =
            with_pool!(db, "encrypted.page", |conn| sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after)
                .bind(limit)
                .fetch_all(conn)
                .await)?;
        Ok(rows
            .into_iter()
            .map(|(id, owner, value)| {
                let owner = match self.owner {
                    Owner::Constant(c) => c.to_owned(),
                    Owner::Column(_) => owner,
                };
                EncryptedValue { id, owner, value }
            })
            .collect())
    }

    /// Replaces `old` by `new` unless the value changed meanwhile; true when replaced.
    pub async fn swap(&self, db: &Db, id: &str, old: &str, new: &str) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "UPDATE {table} SET {col} = $3 WHERE {id} = $1 AND {col} = $2",
            table = self.table,
            col = self.column,
            id = self.id_column,
        );
        with_pool!(db, "encrypted.swap", |conn| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(conn)
                .await
                .map(|r| r.rows_affected() == 1)
        })
    }

    pub fn aad<'a>(&'a self, value: &'a EncryptedValue) -> Aad<'a> {
        Aad::new(self.table, self.column, &value.id, &value.owner)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    pub current: u64,
    /// Values that changed under us; the next pass takes them.
    pub raced: u64,
    /// Whether the pass stopped early (`max_values`), to be resumed.
    pub incomplete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("database error")]
    Storage(#[from] sqlx::Error),
    #[error("{table}.{column} of {id} does not decrypt")]
    Decrypt {
        table: &'static str,
        column: &'static str,
        id: String,
        #[source]
        source: CryptoError,
    },
}

impl PassError {
    fn decrypt(column: &EncryptedColumn, value: &EncryptedValue, source: CryptoError) -> Self {
        Self::Decrypt { table: column.table, column: column.column, id: value.id.clone(), source }
    }
}

const BATCH: i64 = 100;

/// Walks every value of every encrypted column in id order, a page at a time.
struct Walk<'a> {
    db: &'a Db,
    column: usize,
    after: String,
    page: std::vec::IntoIter<EncryptedValue>,
}

impl<'a> Walk<'a> {
    fn new(db: &'a Db) -> Self {
        Self { db, column: 0, after: String::new(), page: Vec::new().into_iter() }
    }

    async fn next(&mut self) -> Result<Option<(&'static EncryptedColumn, EncryptedValue)>, sqlx::Error> {
        loop {
            let Some(column) = ENCRYPTED_COLUMNS.get(self.column) else { return Ok(None) };
            if let Some(value) = self.page.next() {
                self.after.clone_from(&value.id);
                return Ok(Some((column, value)));
            }
            let page = column.page(self.db, &self.after, BATCH).await?;
            if page.is_empty() {
                self.column += 1;
                self.after.clear();
            }
            self.page = page.into_iter();
        }
    }
}

/// Re-wraps every value not under the primary key, at most `max_values` of them (all when
/// `None`). Idempotent: running it again resumes where an interrupted pass stopped.
pub async fn rewrap_all(db: &Db, keyring: &MasterKeyring, max_values: Option<u64>) -> Result<RewrapReport, PassError> {
    let mut report = RewrapReport::default();
    let mut walk = Walk::new(db);
    while let Some((column, value)) = walk.next().await? {
        let stored = from_base64(&value.value).map_err(|e| PassError::decrypt(column, &value, e))?;
        if !keyring.needs_rewrap(&stored) {
            report.current += 1;
            continue;
        }
        if max_values.is_some_and(|max| report.rewrapped >= max) {
            report.incomplete = true;
            return Ok(report);
        }
        let fresh = keyring.rewrap(&column.aad(&value), &stored).map_err(|e| PassError::decrypt(column, &value, e))?;
        if column.swap(db, &value.id, &value.value, &to_base64(&fresh)).await? {
            report.rewrapped += 1;
        } else {
            report.raced += 1;
        }
    }
    Ok(report)
}

/// The master-key versions that stored values use.
pub async fn versions_in_use(db: &Db) -> Result<BTreeSet<u32>, PassError> {
    let mut versions = BTreeSet::new();
    let mut walk = Walk::new(db);
    while let Some((column, value)) = walk.next().await? {
        let version = from_base64(&value.value)
            .and_then(|stored| key_version(&stored))
            .map_err(|e| PassError::decrypt(column, &value, e))?;
        versions.insert(version);
    }
    Ok(versions)
}

/// Decrypts every stored value; the first that fails is the error. Returns how many.
pub async fn check_all_decrypt(db: &Db, keyring: &MasterKeyring) -> Result<u64, PassError> {
    let mut count = 0;
    let mut walk = Walk::new(db);
    while let Some((column, value)) = walk.next().await? {
        from_base64(&value.value)
            .and_then(|stored| keyring.decrypt(&column.aad(&value), &stored))
            .map_err(|e| PassError::decrypt(column, &value, e))?;
        count += 1;
    }
    Ok(count)
}
