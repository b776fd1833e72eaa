//! Rate limiting: GCRA policies (`rate_limits:` in the config), applied hierarchically
//! (every policy of a route must allow; a refusal charges none of them), stored in memory
//! (default, per instance), in Redis (shared by all instances — one Redis, a Cluster or
//! a Sentinel-managed master — one atomic round trip per decision), or hybrid (local
//! decisions from leases of each key's Redis budget).
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
mod hybrid;
mod memory;
mod redis;
mod store;
#[cfg(test)]
mod tests;

pub use config::{
    build_policies, validate, KeySpec, OnError, Params, Policies, Policy, RateLimitConfig,
    RawPolicy, RawRateLimits, RawRedis, RawSentinel, RawStoreBreaker, RawTiers, RedisSettings,
    RedisTarget, StoreConfig, StoreKind, Tiers, DEFAULT_MAX_KEYS, MAX_KEY_VALUE_LEN,
};
pub use decision::{Check, Decision, RateHeaders};
pub use hybrid::HybridStore;
pub use memory::{MemoryStore, SHARDS};
pub use redis::{Lease, Probe, RedisStore, StoreState, LOG_EVERY};
pub use store::Store;

use crate::config::error::ConfigError;

/// Validates a whole `rate_limits:` section and builds its store (tests, tools).
pub fn build_store(raw: &RawRateLimits) -> Result<Store, Vec<ConfigError>> {
    let config = RateLimitConfig::from_raw(raw)?;
    Store::new(&config.store).map_err(|m| vec![ConfigError::new("rate_limits.redis.url", m)])
}
