//! Diagnostics of the request being served, for the storage layer, which never sees the
//! request: it counts its queries here (for the request's log line and
//! `http_request_db_queries`) and names the request in a slow-query line.
//!
//! A task-local opened by [`crate::http::middleware::observe`] around each request. Only
//! these diagnostics travel this way: what handlers need of a request (its principal, client
//! address and id) travels with the request itself, as extensions and headers. Work a
//! request spawns onto other tasks is outside the scope.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static REQUEST: Scope;
}

struct Scope {
    /// The `X-Request-Id`, for slow-query lines.
    request_id: String,
    queries: Cell<u32>,
}

/// Runs `future` as the request `request_id`; resolves to its output and the number of named
/// queries it issued on its own task.
pub async fn scope<F: Future>(request_id: String, future: F) -> (F::Output, u32) {
    let scope = Scope { request_id, queries: Cell::new(0) };
    REQUEST
        .scope(scope, async {
            let output = future.await;
            (output, REQUEST.try_with(|r| r.queries.get()).unwrap_or(0))
        })
        .await
}

/// Counts one named query against the current request, if any.
pub fn count_query() {
    let _ = REQUEST.try_with(|r| r.queries.set(r.queries.get().saturating_add(1)));
}

/// The current request's id, if any (for the rare lines that name it).
pub fn request_id() -> Option<String> {
    REQUEST.try_with(|r| r.request_id.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_counts_the_queries_of_its_own_task_only() {
        let (id, queries) = scope("r1".to_owned(), async {
            count_query();
            count_query();
            tokio::spawn(async { count_query() }).await.ok();
            request_id()
        })
        .await;
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(queries, 2);

        // Outside any scope, nothing is recorded and nothing fails.
        count_query();
        assert!(request_id().is_none());
    }
}
