//! The bucket store a runtime uses: in memory, in Redis, or hybrid.

use super::config::{StoreConfig, StoreKind};
use super::decision::{Check, Decision};
use super::hybrid::HybridStore;
use super::memory::MemoryStore;
use super::redis::{Probe, RedisStore, StoreState};

/// The bucket store (an enum, so `check` needs no boxed future).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one long-lived value: boxing would buy nothing
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
    Hybrid(HybridStore),
}

impl Store {
    /// The store these settings ask for. Does not connect to Redis (see [`RedisStore`]).
    pub fn new(config: &StoreConfig) -> Result<Store, String> {
        let redis = || match &config.redis {
            Some(settings) => RedisStore::new(settings.clone()),
            None => Err("store: redis and store: hybrid need a redis: section".to_string()),
        };
        Ok(match config.kind {
            StoreKind::Memory => Store::Memory(MemoryStore::new(config.max_keys)),
            StoreKind::Redis => Store::Redis(redis()?),
            StoreKind::Hybrid => Store::Hybrid(HybridStore::new(redis()?, config.max_keys)),
        })
    }

    /// Checks all of a request's policies; charges them only if all allow.
    pub async fn check(&self, checks: &[Check<'_>]) -> Decision {
        match self {
            Store::Memory(m) => m.check(checks),
            Store::Redis(r) => r.check(checks).await,
            Store::Hybrid(h) => h.check(checks).await,
        }
    }

    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Memory(_) => StoreKind::Memory,
            Store::Redis(_) => StoreKind::Redis,
            Store::Hybrid(_) => StoreKind::Hybrid,
        }
    }

    fn redis(&self) -> Option<&RedisStore> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r),
            Store::Hybrid(h) => Some(h.redis()),
        }
    }

    /// Redis failures answered per `on_error` (always 0 for the memory store): export it.
    pub fn redis_errors(&self) -> u64 {
        self.redis().map_or(0, RedisStore::redis_errors)
    }

    /// Whether the shared store answers (`Up` for the memory store).
    pub fn state(&self) -> StoreState {
        self.redis().map_or(StoreState::Up, RedisStore::state)
    }

    /// What the configured Redis is (nothing to ask for the memory store).
    pub async fn probe(&self) -> Probe {
        match self.redis() {
            Some(r) => r.probe().await,
            None => Probe::Fine,
        }
    }

    /// Drop idle buckets and expired leases (a periodic chore; nothing for Redis).
    pub fn sweep(&self) {
        match self {
            Store::Memory(m) => {
                m.sweep();
            }
            Store::Hybrid(h) => {
                h.sweep();
            }
            Store::Redis(_) => {}
        }
    }
}
