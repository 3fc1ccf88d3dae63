//! Single flight: concurrent misses of one key on one node run one load, and the others wait
//! for its result instead of each querying the database (no stampede on a popular key).
//!
//! Invariants: at most one load per key is registered at a time; a registration is removed
//! when its leader finishes or is dropped (a cancelled request), so waiters never hang; an
//! invalidation detaches the registered load and marks it superseded, so its (possibly
//! pre-write) result is not stored and callers arriving after the write start a fresh load.
//! A failure is not shared: each waiter of a failed or cancelled load runs its own, so every
//! caller gets its own error with its cause, and one transient error does not fail them all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// What a finished load left for its waiters: the serialized value (`None`: nothing exists)
/// or that it failed.
#[derive(Debug, Clone)]
pub(crate) enum Loaded {
    Value(Option<Arc<str>>),
    Failed,
}

#[derive(Debug)]
struct Call {
    outcome: watch::Sender<Option<Loaded>>,
    superseded: AtomicBool,
}

/// The loads in progress on this node, by key.
#[derive(Debug, Default)]
pub(crate) struct SingleFlight {
    // A std mutex: it is held only to look up or change the map, never across an await.
    calls: Mutex<HashMap<String, Arc<Call>>>,
}

/// The caller's part in a load: run it, or wait for the one that does.
#[derive(Debug)]
pub(crate) enum Ticket<'a> {
    Leader(Leader<'a>),
    Follower(Follower),
}

impl SingleFlight {
    /// Joins the load of `key` in progress, or registers a new one led by the caller.
    pub(crate) fn join(&self, key: &str) -> Ticket<'_> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(call) = calls.get(key) {
            return Ticket::Follower(Follower { outcome: call.outcome.subscribe() });
        }
        let call = Arc::new(Call { outcome: watch::Sender::new(None), superseded: AtomicBool::new(false) });
        calls.insert(key.to_owned(), Arc::clone(&call));
        Ticket::Leader(Leader { flights: self, key: key.to_owned(), call })
    }

    /// Called on invalidation: the load in progress (if any) read the database before the
    /// write, so it must not be stored, and later callers must not wait for it.
    pub(crate) fn supersede(&self, key: &str) {
        let removed = self.calls.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        if let Some(call) = removed {
            call.superseded.store(true, Ordering::SeqCst);
        }
    }

    /// Loads in progress (for tests).
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> usize {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The caller that runs the load. Dropping it without [`Leader::finish`] (cancellation)
/// releases the waiters, who then load for themselves.
#[derive(Debug)]
pub(crate) struct Leader<'a> {
    flights: &'a SingleFlight,
    key: String,
    call: Arc<Call>,
}

impl Leader<'_> {
    /// Whether an invalidation of the key happened since this load was registered.
    pub(crate) fn superseded(&self) -> bool {
        self.call.superseded.load(Ordering::SeqCst)
    }

    /// Hands the outcome to every waiter; the registration ends when the leader is dropped.
    pub(crate) fn finish(&self, outcome: Loaded) {
        self.call.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut calls = self.flights.calls.lock().unwrap_or_else(PoisonError::into_inner);
        // Only our own registration: after a supersede the key may belong to a newer load.
        if calls.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.call)) {
            calls.remove(&self.key);
        }
    }
}

/// A caller waiting for another's load.
#[derive(Debug)]
pub(crate) struct Follower {
    outcome: watch::Receiver<Option<Loaded>>,
}

impl Follower {
    /// The leader's outcome, or `None` when the leader was dropped without one.
    pub(crate) async fn outcome(mut self) -> Option<Loaded> {
        self.outcome.wait_for(Option::is_some).await.ok().and_then(|o| o.clone())
    }
}
