//! The circuit breaker in front of every hot-path Redis call (the shared rate limits, the
//! shared cache), so that a stalled or dead Redis costs a request a few tens of milliseconds
//! at most, and most requests nothing.
//!
//! Closed, calls go to Redis, each bounded by `redis.call_timeout_ms`. The first failure (an
//! error or the timeout) opens it: callers skip Redis (the limiter decides locally, the cache
//! reads the database) for a back-off, [`FIRST_BACKOFF`] doubling after each failed probe up
//! to [`MAX_BACKOFF`]. When the back-off has run out, exactly one call, the probe, is let
//! through; its success closes the breaker, its failure reopens it for the next back-off.
//!
//! Invariants: at most one probe is in flight; a probe that is cancelled (its request went
//! away) counts as failed, so the breaker never waits on a probe that will not report.
//!
//! Metrics: `redis_breaker_open` (1 while Redis is skipped, else 0) and
//! `redis_calls_skipped_total{op}`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The first back-off after Redis failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest back-off: how late, at most, a node notices that Redis is back.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Whether Redis is being skipped, and until when.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    open: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    retry_at: Instant,
    backoff: Duration,
    probing: bool,
}

/// Leave to make one call; report how it went with [`Permit::succeeded`] or
/// [`Permit::failed`]. Dropped without either, it counts as failed.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A permit to call Redis now, or `None` to skip it (counted under `op`).
    pub(crate) fn admit(&self, op: &'static str) -> Option<Permit<'_>> {
        let mut open = self.lock();
        let probe = match open.as_mut() {
            None => false,
            Some(state) if !state.probing && Instant::now() >= state.retry_at => {
                state.probing = true;
                true
            }
            Some(_) => {
                drop(open);
                metrics::counter!("redis_calls_skipped_total", "op" => op).increment(1);
                return None;
            }
        };
        Some(Permit { breaker: self, probe, reported: false })
    }

    /// Whether a call made now would be skipped (open, and no probe due).
    pub(crate) fn skipping(&self) -> bool {
        self.lock().as_ref().is_some_and(|state| state.probing || Instant::now() < state.retry_at)
    }

    /// Whether Redis is being skipped since a failure (between probes or during one).
    pub(crate) fn is_open(&self) -> bool {
        self.lock().is_some()
    }

    /// How long until a probe may be made: zero when closed or already due.
    pub(crate) fn retry_in(&self) -> Duration {
        self.lock().as_ref().map_or(Duration::ZERO, |state| state.retry_at.saturating_duration_since(Instant::now()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        if self.lock().take().is_some() {
            metrics::gauge!("redis_breaker_open").set(0.0);
            tracing::info!("Redis answers again: rate limits and the cache are shared again");
        }
    }

    fn trip(&self, op: &'static str, error: &dyn std::fmt::Display, probe: bool) {
        let mut open = self.lock();
        match open.as_mut() {
            Some(state) if probe => {
                state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                state.retry_at = Instant::now() + state.backoff;
                state.probing = false;
                tracing::debug!(op, error = %error, retry_in = ?state.backoff, "Redis still unreachable");
            }
            // A call admitted before another one opened the breaker: that one already counted.
            Some(_) => {}
            None => {
                *open = Some(Open { retry_at: Instant::now() + FIRST_BACKOFF, backoff: FIRST_BACKOFF, probing: false });
                drop(open);
                metrics::gauge!("redis_breaker_open").set(1.0);
                tracing::warn!(
                    op,
                    error = %error,
                    "Redis unreachable: rate limits fall back to this node's and cached reads go to the \
                     database until a probe finds it back"
                );
            }
        }
    }
}

impl Permit<'_> {
    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        self.breaker.close();
    }

    pub(crate) fn failed(mut self, op: &'static str, error: &dyn std::fmt::Display) {
        self.reported = true;
        self.breaker.trip(op, error, self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.trip("probe", &"the probe was cancelled", true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(breaker: &Breaker) {
        breaker.admit("test").expect("admitted").failed("test", &"down");
    }

    #[test]
    fn a_failure_opens_it_and_calls_are_skipped_until_the_backoff_ends() {
        let breaker = Breaker::default();
        assert!(!breaker.is_open() && !breaker.skipping());
        breaker.admit("test").expect("closed: admitted").succeeded();
        fail(&breaker);
        assert!(breaker.is_open() && breaker.skipping());
        assert!(breaker.admit("test").is_none(), "skipped during the back-off");
        assert!(breaker.retry_in() > Duration::ZERO && breaker.retry_in() <= FIRST_BACKOFF);
    }

    #[test]
    fn one_probe_at_a_time_and_its_success_closes_it() {
        let breaker = Breaker::default();
        fail(&breaker);
        breaker.lock().as_mut().expect("open").retry_at = Instant::now();
        let probe = breaker.admit("test").expect("the probe");
        assert!(breaker.admit("test").is_none(), "a second probe is not let through");
        assert!(breaker.skipping());
        probe.succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit("test").is_some());
    }

    #[test]
    fn failed_or_cancelled_probes_double_the_backoff_up_to_the_cap() {
        let breaker = Breaker::default();
        fail(&breaker);
        let mut expected = FIRST_BACKOFF;
        for round in 0..8 {
            breaker.lock().as_mut().expect("open").retry_at = Instant::now();
            let probe = breaker.admit("test").expect("the probe");
            if round % 2 == 0 {
                probe.failed("test", &"still down");
            } else {
                drop(probe);
            }
            expected = (expected * 2).min(MAX_BACKOFF);
            let state = breaker.lock();
            let state = state.as_ref().expect("still open");
            assert_eq!(state.backoff, expected);
            assert!(!state.probing, "the next probe may go");
        }
        assert_eq!(expected, MAX_BACKOFF);
    }
}
