//! Access tokens already verified, so that a token presented again costs a hash of its tail
//! and a comparison, not an EdDSA verification (tens of microseconds) nor a SHA-256 of the
//! whole token.
//!
//! Invariants:
//! - A hit returns the claims of exactly the token presented: entries are found by a keyed
//!   hash of the token's last bytes (its signature) and then compared in full, so a hash
//!   collision, chance or crafted, is at worst a miss.
//! - Only tokens that passed [`super::tokens::AccessTokens::verify`] are inserted, and a hit
//!   needs `now < exp`: an entry never outlives its token.
//! - Bounded: at most about `max_entries`; a full shard first drops its expired entries, then
//!   an arbitrary one. Only valid tokens get in, so filling it takes real tokens.
//!
//! The account behind a token is checked on every request: each entry keeps a memo of the
//! last check ([`StatusMemo`]), good for a second and only while no account's status has
//! changed on this node since (the identity's status generation); otherwise the check goes to
//! the cache of account statuses.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::Role;
use super::tokens::AccessClaims;

/// Shards, so that concurrent requests rarely meet on one lock.
const SHARDS: usize = 16;
/// How many of the token's last bytes are hashed: 32 base64url characters of an Ed25519
/// signature, 192 bits that differ between any two tokens we issued.
const TAIL: usize = 32;

struct Entry {
    token: Box<str>,
    claims: Arc<AccessClaims>,
    memo: StatusMemo,
}

/// The role of the account behind a token, as last checked (an enabled account; a disabled
/// one is never remembered): packed in one word, the second of the check (its low 32 bits,
/// Unix time), the status generation then (31 bits) and whether the role is admin. Zero is
/// no memo.
#[derive(Debug, Default)]
pub struct StatusMemo(AtomicU64);

impl StatusMemo {
    /// How long a memo stands, in seconds: a change made on another node reaches this one
    /// through the status cache's expiry, and the memo adds at most this to it.
    const FOR_SECS: u64 = 1;

    /// The remembered role, if checked in the same second (Unix time) as `now`, at `generation`.
    pub fn role(&self, now: u64, generation: u64) -> Option<Role> {
        let memo = self.0.load(Ordering::Relaxed);
        let checked_at = memo & 0xffff_ffff;
        let fresh = memo != 0
            && (memo >> 32) & 0x7fff_ffff == generation & 0x7fff_ffff
            && (now & 0xffff_ffff).wrapping_sub(checked_at) & 0xffff_ffff < Self::FOR_SECS;
        fresh.then_some(if memo >> 63 == 1 { Role::Admin } else { Role::User })
    }

    /// Remembers `role`, checked at `now` with the status generation read before the check.
    pub fn set(&self, role: Role, now: u64, generation: u64) {
        let admin = u64::from(role == Role::Admin) << 63;
        self.0.store(admin | (generation & 0x7fff_ffff) << 32 | (now & 0xffff_ffff), Ordering::Relaxed);
    }
}

/// Keys are already keyed hashes: the map uses them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = RwLock<HashMap<u64, Entry, BuildHasherDefault<PassThrough>>>;

/// The verified-token cache. See the module documentation.
pub struct VerifiedTokens {
    shards: Box<[Shard]>,
    /// SipHash with a key random per process: the slots cannot be predicted from outside.
    hasher: RandomState,
    per_shard: usize,
}

impl std::fmt::Debug for VerifiedTokens {
    // Never the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    pub fn new(max_entries: u64) -> Self {
        let per_shard = usize::try_from(max_entries).unwrap_or(usize::MAX).div_ceil(SHARDS).max(1);
        Self { shards: (0..SHARDS).map(|_| Shard::default()).collect(), hasher: RandomState::new(), per_shard }
    }

    fn slot(&self, bytes: &[u8]) -> (u64, &Shard) {
        let hash = self.hasher.hash_one(&bytes[bytes.len().saturating_sub(TAIL)..]);
        // The low bits pick the bucket inside the shard; the high ones pick the shard.
        (hash, &self.shards[(hash >> 60) as usize % SHARDS])
    }

    /// The claims of `token` (the bytes presented, unchecked) if it was verified before and
    /// has not expired at `now` (seconds since the Unix epoch).
    pub fn get(&self, token: &[u8], now: u64) -> Option<Arc<AccessClaims>> {
        self.with(token, now, |claims, _| Some(Arc::clone(claims)))
    }

    /// `f` of the claims and the status memo of `token`, if it was verified before and has not
    /// expired at `now`. `f` runs under a read lock of the shard: it must not come back here.
    pub fn with<T>(
        &self,
        token: &[u8],
        now: u64,
        f: impl FnOnce(&Arc<AccessClaims>, &StatusMemo) -> Option<T>,
    ) -> Option<T> {
        let (hash, shard) = self.slot(token);
        let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
        let entry = shard.get(&hash)?;
        if entry.token.as_bytes() == token && now < entry.claims.exp { f(&entry.claims, &entry.memo) } else { None }
    }

    /// Remembers a token that passed verification.
    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, now: u64) {
        let (hash, shard) = self.slot(token.as_bytes());
        let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            shard.retain(|_, e| now < e.claims.exp);
            if shard.len() >= self.per_shard
                && let Some(&victim) = shard.keys().next()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(hash, Entry { token: token.into(), claims, memo: StatusMemo::default() });
    }

    /// Entries held, expired ones included until they are pushed out.
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "urn:atom".to_owned(),
            sub: "user-1".to_owned(),
            aud: "atom-api".to_owned(),
            exp,
            nbf: 0,
            iat: 0,
            jti: "j".to_owned(),
            scope: None,
            roles: vec![],
            sid: Some("s".to_owned()),
        })
    }

    #[test]
    fn a_hit_needs_the_same_token_and_an_unexpired_one() {
        let cache = VerifiedTokens::new(100);
        let token = format!("header.payload.{}", "s".repeat(86));
        cache.insert(&token, claims(100), 10);
        assert_eq!(cache.get(token.as_bytes(), 99).map(|c| c.exp), Some(100));
        assert!(cache.get(token.as_bytes(), 100).is_none(), "expired at exp");

        // Same tail, other payload: the same slot, and still a miss.
        let forged = format!("header.PAYLOAD.{}", "s".repeat(86));
        assert!(cache.get(forged.as_bytes(), 50).is_none());
        assert!(cache.get(b"short", 50).is_none());
        assert!(cache.get(b"", 50).is_none());
    }

    #[test]
    fn a_status_memo_stands_for_a_second_and_one_generation() {
        let memo = StatusMemo::default();
        assert_eq!(memo.role(1_800_000_000, 0), None, "no memo yet");
        memo.set(Role::Admin, 1_800_000_000, 7);
        assert_eq!(memo.role(1_800_000_000, 7), Some(Role::Admin));
        assert_eq!(memo.role(1_800_000_001, 7), None, "a second later");
        assert_eq!(memo.role(1_800_000_000, 8), None, "a status changed since");
        assert_eq!(memo.role(1_799_999_999, 7), None, "a clock that went back");
        memo.set(Role::User, u64::from(u32::MAX), u64::from(u32::MAX));
        assert_eq!(memo.role(u64::from(u32::MAX), u64::from(u32::MAX)), Some(Role::User), "at the wrap");
        assert_eq!(memo.role(u64::from(u32::MAX) + 1, u64::from(u32::MAX)), None);
    }

    #[test]
    fn it_stays_within_its_bound_and_keeps_what_it_just_verified() {
        let cache = VerifiedTokens::new(32);
        for i in 0..1000 {
            let token = format!("t.{i}.{i:0>40}");
            cache.insert(&token, claims(5), 0);
            assert!(cache.get(token.as_bytes(), 1).is_some());
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
        // Later the entries have expired: a new one pushes out expired ones, never itself.
        for i in 0..100 {
            let token = format!("u.{i}.{i:0>40}");
            cache.insert(&token, claims(1_000), 10);
            assert!(cache.get(token.as_bytes(), 10).is_some());
        }
        assert!(cache.len() <= 32, "{} entries", cache.len());
    }
}
