//! GCRA (generic cell rate algorithm), shared by both stores, and the combination of
//! several policies' outcomes into one [`Decision`].
//!
//! # Why GCRA
//! A bucket is a single number, the *theoretical arrival time* (TAT). With emission
//! interval `T = window / limit` and tolerance `tau = T * (burst - 1)`, a request at `now`
//! is allowed iff `max(TAT, now) + T - now <= burst * T`, and then `TAT := max(TAT, now) + T`.
//! That is exactly "`limit` per `window` sustained, at most `burst` at once", with no
//! window boundaries (a fixed window lets 2x through across a boundary) and no estimate
//! (pingora-limits' `Rate` is a count-min sketch over fixed windows: hash collisions can
//! only over-count, which turns into false 429s for innocent keys sharing cells, and its
//! fixed windows allow 2x bursts at boundaries; it is cheap, but not what the contract says).
//! A rejected request leaves the TAT untouched, so it consumes nothing, and a bucket whose
//! TAT is in the past is identical to a missing one, which makes idle eviction lossless.
//!
//! Times are integers in a store-specific unit (ns for memory, µs for Redis). `T` is
//! rounded **up** to the unit, so rounding can only make a policy stricter, by less than
//! one unit per request (1 ns, or 1 µs for Redis: rates above 1,000,000/s per key are
//! capped there).

use super::decision::{Check, Decision, RateHeaders};
use std::time::Duration;

/// One policy's GCRA parameters in clock units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Emission interval `T`.
    pub period: u64,
    /// `tau + T = burst * T`: how far the TAT may run ahead of `now` after a request.
    pub horizon: u64,
}

impl Rate {
    /// `unit_ns` is the clock unit in nanoseconds (1 or 1000).
    pub fn new(window: Duration, limit: u64, burst: u64, unit_ns: u64) -> Rate {
        let div = u128::from(limit.max(1)) * u128::from(unit_ns.max(1));
        let period = window.as_nanos().div_ceil(div).max(1);
        let period = u64::try_from(period).unwrap_or(u64::MAX);
        Rate {
            period,
            horizon: period.saturating_mul(burst.max(1)),
        }
    }

    pub fn for_check(c: &Check<'_>, unit_ns: u64) -> Rate {
        Rate::new(c.policy.window, c.params.limit, c.params.burst, unit_ns)
    }

    /// Evaluates one request against a bucket whose stored TAT is `tat` (0 = empty).
    pub fn eval(&self, tat: u64, now: u64) -> Outcome {
        let tat = tat.max(now);
        let new_tat = tat.saturating_add(self.period);
        let limit_at = now.saturating_add(self.horizon);
        if new_tat <= limit_at {
            Outcome {
                allowed: true,
                tat: new_tat,
                remaining: (limit_at - new_tat) / self.period,
                reset: new_tat - now,
                retry_after: 0,
            }
        } else {
            Outcome {
                allowed: false,
                tat,
                remaining: 0,
                reset: tat - now,
                retry_after: new_tat - limit_at,
            }
        }
    }
}

/// The result of one policy's check, in clock units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub allowed: bool,
    /// The TAT after this request (new TAT when allowed, `max(old, now)` when refused).
    pub tat: u64,
    /// Requests that could still be made right now.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: u64,
    /// When refused: time until this request would be allowed.
    pub retry_after: u64,
}

fn ceil_secs(v: u64, units_per_sec: u64) -> u64 {
    v.div_ceil(units_per_sec.max(1))
}

/// Combines per-policy outcomes (same order as `checks`) into a decision. The headers
/// describe the *tightest* policy: when refused, the refusing policy with the longest
/// retry-after (the client must wait for all of them); otherwise the one with the fewest
/// remaining requests (ties: the longest reset), i.e. the one that will refuse first.
pub(crate) fn decide(checks: &[Check<'_>], outcomes: &[Outcome], units_per_sec: u64) -> Decision {
    let pairs = checks.iter().zip(outcomes);
    let refused = pairs
        .clone()
        .filter(|(_, o)| !o.allowed)
        .max_by_key(|(_, o)| o.retry_after);
    let (check, o) = match refused {
        Some(p) => p,
        None => {
            match pairs.min_by_key(|(c, o)| (o.remaining.min(c.params.limit), u64::MAX - o.reset)) {
                Some(p) => p,
                None => return Decision::allow_without_headers(),
            }
        }
    };
    let headers = RateHeaders {
        limit: check.params.limit,
        // With burst > limit a bucket can hold more than `limit`; report at most `limit`
        // so `Remaining <= Limit` holds for clients (it only under-states).
        remaining: o.remaining.min(check.params.limit),
        reset_secs: ceil_secs(o.reset, units_per_sec),
        retry_after_secs: (!o.allowed).then(|| ceil_secs(o.retry_after, units_per_sec).max(1)),
        policy: check.policy.policy_value(&check.params),
    };
    Decision {
        allowed: refused.is_none(),
        rejected_by: refused.map(|(c, _)| c.policy.name.clone()),
        headers: Some(headers),
        store_error: false,
    }
}
