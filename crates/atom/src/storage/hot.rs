//! The hot queries: those that run on every request of some kind, or page through a table
//! that grows without bound, and so must be served by an index at any size.
//!
//! [`HOT_QUERIES`] lists each with the index it must use. The plan harness
//! (`tests/it/query_plans.rs`) seeds every listed table with 100,000 rows on PostgreSQL,
//! runs `EXPLAIN` on each entry, custom and generic plan alike, and fails when one does
//! not use its index or scans its table; it does the same on SQLite with `EXPLAIN QUERY
//! PLAN`. A feature that adds a hot query adds one line here (and, for a new table, one
//! seed statement to the harness).
//!
//! Invariant: `sql` is the very `const` the storage function runs, never a copy.

use super::{api_keys, audit, connections, conversations, sessions, users, webhooks};

/// The index a hot query must be served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// A lookup or range on the table's primary key: `<table>_pkey` on PostgreSQL; on
    /// SQLite the rowid (an `INTEGER PRIMARY KEY`) or the automatic index of a TEXT one.
    PrimaryKey,
    /// The first rows in primary-key order, up to a LIMIT (the newest row): an index scan
    /// on `<table>_pkey` on PostgreSQL; on SQLite a walk of the rowid table in its own
    /// order, which `EXPLAIN QUERY PLAN` shows as `SCAN <table>` without a sort.
    PrimaryKeyOrder,
    /// An index created by a migration, by name (the same in both dialects).
    Named(&'static str),
}

/// A typical parameter value, typed as the storage function binds it. The harness seeds
/// rows these values find: ids are `<kind>-<n>` (`user-4242`), emails `user<n>@example.com`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Text(&'static str),
    Int(i64),
    /// An unset optional filter of type TEXT.
    NullText,
    /// An unset optional filter of type BIGINT.
    NullInt,
}

#[derive(Debug, Clone, Copy)]
pub struct HotQuery {
    /// The query's name in metrics and logs.
    pub name: &'static str,
    pub table: &'static str,
    pub index: Index,
    pub sql: &'static str,
    /// One value per placeholder, `$1` first.
    pub sample_params: &'static [Sample],
}

use Index::{Named, PrimaryKey, PrimaryKeyOrder};
use Sample::{Int, NullInt, NullText, Text};

const NOW: i64 = 1_800_000_000_000;

/// Every hot query, one line each.
#[rustfmt::skip]
pub const HOT_QUERIES: &[HotQuery] = &[
    HotQuery { name: "users.by_email", table: "users", index: Named("users_email_key"), sql: users::BY_EMAIL_SQL, sample_params: &[Text("user4242@example.com")] },
    HotQuery { name: "users.by_id", table: "users", index: PrimaryKey, sql: users::BY_ID_SQL, sample_params: &[Text("user-4242")] },
    HotQuery { name: "users.page", table: "users", index: Named("users_email_key"), sql: users::PAGE_SQL, sample_params: &[Text("user4242@example.com"), Int(51)] },
    HotQuery { name: "users.status_by_id", table: "users", index: PrimaryKey, sql: users::STATUS_BY_ID_SQL, sample_params: &[Text("user-4242")] },
    HotQuery { name: "refresh_tokens.revoked_families", table: "refresh_tokens", index: Named("refresh_tokens_user_idx"), sql: sessions::REVOKED_FAMILIES_SQL, sample_params: &[Text("user-4242"), Int(NOW - 900_000)] },
    HotQuery { name: "refresh_tokens.by_hash", table: "refresh_tokens", index: Named("refresh_tokens_token_hash_key"), sql: sessions::BY_HASH_SQL, sample_params: &[Text("rthash-4242")] },
    HotQuery { name: "api_keys.by_prefix", table: "api_keys", index: Named("api_keys_prefix_key"), sql: api_keys::BY_PREFIX_SQL, sample_params: &[Text("pfx-4242")] },
    HotQuery { name: "api_keys.touch", table: "api_keys", index: PrimaryKey, sql: api_keys::TOUCH_SQL, sample_params: &[Text("key-4242"), Int(NOW), Int(NOW - 60_000)] },
    HotQuery { name: "api_keys.list_for_user", table: "api_keys", index: Named("api_keys_user_idx"), sql: api_keys::LIST_FOR_USER_SQL, sample_params: &[Text("user-4242"), Int(i64::MAX), Text(""), Int(51)] },
    HotQuery { name: "audit.list_by_actor", table: "audit_log", index: Named("audit_log_actor_idx"), sql: audit::LIST_BY_ACTOR_SQL, sample_params: &[Text("user-4242"), NullText, NullText, NullInt, NullInt, Int(i64::MAX), Int(101)] },
    HotQuery { name: "audit.list_by_action", table: "audit_log", index: Named("audit_log_action_idx"), sql: audit::LIST_BY_ACTION_SQL, sample_params: &[NullText, Text("action-7"), NullText, NullInt, NullInt, Int(i64::MAX), Int(101)] },
    HotQuery { name: "audit.list", table: "audit_log", index: PrimaryKey, sql: audit::LIST_SQL, sample_params: &[NullText, NullText, NullText, NullInt, NullInt, Int(50_000), Int(101)] },
    HotQuery { name: "connections.by_id", table: "connections", index: PrimaryKey, sql: connections::BY_ID_SQL, sample_params: &[Text("conn-4242")] },
    HotQuery { name: "connections.list_for_user", table: "connections", index: Named("connections_user_idx"), sql: connections::LIST_FOR_USER_SQL, sample_params: &[Text("user-4242"), Int(500)] },
    HotQuery { name: "connections.by_account", table: "connections", index: Named("connections_account_key"), sql: connections::BY_ACCOUNT_SQL, sample_params: &[Text("user-4243"), Text("provider-2"), Text("acct-4242")] },
    HotQuery { name: "connections.due", table: "connections", index: Named("connections_expiry_idx"), sql: connections::DUE_SQL, sample_params: &[Int(NOW + 300_000), Int(100)] },
    HotQuery { name: "connection_authorizations.take", table: "connection_authorizations", index: PrimaryKey, sql: connections::TAKE_AUTHORIZATION_SQL, sample_params: &[Text("state-4242")] },
    HotQuery { name: "conversation_members.membership", table: "conversation_members", index: PrimaryKey, sql: conversations::MEMBERSHIP_SQL, sample_params: &[Text("conv-85"), Text("user-4242")] },
    HotQuery { name: "conversations.list_for_user", table: "conversation_members", index: PrimaryKey, sql: conversations::LIST_FOR_USER_SQL, sample_params: &[Text("user-4242"), Text(""), Int(51)] },
    HotQuery { name: "conversations.next_seq", table: "conversations", index: PrimaryKey, sql: conversations::NEXT_SEQ_SQL, sample_params: &[Text("conv-4242"), Int(NOW)] },
    HotQuery { name: "conversation_members.ack", table: "conversation_members", index: PrimaryKey, sql: conversations::ACK_SQL, sample_params: &[Text("conv-85"), Text("user-4242"), Int(3)] },
    HotQuery { name: "conversation_members.advance_ack", table: "conversation_members", index: PrimaryKey, sql: conversations::ADVANCE_ACK_SQL, sample_params: &[Text("conv-85"), Text("user-4242"), Int(0), Int(3)] },
    HotQuery { name: "messages.range", table: "messages", index: Named("messages_conversation_seq_key"), sql: conversations::RANGE_SQL, sample_params: &[Text("conv-42"), Int(10), Int(i64::MAX), Int(501)] },
    HotQuery { name: "messages.before", table: "messages", index: Named("messages_conversation_seq_key"), sql: conversations::BEFORE_SQL, sample_params: &[Text("conv-42"), Int(50), Int(51)] },
    HotQuery { name: "messages.by_client_id", table: "messages", index: Named("messages_client_msg_id_key"), sql: conversations::BY_CLIENT_ID_SQL, sample_params: &[Text("conv-42"), Text("user-42"), Text("cmid-4242")] },
    HotQuery { name: "audit.list_by_target", table: "audit_log", index: Named("audit_log_target_idx"), sql: audit::LIST_BY_TARGET_SQL, sample_params: &[Text("conn-4242"), Int(i64::MAX), Int(101)] },
    HotQuery { name: "webhook_deliveries.list_for_user", table: "webhook_deliveries", index: Named("webhook_deliveries_user_idx"), sql: webhooks::LIST_FOR_USER_SQL, sample_params: &[Text("user-4242"), Int(i64::MAX), Int(51)] },
    HotQuery { name: "webhook_deliveries.list_for_connection", table: "webhook_deliveries", index: Named("webhook_deliveries_connection_idx"), sql: webhooks::LIST_FOR_CONNECTION_SQL, sample_params: &[Text("conn-4242"), Int(i64::MAX), Int(101)] },
    HotQuery { name: "audit.chain_head", table: "audit_log", index: PrimaryKeyOrder, sql: audit::CHAIN_HEAD_SQL, sample_params: &[] },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_each_sample_fills_every_placeholder() {
        let mut names: Vec<&str> = HOT_QUERIES.iter().map(|q| q.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HOT_QUERIES.len(), "duplicate hot query name");
        for q in HOT_QUERIES {
            let highest = (1..=32).rev().find(|n| q.sql.contains(&format!("${n}"))).unwrap_or(0);
            assert_eq!(q.sample_params.len(), highest, "{}: one sample per placeholder", q.name);
            assert!(q.sql.contains(q.table), "{}: names its table", q.name);
        }
    }
}
