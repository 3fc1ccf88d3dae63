//! Caps on open Socket.io connections, per client address and per user, counted on this
//! node.
//!
//! Invariants: a connection is counted from [`ConnectionCaps::try_open`] until its
//! [`ConnectionSlot`] is released, and released exactly once: [`ConnectionSlot::release`] is
//! called on disconnect, and dropping the slot releases it too (a socket dropped without a
//! disconnect event, or a refusal after the slot was taken), so no path leaks a count and no
//! path counts one twice. Both counts change under one lock, so two connections racing for
//! the last place cannot both get it.
//!
//! Before a connection there is a handshake: the Engine.IO session that a client opens and
//! then, within the connect timeout, turns into a Socket.io connection by sending CONNECT.
//! Pending handshakes are counted per address too ([`ConnectionCaps::begin_handshake`]), at
//! most `per_address` of them: one ends at the CONNECT ([`ConnectionCaps::end_handshake`]) or
//! when its deadline (the connect timeout) passes, after which the server has closed it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The least time between two sweeps of every address's expired handshakes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cap {
    Address,
    User,
}

impl Cap {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::User => "user",
        }
    }
}

/// A connection over a cap: which one, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct OverCap {
    pub cap: Cap,
    pub limit: u32,
}

/// The open connections of this node, by client address and by user.
#[derive(Debug)]
pub struct ConnectionCaps {
    per_address: u32,
    per_user: u32,
    /// How long a handshake may stay pending: the connect timeout.
    handshake_timeout: Duration,
    open: Mutex<OpenConnections>,
}

#[derive(Debug)]
struct OpenConnections {
    by_address: HashMap<IpAddr, u32>,
    by_user: HashMap<String, u32>,
    /// The deadlines of each address's pending handshakes, oldest first.
    handshakes: HashMap<IpAddr, Vec<Instant>>,
    last_sweep: Instant,
}

impl ConnectionCaps {
    pub fn new(per_address: u32, per_user: u32, handshake_timeout: Duration) -> Arc<Self> {
        let open = OpenConnections {
            by_address: HashMap::new(),
            by_user: HashMap::new(),
            handshakes: HashMap::new(),
            last_sweep: Instant::now(),
        };
        Arc::new(Self { per_address, per_user, handshake_timeout, open: Mutex::new(open) })
    }

    /// Counts a new handshake from `address`, or refuses it when `per_address` are pending.
    pub fn begin_handshake(&self, address: IpAddr) -> Result<(), OverCap> {
        let now = Instant::now();
        let mut open = self.lock();
        if now.duration_since(open.last_sweep) >= SWEEP_EVERY {
            open.handshakes.retain(|_, deadlines| {
                deadlines.retain(|d| *d > now);
                !deadlines.is_empty()
            });
            open.last_sweep = now;
        }
        let deadlines = open.handshakes.entry(address).or_default();
        deadlines.retain(|d| *d > now);
        if deadlines.len() >= self.per_address as usize {
            return Err(OverCap { cap: Cap::Address, limit: self.per_address });
        }
        deadlines.push(now + self.handshake_timeout);
        Ok(())
    }

    /// A handshake from `address` reached its CONNECT (admitted or not): one fewer pending.
    pub fn end_handshake(&self, address: IpAddr) {
        let mut open = self.lock();
        if let Some(deadlines) = open.handshakes.get_mut(&address) {
            if !deadlines.is_empty() {
                deadlines.remove(0);
            }
            if deadlines.is_empty() {
                open.handshakes.remove(&address);
            }
        }
    }

    /// Handshakes from `address` pending now.
    pub fn pending_handshakes(&self, address: IpAddr) -> usize {
        let now = Instant::now();
        self.lock().handshakes.get(&address).map_or(0, |d| d.iter().filter(|d| **d > now).count())
    }

    /// Counts a connection of `user_id` from `address` (`None` when the address is unknown,
    /// as for an embedder that serves without peer addresses: only the user cap applies), or
    /// names the cap it would exceed. The address cap is checked first.
    pub fn try_open(self: &Arc<Self>, address: Option<IpAddr>, user_id: &str) -> Result<ConnectionSlot, OverCap> {
        let mut open = self.lock();
        if let Some(address) = address
            && open.by_address.get(&address).copied().unwrap_or(0) >= self.per_address
        {
            return Err(OverCap { cap: Cap::Address, limit: self.per_address });
        }
        if open.by_user.get(user_id).copied().unwrap_or(0) >= self.per_user {
            return Err(OverCap { cap: Cap::User, limit: self.per_user });
        }
        if let Some(address) = address {
            *open.by_address.entry(address).or_insert(0) += 1;
        }
        *open.by_user.entry(user_id.to_owned()).or_insert(0) += 1;
        drop(open);
        metrics::gauge!("realtime_connections_open").increment(1.0);
        Ok(ConnectionSlot {
            caps: Arc::clone(self),
            address,
            user_id: user_id.to_owned(),
            released: AtomicBool::new(false),
        })
    }

    /// Open connections from `address` and of `user_id`.
    pub fn open(&self, address: IpAddr, user_id: &str) -> (u32, u32) {
        let open = self.lock();
        (open.by_address.get(&address).copied().unwrap_or(0), open.by_user.get(user_id).copied().unwrap_or(0))
    }

    /// The counts stay consistent whatever panicked while holding the lock (nothing in the
    /// critical sections can), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self, address: Option<IpAddr>, user_id: &str) {
        let mut open = self.lock();
        if let Some(address) = address {
            decrement(&mut open.by_address, &address);
        }
        decrement(&mut open.by_user, user_id);
        drop(open);
        metrics::gauge!("realtime_connections_open").decrement(1.0);
    }
}

/// Decrements a count, removing it at zero so that the maps hold only open connections.
fn decrement<K, Q>(counts: &mut HashMap<K, u32>, key: &Q)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// One counted connection; released by [`ConnectionSlot::release`] or on drop, once.
#[derive(Debug)]
pub struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    address: Option<IpAddr>,
    user_id: String,
    released: AtomicBool,
}

impl ConnectionSlot {
    /// Stops counting this connection; later calls (and the drop) do nothing.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.caps.release(self.address, &self.user_id);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn each_cap_refuses_past_its_limit_and_names_itself() {
        let caps = ConnectionCaps::new(2, 3, Duration::from_secs(10));
        let a = caps.try_open(ip(1), "alice").expect("first");
        let b = caps.try_open(ip(1), "bob").expect("second from the address");
        assert_eq!(caps.try_open(ip(1), "carol").err(), Some(OverCap { cap: Cap::Address, limit: 2 }));
        let c = caps.try_open(ip(2), "alice").expect("another address");
        let d = caps.try_open(ip(3), "alice").expect("third of alice");
        assert_eq!(caps.try_open(ip(4), "alice").err(), Some(OverCap { cap: Cap::User, limit: 3 }));
        assert_eq!(caps.open(IpAddr::from([127, 0, 0, 1]), "alice"), (2, 3));
        drop((a, b, c, d));
        assert_eq!(caps.open(IpAddr::from([127, 0, 0, 1]), "alice"), (0, 0));
        assert!(caps.lock().by_address.is_empty() && caps.lock().by_user.is_empty(), "no entries left behind");
    }

    #[test]
    fn a_slot_is_released_exactly_once() {
        let caps = ConnectionCaps::new(5, 5, Duration::from_secs(10));
        let first = caps.try_open(ip(1), "alice").expect("first");
        let second = caps.try_open(ip(1), "alice").expect("second");
        first.release();
        first.release();
        assert_eq!(caps.open(IpAddr::from([127, 0, 0, 1]), "alice"), (1, 1), "released once, not twice");
        drop(first);
        assert_eq!(caps.open(IpAddr::from([127, 0, 0, 1]), "alice"), (1, 1), "the drop after a release is a no-op");
        drop(second);
        assert_eq!(caps.open(IpAddr::from([127, 0, 0, 1]), "alice"), (0, 0));
    }

    #[test]
    fn without_an_address_only_the_user_cap_applies() {
        let caps = ConnectionCaps::new(1, 2, Duration::from_secs(10));
        let _a = caps.try_open(None, "alice").expect("first");
        let _b = caps.try_open(None, "alice").expect("second");
        assert_eq!(caps.try_open(None, "alice").err(), Some(OverCap { cap: Cap::User, limit: 2 }));
    }

    #[test]
    fn pending_handshakes_are_capped_per_address_until_they_connect_or_time_out() {
        let caps = ConnectionCaps::new(2, 5, Duration::from_millis(200));
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        caps.begin_handshake(a).expect("first");
        caps.begin_handshake(a).expect("second");
        assert_eq!(caps.begin_handshake(a), Err(OverCap { cap: Cap::Address, limit: 2 }));
        caps.begin_handshake(b).expect("another address");
        caps.end_handshake(a);
        assert_eq!(caps.pending_handshakes(a), 1);
        caps.begin_handshake(a).expect("a place freed by a CONNECT");
        assert!(caps.begin_handshake(a).is_err());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(caps.pending_handshakes(a), 0, "timed out");
        caps.begin_handshake(a).expect("places freed by the timeout");
        caps.end_handshake(b);
        caps.end_handshake(b);
        assert!(!caps.lock().handshakes.contains_key(&b), "no entry left behind");
    }
}
