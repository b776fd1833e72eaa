//! Rate limiting: GCRA policies (`rate_limits:` in the config), applied hierarchically
//! (every policy of a route must allow; a refusal charges none of them), stored in memory
//! (default, per instance) or in Redis (shared by all instances, one atomic round trip).
//!
//! A compiled route holds its policies (`Route::limits`). Per request the proxy builds
//! one [`Check`] per policy (the bucket key from [`KeySpec::bucket_key`], the parameters
//! from [`Policy::params_for`]) and asks the [`Store`] once; a refusal is a 429 with
//! `Retry-After` and the `RateLimit-*` values of [`Decision::headers`], an allowed request
//! carries those values on its response.
//!
//! The [`Store`] is long-lived and independent of the policy set: buckets are keyed by
//! (policy name, key), and each call carries its policy's parameters, so a reload swaps
//! the policies and keeps the store while its [`StoreConfig`] is unchanged. A bucket
//! holds an absolute time, so a policy whose limit changes on reload carries its debt
//! over sensibly.

mod config;
mod gcra;
mod memory;
mod redis_store;
#[cfg(test)]
mod tests;

pub use config::{
    build_policies, validate, KeySpec, OnError, Params, Policies, Policy, RateLimitConfig,
    RawPolicy, RawRateLimits, RawRedis, RawTiers, RedisSettings, StoreConfig, StoreKind, Tiers,
    DEFAULT_MAX_KEYS, MAX_KEY_VALUE_LEN,
};
pub use memory::{MemoryStore, SHARDS};
pub use redis_store::{RedisStore, LOG_EVERY};

use crate::config::error::ConfigError;
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
    /// The Redis store failed or timed out and `allowed` is the `on_error` answer (a
    /// denial then has no headers; the proxy answers 503 `rate_limit_unavailable`).
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

impl Store {
    /// The store these settings ask for. Does not connect to Redis (see [`RedisStore`]).
    pub fn new(config: &StoreConfig) -> Result<Store, String> {
        match (config.kind, &config.redis) {
            (StoreKind::Memory, _) => Ok(Store::Memory(MemoryStore::new(config.max_keys))),
            (StoreKind::Redis, Some(settings)) => {
                RedisStore::new(settings.clone()).map(Store::Redis)
            }
            (StoreKind::Redis, None) => Err("store: redis needs a redis: section".to_string()),
        }
    }
}

/// Validates a whole `rate_limits:` section and builds its store (tests, tools).
pub fn build_store(raw: &RawRateLimits) -> Result<Store, Vec<ConfigError>> {
    let config = RateLimitConfig::from_raw(raw)?;
    Store::new(&config.store).map_err(|m| vec![ConfigError::new("rate_limits.redis.url", m)])
}
