//! GCRA rate limiting: locally with governor, or shared by every node through one Redis
//! round trip (a Lua GCRA that reads Redis's own clock, so nodes' clocks do not matter).
//!
//! Each shared check is one [`Redis::call`]: bounded by `redis.call_timeout_ms` and skipped
//! while the breaker the limiter shares with the cache is open. Then the node decides with its
//! local limiter; when a probe finds Redis back the shared limits resume.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::cache::{CallError, Redis};

/// One limit: `burst` requests at once, refilled at `quota` per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub quota: u32,
    pub window_secs: u64,
    pub burst: u32,
}

impl Policy {
    /// Milliseconds between two requests at the sustained rate.
    fn interval_ms(&self) -> u64 {
        (self.window_secs * 1000 / u64::from(self.quota.max(1))).max(1)
    }
}

/// The outcome of one check, with what the `RateLimit` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_secs: u64,
    /// Seconds until the next request would be allowed (0 when allowed).
    pub retry_after_secs: u64,
}

type Local = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Limits by `(policy name, key)`.
pub struct Limiter {
    /// A handful, so a list: finding a name is a few short comparisons, not a hash.
    policies: Vec<(&'static str, Policy)>,
    local: Vec<(&'static str, Local)>,
    redis: Option<Arc<Redis>>,
    script: redis::Script,
    /// Local decisions made, to look at the size of the local tables only now and then.
    local_checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("policies", &self.policies).field("shared", &self.redis.is_some()).finish()
    }
}

/// GCRA in Redis. KEYS[1]: the key; ARGV: interval ms, burst. Returns
/// {allowed, remaining, retry_after_ms, reset_ms}.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
";

impl Limiter {
    pub fn new(policies: HashMap<&'static str, Policy>, redis: Option<Arc<Redis>>) -> Self {
        let policies: Vec<_> = policies.into_iter().collect();
        let local = policies
            .iter()
            .map(|(name, p)| {
                let burst = NonZeroU32::new(p.burst.max(1)).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(Duration::from_millis(p.interval_ms()))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                (*name, RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>())
            })
            .collect();
        Self {
            policies,
            local,
            redis,
            script: redis::Script::new(GCRA_LUA),
            local_checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// Whether shared limits currently fall back to local ones.
    pub fn degraded(&self) -> bool {
        self.redis.as_ref().is_some_and(|redis| redis.degraded())
    }

    /// Checks and counts one request of `key` under policy `name`.
    pub async fn check(&self, name: &'static str, key: &str) -> Decision {
        let Some(policy) = self.policy(name) else {
            return Decision { allowed: true, remaining: u32::MAX, reset_secs: 0, retry_after_secs: 0 };
        };
        if let Some(redis) = &self.redis
            // A failure or a skipped call was logged and counted by the breaker.
            && let Ok(decision) = Box::pin(self.check_shared(redis, name, policy, key)).await
        {
            return decision;
        }
        self.check_local(name, policy, key)
    }

    fn check_local(&self, name: &'static str, policy: Policy, key: &str) -> Decision {
        let Some((_, limiter)) = self.local.iter().find(|(n, _)| *n == name) else {
            return Decision { allowed: true, remaining: u32::MAX, reset_secs: 0, retry_after_secs: 0 };
        };
        // Counting a keyed limiter's entries visits every shard of its map: not per request.
        if self.local_checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) && limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        let interval = policy.interval_ms();
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = u64::from(policy.burst.saturating_sub(remaining));
                Decision { allowed: true, remaining, reset_secs: (used * interval).div_ceil(1000), retry_after_secs: 0 }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision {
                    allowed: false,
                    remaining: 0,
                    reset_secs: (u64::from(policy.burst) * interval).div_ceil(1000),
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            }
        }
    }

    async fn check_shared(&self, redis: &Redis, name: &str, policy: Policy, key: &str) -> Result<Decision, CallError> {
        let mut invocation = self.script.key(redis.key(&format!("rl:{name}:{key}")));
        invocation.arg(policy.interval_ms()).arg(policy.burst);
        let (allowed, remaining, retry_ms, reset_ms): (i64, i64, i64, i64) =
            redis.call("rate_limit", |mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        let secs = |ms: i64| u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000);
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            reset_secs: secs(reset_ms),
            retry_after_secs: secs(retry_ms).max(u64::from(allowed != 1)),
        })
    }
}
