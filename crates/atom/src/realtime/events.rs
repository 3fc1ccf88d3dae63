//! What every client event passes before its handler: the socket's event budget, the
//! `realtime_events_in_total{event}` count, and the answer to events nobody handles.
//!
//! The client events are registered once, when the server starts, in one [`Events`] table
//! ([`Events::on`], never `socket.on`), so that each is counted and limited like every other.
//! An admitted socket gets the table as its one (fallback) handler ([`Events::attach`]):
//! socketioxide would otherwise keep a map of boxed handlers per socket, about 800 bytes for
//! our ten events, the same in every socket.
//!
//! - Each socket has an [`EventBudget`]: `realtime.events_per_second` sustained, bursts of
//!   `realtime.event_burst` (governor's GCRA, per socket, in its extensions). An event over it
//!   is not handled; when it asks for an ack, the ack is the error `rate_limited`.
//! - An event with no handler is answered `unknown_event` (when it asks for an ack).
//! - Each refusal spends one of `realtime.refused_events_per_minute`; when none is left, the
//!   socket gets `session:closing` with code `rate_limited` and is disconnected: a client that
//!   ignores its refusals cannot keep the server answering them.
//!
//! Error acks have one shape, `{ok: false, error: {code, message}}` ([`error_ack`]); the
//! metric's `event` label comes from the registered names (and `unknown`), never from what a
//! client sent, so a client cannot create series.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, SocketRef};
use socketioxide::handler::{FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;
use socketioxide_core::Value;

use super::connections;

/// The metric label of events that have no handler.
const UNKNOWN: &str = "unknown";

/// The per-socket limits, from `realtime.*`.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    per_second: NonZeroU32,
    burst: NonZeroU32,
    refused_per_minute: NonZeroU32,
}

impl EventLimits {
    /// Zero values (which configuration validation refuses) read as one.
    pub fn new(per_second: u32, burst: u32, refused_per_minute: u32) -> Self {
        let at_least_one = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            per_second: at_least_one(per_second),
            burst: at_least_one(burst),
            refused_per_minute: at_least_one(refused_per_minute),
        }
    }

    /// A fresh budget for one socket.
    pub fn budget(&self) -> Arc<EventBudget> {
        Arc::new(EventBudget {
            events: RateLimiter::direct(Quota::per_second(self.per_second).allow_burst(self.burst)),
            refusals: RateLimiter::direct(Quota::per_minute(self.refused_per_minute)),
        })
    }
}

/// One socket's event budget, kept in its extensions.
#[derive(Debug)]
pub struct EventBudget {
    events: DefaultDirectRateLimiter,
    refusals: DefaultDirectRateLimiter,
}

/// `{ok: false, error: {code, message}}`, the error ack of every client event.
pub fn error_ack(code: &str, message: &str) -> serde_json::Value {
    json!({ "ok": false, "error": { "code": code, "message": message } })
}

/// A handler of the table, its type erased.
type Handler<A> = Box<dyn Fn(Arc<Socket<A>>, Value, Option<i64>) + Send + Sync>;

/// The client events of every socket, by name, each behind the checks of this module.
pub struct Events<A: Adapter> {
    handlers: HashMap<&'static str, Handler<A>>,
}

impl<A: Adapter> std::fmt::Debug for Events<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}

impl<A: Adapter> Default for Events<A> {
    fn default() -> Self {
        Self { handlers: HashMap::new() }
    }
}

impl<A: Adapter> Events<A> {
    /// Registers `handler` for the client event `event` behind the event budget and the
    /// metrics.
    pub fn on<H, T>(&mut self, event: &'static str, handler: H)
    where
        H: MessageHandler<A, T>,
        T: Send + Sync + 'static,
    {
        let guarded = Guarded { event, handler };
        self.handlers.insert(event, Box::new(move |socket, data, ack_id| guarded.call(socket, data, ack_id)));
    }

    /// Makes `socket` handle the registered events, and answer the others `unknown_event`.
    pub fn attach(self: &Arc<Self>, socket: &SocketRef<A>) {
        socket.on_fallback(Dispatch(Arc::clone(self)));
    }
}

/// A socket's one handler: the event's own from the table, or the answer to unknown events.
struct Dispatch<A: Adapter>(Arc<Events<A>>);

impl<A: Adapter> MessageHandler<A, ()> for Dispatch<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut data: Value, ack_id: Option<i64>) {
        // socketioxide only calls a handler with a packet whose event name it has read.
        let handler = Event::from_message_parts(&socket, &mut data, &ack_id)
            .ok()
            .and_then(|Event(event)| self.0.handlers.get(event.as_str()));
        match handler {
            Some(handler) => handler(socket, data, ack_id),
            None => Guarded { event: UNKNOWN, handler: unknown::<A> }.call(socket, data, ack_id),
        }
    }
}

async fn unknown<A: Adapter>(socket: SocketRef<A>, ack: AckSender<A>) {
    metrics::counter!("realtime_events_refused_total", "reason" => "unknown_event").increment(1);
    // Acks nothing when none was asked for.
    let _ = ack.send(&error_ack("unknown_event", "No such event."));
    refused(&socket);
}

/// A handler behind the checks of this module.
struct Guarded<H> {
    event: &'static str,
    handler: H,
}

impl<A, T, H> MessageHandler<A, T> for Guarded<H>
where
    A: Adapter,
    H: MessageHandler<A, T>,
{
    fn call(&self, socket: Arc<Socket<A>>, mut data: Value, ack_id: Option<i64>) {
        metrics::counter!("realtime_events_in_total", "event" => self.event).increment(1);
        let within = socket.extensions.get::<Arc<EventBudget>>().is_none_or(|budget| budget.events.check().is_ok());
        if !within {
            metrics::counter!("realtime_events_refused_total", "reason" => "rate_limited").increment(1);
            let Ok(ack) = AckSender::from_message_parts(&socket, &mut data, &ack_id);
            let _ = ack.send(&error_ack("rate_limited", "Too many events: slow down."));
            refused(&SocketRef::from(socket));
            return;
        }
        connections::note_transport(&SocketRef::from(Arc::clone(&socket)));
        self.handler.call(socket, data, ack_id);
    }
}

/// Spends one refusal; with none left, the socket is closed.
fn refused<A: Adapter>(socket: &SocketRef<A>) {
    let Some(budget) = socket.extensions.get::<Arc<EventBudget>>() else { return };
    if budget.refusals.check().is_err() {
        tracing::info!(target: "atom::realtime", sid = %socket.id, "socket.io connection closed: too many refused events");
        super::close_socket(socket.clone(), super::Closing::RateLimited);
    }
}
