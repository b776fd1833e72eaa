//! The hybrid store: local decisions from leases of each key's budget, taken from the
//! shared Redis buckets in batches.
//!
//! A lease is `k` requests' worth of a bucket that Redis charged at once (the same GCRA
//! bucket the Redis store uses, `scripts::LEASE`): this instance then admits up to `k`
//! requests for that key without a round trip. A request whose keys all hold a lease is
//! decided locally; otherwise it asks Redis for leases of the keys that lack one (one
//! round trip) and is refused only when Redis has nothing left for a key.
//!
//! # Accuracy
//! - Never over the limit in total: every admitted request spent a request's worth that
//!   Redis charged, so N instances together admit at most what the Redis store would.
//! - A lease is valid for the time its requests' worth covers (`k × window / limit`),
//!   at least [`MIN_VALID`] (or the window, if shorter): requests spent late in that
//!   floor run ahead of the shared bucket by at most one lease per instance and key — a
//!   short burst of at most `N × lease` (at most `N × 5%` of the burst) over the
//!   bucket's `burst`, never a higher sustained rate.
//! - What a lease does not spend in time is lost: that instance under-admits by the
//!   rest. Lease sizes adapt per key to keep that small: a key starts with leases of 1
//!   (exact, one round trip per request); a lease spent before it expires doubles the
//!   next one, up to [`MAX_SHARE`] of the policy's burst; a lease that expires unspent
//!   halves it. Cold keys stay at 1, hot keys make a round trip per many requests.
//! - `RateLimit-Remaining` is Redis's count at the last lease plus what this instance's
//!   lease still holds: an estimate, exact with one instance.

use super::config::OnError;
use super::decision::{Check, Decision, RateHeaders};
use super::redis::{Lease, RedisStore};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A lease is valid at least this long (or the policy's window, if shorter).
pub const MIN_VALID: Duration = Duration::from_secs(1);
/// The largest lease: this share of the policy's burst.
pub const MAX_SHARE: f64 = 0.05;
const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct LocalLease {
    /// Requests it still admits.
    tokens: u64,
    /// ns on the store's clock.
    valid_until: u64,
    /// The size this key's leases have now.
    size: u64,
    /// Redis's `remaining` when it was granted.
    remaining: u64,
    /// ns on the store's clock when the bucket is full again (as of the grant).
    reset_at: u64,
}

#[derive(Default)]
struct Shard {
    leases: HashMap<Box<str>, LocalLease>,
}

pub struct HybridStore {
    redis: RedisStore,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    cap_per_shard: usize,
    epoch: Instant,
}

impl std::fmt::Debug for HybridStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridStore")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

impl HybridStore {
    pub fn new(redis: RedisStore, max_keys: u64) -> Self {
        let per = usize::try_from(max_keys / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        HybridStore {
            redis,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            cap_per_shard: per,
            epoch: Instant::now(),
        }
    }

    pub fn redis(&self) -> &RedisStore {
        &self.redis
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    pub async fn check(&self, checks: &[Check<'_>]) -> Decision {
        if checks.is_empty() {
            return Decision::allow_without_headers();
        }
        let keys: smallvec::SmallVec<[String; 4]> = checks.iter().map(lease_key).collect();
        for _ in 0..2 {
            // Locally, if every key holds a lease with a request left.
            let wants = match self.take_local(checks, &keys, self.now()) {
                Ok(decision) => return decision,
                Err(wants) => wants,
            };
            let asks: Vec<(Check<'_>, u64)> =
                wants.iter().map(|&(i, want)| (checks[i], want)).collect();
            let Some(leases) = self.redis.lease(&asks).await else {
                return self.on_error();
            };
            let now = self.now();
            let mut refused: Option<(usize, Lease)> = None;
            for (&(i, want), lease) in wants.iter().zip(&leases) {
                self.install(checks[i].policy, &keys[i], want, lease, now);
                if lease.granted == 0
                    && refused.is_none_or(|(_, r)| r.retry_after_us < lease.retry_after_us)
                {
                    refused = Some((i, *lease));
                }
            }
            if let Some((i, lease)) = refused {
                let c = &checks[i];
                return Decision {
                    allowed: false,
                    rejected_by: Some(c.policy.name.clone()),
                    headers: Some(RateHeaders {
                        limit: c.params.limit,
                        remaining: 0,
                        reset_secs: lease.reset_us.div_ceil(1_000_000),
                        retry_after_secs: Some(lease.retry_after_us.div_ceil(1_000_000).max(1)),
                        policy: c.policy.policy_value(&c.params),
                    }),
                    store_error: false,
                };
            }
            // Every key now holds a lease: spend from them (the loop), unless other
            // requests spent them first.
        }
        // Leases raced away twice: decide this one exactly, in Redis.
        self.redis.check(checks).await
    }

    /// Spend a request from every key's lease, or the keys to ask Redis for (index,
    /// lease size wished).
    fn take_local(
        &self,
        checks: &[Check<'_>],
        keys: &[String],
        now: u64,
    ) -> Result<Decision, Vec<(usize, u64)>> {
        let shards: smallvec::SmallVec<[usize; 4]> =
            keys.iter().map(|k| self.shard_of(k)).collect();
        let mut order = shards.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: smallvec::SmallVec<[MutexGuard<'_, Shard>; 4]> =
            order.iter().map(|&s| self.lock(s)).collect();
        let slot = |i: usize| order.binary_search(&shards[i]).unwrap_or(0);
        let mut wants = Vec::new();
        for (i, (c, key)) in checks.iter().zip(keys).enumerate() {
            let usable = guards[slot(i)]
                .leases
                .get(key.as_str())
                .filter(|l| l.tokens > 0 && l.valid_until > now);
            if usable.is_none() {
                let prev = guards[slot(i)].leases.get(key.as_str()).copied();
                wants.push((i, next_size(prev, now, c)));
            }
        }
        if !wants.is_empty() {
            return Err(wants);
        }
        let mut tightest: Option<(usize, u64, u64)> = None;
        for (i, key) in keys.iter().enumerate() {
            let Some(l) = guards[slot(i)].leases.get_mut(key.as_str()) else {
                continue;
            };
            l.tokens -= 1;
            let remaining = l.remaining.saturating_add(l.tokens);
            let reset = l.reset_at.saturating_sub(now);
            if tightest.is_none_or(|(_, r, _)| remaining < r) {
                tightest = Some((i, remaining, reset));
            }
        }
        drop(guards);
        Ok(match tightest {
            Some((i, remaining, reset)) => {
                let c = &checks[i];
                Decision {
                    allowed: true,
                    rejected_by: None,
                    headers: Some(RateHeaders {
                        limit: c.params.limit,
                        remaining: remaining.min(c.params.limit),
                        reset_secs: reset.div_ceil(1_000_000_000),
                        retry_after_secs: None,
                        policy: c.policy.policy_value(&c.params),
                    }),
                    store_error: false,
                }
            }
            None => Decision::allow_without_headers(),
        })
    }

    fn install(
        &self,
        policy: &super::config::Policy,
        key: &str,
        size: u64,
        lease: &Lease,
        now: u64,
    ) {
        let period_ns = policy
            .window
            .as_nanos()
            .checked_div(u128::from(policy.limit.max(1)))
            .unwrap_or(0);
        let covers =
            u64::try_from(period_ns.saturating_mul(u128::from(lease.granted))).unwrap_or(u64::MAX);
        let floor = MIN_VALID.min(policy.window);
        let valid = covers.max(u64::try_from(floor.as_nanos()).unwrap_or(0));
        let mut g = self.lock(self.shard_of(key));
        if g.leases.len() >= self.cap_per_shard && !g.leases.contains_key(key) {
            // Full: drop the expired ones, and if that is not enough, any half.
            g.leases.retain(|_, l| l.valid_until > now);
            if g.leases.len() >= self.cap_per_shard {
                let drop_n = g.leases.len() / 2 + 1;
                let victims: Vec<Box<str>> = g.leases.keys().take(drop_n).cloned().collect();
                for v in victims {
                    g.leases.remove(&v);
                }
            }
        }
        let fresh = LocalLease {
            tokens: lease.granted,
            valid_until: now.saturating_add(valid),
            size,
            remaining: lease.remaining,
            reset_at: now.saturating_add(lease.reset_us.saturating_mul(1000)),
        };
        match g.leases.get_mut(key) {
            // Concurrent requests leased for the same key: their grants add up (each one
            // was charged in Redis), none replaces another's.
            Some(l) if l.valid_until > now && l.tokens > 0 => {
                l.tokens += fresh.tokens;
                l.valid_until = l.valid_until.max(fresh.valid_until);
                l.size = l.size.max(fresh.size);
                l.remaining = fresh.remaining;
                l.reset_at = fresh.reset_at;
            }
            _ => {
                g.leases.insert(key.into(), fresh);
            }
        }
    }

    fn on_error(&self) -> Decision {
        Decision {
            allowed: self.redis.settings().on_error == OnError::Allow,
            rejected_by: None,
            headers: None,
            store_error: true,
        }
    }

    /// Drops expired leases (their unspent requests are lost either way).
    pub fn sweep(&self) -> usize {
        let now = self.now();
        (0..SHARDS)
            .map(|s| {
                let mut g = self.lock(s);
                g.leases.retain(|_, l| l.valid_until > now);
                g.leases.len()
            })
            .sum()
    }
}

/// The next lease's size for a key whose current lease is `prev`: double after a lease
/// spent in time, halve after one that expired unspent, start at 1.
fn next_size(prev: Option<LocalLease>, now: u64, c: &Check<'_>) -> u64 {
    let max = ((c.params.burst as f64 * MAX_SHARE) as u64).max(1);
    match prev {
        None => 1,
        Some(l) if l.tokens == 0 && l.valid_until > now => (l.size.saturating_mul(2)).min(max),
        Some(l) if l.tokens > 0 => (l.size / 2).max(1),
        Some(l) => l.size.min(max),
    }
}

/// `"<policy>\0<key>"`, as the memory store names buckets.
fn lease_key(c: &Check<'_>) -> String {
    let mut k = String::with_capacity(c.policy.name.len() + 1 + c.key.len());
    k.push_str(&c.policy.name);
    k.push('\0');
    k.push_str(c.key);
    k
}
