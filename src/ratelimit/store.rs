//! The bucket store a runtime uses: in memory or in Redis.

use super::config::{StoreConfig, StoreKind};
use super::decision::{Check, Decision};
use super::memory::MemoryStore;
use super::redis_store::RedisStore;

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
