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

pub mod config;
mod decision;
mod gcra;
mod memory;
mod redis_store;
mod store;
#[cfg(test)]
mod tests;

pub use config::{
    build_policies, validate, KeySpec, OnError, Params, Policies, Policy, RateLimitConfig,
    RawPolicy, RawRateLimits, RawRedis, RawTiers, RedisSettings, StoreConfig, StoreKind, Tiers,
    DEFAULT_MAX_KEYS, MAX_KEY_VALUE_LEN,
};
pub use decision::{Check, Decision, RateHeaders};
pub use memory::{MemoryStore, SHARDS};
pub use redis_store::{RedisStore, LOG_EVERY};
pub use store::Store;

use crate::config::error::ConfigError;

/// Validates a whole `rate_limits:` section and builds its store (tests, tools).
pub fn build_store(raw: &RawRateLimits) -> Result<Store, Vec<ConfigError>> {
    let config = RateLimitConfig::from_raw(raw)?;
    Store::new(&config.store).map_err(|m| vec![ConfigError::new("rate_limits.redis.url", m)])
}
