//! Rate limiting: GCRA policies (`rate_limits:` in the config), applied hierarchically
//! (every policy of a route must allow; a refusal charges none of them), stored in memory
//! (default, per instance) or in Redis (shared by all instances, one atomic round trip).
//!
//! Use from the proxy, per request:
//! 1. for each policy name of the route, `policies.get(name)`, extract the key value the
//!    policy's [`KeySpec`] asks for, build the bucket key with [`KeySpec::bucket_key`] and
//!    the parameters with [`Policy::params_for`] (tier claim value, if any);
//! 2. `store.check(&checks).await`;
//! 3. refused → 429 with `Retry-After` + `RateLimit-*` from [`Decision::headers`];
//!    allowed → add the `RateLimit-*` headers to the response.
//!
//! The [`Store`] is long-lived and independent of the policy set: buckets are keyed by
//! (policy name, key), and each call carries its policy's parameters, so a reload swaps
//! [`Policies`] and keeps the store (see [`store_changed`]). A bucket holds an absolute
//! time, so a policy whose limit changes on reload carries its debt over sensibly.

// The only place that names the rest of the crate: its config types
// (`crate::config::units::Dur`, `crate::config::ConfigError`) and the address formatter.
pub(crate) use crate::config::units::Dur;
pub(crate) use crate::config::ConfigError;
pub(crate) use crate::headers::ip_text;

mod config;
mod gcra;
mod memory;
mod redis_store;
#[cfg(test)]
mod tests;

pub use config::{
    build_policies, KeySpec, OnError, Params, Policies, Policy, RawPolicy, RawRateLimits, RawRedis,
    RawTiers, RedisSettings, StoreKind, Tiers, DEFAULT_MAX_KEYS, MAX_KEY_VALUE_LEN,
};
pub use memory::{MemoryStore, SHARDS};
pub use redis_store::{RedisStore, LOG_EVERY};

use std::sync::Arc;

/// One policy to apply to the current request.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub policy: &'a Policy,
    /// Bucket key, already namespaced by the caller ([`KeySpec::bucket_key`]).
    pub key: &'a str,
    pub params: Params,
}

/// Values for the `RateLimit-*` response headers (draft-ietf-httpapi-ratelimit-headers-07).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    /// `RateLimit-Limit`: requests per window for this request's tier.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could still be made right now (<= `limit`).
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds (rounded up) until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After`: whole seconds (rounded up, >= 1); only on refusal.
    pub retry_after_secs: Option<u64>,
    /// `RateLimit-Policy`, see [`Policy::policy_header`].
    pub policy: http::HeaderValue,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The refusing policy (the one with the longest retry-after if several refused).
    pub rejected_by: Option<Arc<str>>,
    /// The tightest policy's headers: the refusing one, else the one with the fewest
    /// remaining. `None` when there were no checks or the store failed.
    pub headers: Option<RateHeaders>,
    /// The Redis store failed or timed out and `allowed` is the `on_error` answer. A
    /// denial then has no headers: send 429 with `Retry-After: 1` (or 503, your call).
    pub store_error: bool,
}

impl Decision {
    pub(crate) fn allow_without_headers() -> Decision {
        Decision {
            allowed: true,
            rejected_by: None,
            headers: None,
            store_error: false,
        }
    }
}

/// The bucket store (an enum, so `check` needs no boxed future).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one long-lived value: boxing would buy nothing
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Checks all of a request's policies; charges them only if all allow.
    pub async fn check(&self, checks: &[Check<'_>]) -> Decision {
        match self {
            Store::Memory(m) => m.check(checks),
            Store::Redis(r) => r.check(checks).await,
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Memory(_) => StoreKind::Memory,
            Store::Redis(_) => StoreKind::Redis,
        }
    }

    /// Redis failures answered per `on_error` (always 0 for the memory store): export it.
    pub fn redis_errors(&self) -> u64 {
        match self {
            Store::Memory(_) => 0,
            Store::Redis(r) => r.redis_errors(),
        }
    }
}

/// Builds the store the section asks for. Does not connect to Redis (see [`RedisStore`]).
pub fn build_store(raw: &RawRateLimits) -> Result<Store, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let kind = config::store_kind(raw, &mut errs);
    let max_keys = config::max_keys(raw, &mut errs);
    let redis = config::redis_settings(raw, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    match (kind, redis) {
        (StoreKind::Memory, _) => Ok(Store::Memory(MemoryStore::new(max_keys))),
        (StoreKind::Redis, Some(settings)) => RedisStore::new(settings)
            .map(Store::Redis)
            .map_err(|m| vec![ConfigError::new("rate_limits.redis.url", m)]),
        (StoreKind::Redis, None) => Err(vec![ConfigError::new(
            "rate_limits.redis",
            "store: redis needs a redis: section (url, timeout, on_error, prefix)",
        )]),
    }
}

/// Whether a reload must build a new store (and so start with empty buckets): true when
/// `store`, `redis` or `max_keys` changed. Policy changes alone keep the store.
pub fn store_changed(old: &RawRateLimits, new: &RawRateLimits) -> bool {
    old.store.as_deref().unwrap_or("memory") != new.store.as_deref().unwrap_or("memory")
        || old.redis != new.redis
        || old.max_keys != new.max_keys
}
