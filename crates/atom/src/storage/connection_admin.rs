//! SQL of the admin view of every connection: the filtered listing, the counts per provider
//! and status. Reads only; nothing here returns the encrypted `credentials` column.

use super::Db;

/// A connection as the admin view lists it: no credential column at all.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminConnectionRow {
    pub id: String,
    pub user_id: String,
    pub owner_email: Option<String>,
    pub provider: String,
    pub auth_kind: String,
    pub account_id: String,
    pub label: String,
    pub status: String,
    pub scopes: String,
    pub params: String,
    pub expires_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The listing's filters, each unset or an exact match (`label`: a case-insensitive
/// substring); `before` is the cursor, `(created_at, id)` of the last row shown.
#[derive(Debug, Clone, Default)]
pub struct AdminFilter {
    pub status: Option<String>,
    pub provider: Option<String>,
    pub owner: Option<String>,
    pub label: Option<String>,
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

macro_rules! admin_columns {
    () => {
        "c.id, c.user_id, u.email AS owner_email, c.provider, c.auth_kind, c.account_id, c.label, c.status, \
         c.scopes, c.params, c.expires_at, c.last_refresh_at, c.last_error, c.created_at, c.updated_at \
         FROM connections c LEFT JOIN users u ON u.id = c.user_id"
    };
}

/// Newest first.
const LIST_SQL: &str = concat!(
    "SELECT ",
    admin_columns!(),
    " WHERE ($1 IS NULL OR c.status = $1) AND ($2 IS NULL OR c.provider = $2) AND ($3 IS NULL OR c.user_id = $3) \
     AND ($4 IS NULL OR lower(c.label) LIKE $4 ESCAPE '\\') \
     AND (c.created_at < $5 OR (c.created_at = $5 AND c.id < $6)) \
     ORDER BY c.created_at DESC, c.id DESC LIMIT $7"
);

/// `%`, `_` and `\` of a user's text taken literally in a LIKE pattern.
fn like_contains(text: &str) -> String {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub async fn list(db: &Db, f: &AdminFilter) -> Result<Vec<AdminConnectionRow>, sqlx::Error> {
    let (created, id) = f.before.clone().unwrap_or((i64::MAX, String::new()));
    let label = f.label.as_deref().map(like_contains);
    with_pool!(db, "connections.admin_list", |conn| {
        sqlx::query_as(LIST_SQL)
            .bind(&f.status)
            .bind(&f.provider)
            .bind(&f.owner)
            .bind(&label)
            .bind(created)
            .bind(&id)
            .bind(f.limit)
            .fetch_all(conn)
            .await
    })
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<AdminConnectionRow>, sqlx::Error> {
    const SQL: &str = concat!("SELECT ", admin_columns!(), " WHERE c.id = $1");
    with_pool!(db, "connections.admin_by_id", |conn| sqlx::query_as(SQL).bind(id).fetch_optional(conn).await)
}

/// `(provider, status, count)` over every connection.
pub async fn counts(db: &Db) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    with_pool!(db, "connections.admin_counts", |conn| {
        sqlx::query_as(
            "SELECT provider, status, count(*) FROM connections GROUP BY provider, status ORDER BY provider, status",
        )
        .fetch_all(conn)
        .await
    })
}
