//! What is known about the request being served, for code that runs on its task but is not
//! handed the request: the connection's peer address (for the rate limits and audit rows),
//! the storage layer counts its queries here (and names the request in a slow-query line),
//! the router notes the matched route template, and authentication puts the principal that
//! handlers take. The middleware ([`crate::http::middleware::Stack`]) opens the scope around
//! each request and reads it back at the end, for the request's metrics and log line.
//!
//! A task-local, not a request extension: extensions live in a map that is allocated per
//! request and grows with each entry, and the storage layer never sees the request.
//! Work a request spawns onto other tasks is outside the scope.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::MatchedPath;
use axum::http::HeaderValue;

use crate::identity::Principal;

tokio::task_local! {
    static REQUEST: Scope;
}

/// The request scope's contents.
pub struct Scope {
    /// The `X-Request-Id`, also in the request's log line, slow-query lines and audit rows.
    request_id: HeaderValue,
    /// The peer address of the request's connection; `None` for a request that came through
    /// no socket (a test calling the stack directly).
    peer: Option<SocketAddr>,
    queries: Cell<u32>,
    route: Cell<Option<MatchedPath>>,
    principal: RefCell<Option<Principal>>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("request_id", &self.request_id)
            .field("queries", &self.queries)
            .finish_non_exhaustive()
    }
}

/// What a finished request's scope recorded.
#[derive(Debug)]
pub struct Record {
    /// The id the scope was opened with.
    pub request_id: HeaderValue,
    /// Named queries the request issued (on its own task).
    pub queries: u32,
    /// The matched route template; `None` when no route matched.
    pub route: Option<MatchedPath>,
    /// The authenticated user; `None` on public routes and when authentication failed.
    pub user_id: Option<String>,
}

/// Runs `future` as the request `request_id` from `peer`; resolves to its output and the
/// scope's record.
pub fn scope<F: Future>(request_id: HeaderValue, peer: Option<SocketAddr>, future: F) -> Scoped<F> {
    let scope =
        Scope { request_id, peer, queries: Cell::new(0), route: Cell::new(None), principal: RefCell::new(None) };
    Scoped { scoped: REQUEST.scope(scope, future) }
}

/// Counts one named query against the current request, if any.
pub fn count_query() {
    let _ = REQUEST.try_with(|r| r.queries.set(r.queries.get().saturating_add(1)));
}

/// The current request's id, if any (for the rare lines and rows that name it).
pub fn request_id() -> Option<String> {
    REQUEST.try_with(|r| r.request_id.to_str().ok().map(str::to_owned)).ok().flatten()
}

/// The peer address of the current request's connection (not yet the client behind a proxy:
/// see [`crate::edge::Edge::client_ip`]).
pub fn peer() -> Option<SocketAddr> {
    REQUEST.try_with(|r| r.peer).ok().flatten()
}

/// Sets who the current request was authenticated as (by [`crate::identity::auth`]).
pub fn authenticated(principal: Principal) {
    let _ = REQUEST.try_with(|r| r.principal.replace(Some(principal)));
}

/// Who the current request was authenticated as; `None` on public routes, outside a request
/// and before authentication.
pub fn principal() -> Option<Principal> {
    REQUEST.try_with(|r| r.principal.borrow().clone()).ok().flatten()
}

/// Notes the current request's matched route template.
pub fn record_route(route: MatchedPath) {
    let _ = REQUEST.try_with(|r| r.route.set(Some(route)));
}

pin_project_lite::pin_project! {
    /// The future of [`scope`]. Hand-written: an `async` block around the scoped future
    /// would hold it twice (captured and awaited), and every request carries this one.
    pub struct Scoped<F: Future> {
        #[pin]
        scoped: tokio::task::futures::TaskLocalFuture<Scope, F>,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = (F::Output, Record);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut scoped = self.project().scoped;
        let output = ready!(scoped.as_mut().poll(cx));
        // The value is there: this future takes it once, when the inner one is done.
        let record = scoped.take_value().map_or_else(
            || Record { request_id: HeaderValue::from_static("-"), queries: 0, route: None, user_id: None },
            |s| Record {
                request_id: s.request_id,
                queries: s.queries.get(),
                route: s.route.into_inner(),
                user_id: s.principal.into_inner().map(|p| p.user_id),
            },
        );
        Poll::Ready((output, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The route is recorded by the router's `RecordRoute` layer; the metrics tests (route
    // templates in `http_requests_total`) and the log tests cover it end to end.
    #[tokio::test]
    async fn a_scope_counts_the_queries_of_its_own_task_only() {
        let peer = "192.0.2.7:4000".parse().ok();
        let (id, record) = scope(HeaderValue::from_static("r1"), peer, async {
            assert_eq!(super::peer(), peer);
            count_query();
            count_query();
            let principal = Principal {
                user_id: "user-1".to_owned(),
                role: crate::identity::Role::User,
                credential: crate::identity::Credential::ApiKey { key_id: "k".to_owned(), scopes: vec![] },
            };
            authenticated(principal);
            assert_eq!(crate::request::principal().map(|p| p.user_id).as_deref(), Some("user-1"));
            request_id()
        })
        .await;
        assert_eq!(id.as_deref(), Some("r1"));
        assert_eq!(record.queries, 2);
        assert_eq!(record.request_id, "r1");
        assert!(record.route.is_none());
        assert_eq!(record.user_id.as_deref(), Some("user-1"));

        // Outside any scope, nothing is recorded and nothing fails.
        count_query();
        assert!(request_id().is_none());
        assert!(super::peer().is_none());
        assert!(principal().is_none());
    }
}
