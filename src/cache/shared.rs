//! The state a route's cache shares with its in-flight fills and their waiters, which may
//! outlive the `RouteCache` across a reload: the sharded stores, the fills in flight and
//! the counters.

use super::config::CachePolicy;
use super::store::{Store, Variant};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::watch;

/// What a fill's waiters see.
#[derive(Debug)]
pub(super) enum FillState {
    Pending,
    Stored(Arc<Variant>),
    /// The leader stored nothing (not storable, upstream error, client gone...).
    Abandoned,
}

/// The in-flight record of a key in its shard; `id` makes sure a guard only ever removes
/// its own record.
pub(super) struct Inflight {
    pub id: u64,
    pub rx: watch::Receiver<FillState>,
}

pub(super) fn channel() -> (watch::Sender<FillState>, watch::Receiver<FillState>) {
    watch::channel(FillState::Pending)
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) waits: AtomicU64,
    pub(super) bypasses: AtomicU64,
    pub(super) stores: AtomicU64,
    pub(super) evictions: AtomicU64,
}

pub(super) struct Shard {
    pub(super) store: Store,
    pub(super) inflight: HashMap<Arc<str>, Inflight>,
}

/// State shared by a [`RouteCache`] and its outstanding guards and waiters, which may
/// outlive the `RouteCache` across a reload.
pub(super) struct Shared {
    pub(super) policy: CachePolicy,
    pub(super) shards: Box<[Mutex<Shard>]>,
    pub(super) hasher: RandomState,
    pub(super) next_fill: AtomicU64,
    pub(super) stats: Counters,
}

impl Shared {
    pub(super) fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic elsewhere cannot leave a shard half-updated in a way that matters more
        // than losing the whole cache would.
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// End fill `id` of `key`: insert `variant` (if any) and remove the in-flight record in
    /// one critical section, so a request arriving after it sees the entry, never a gap.
    pub(super) fn end_fill(
        &self,
        shard: usize,
        key: &Arc<str>,
        id: u64,
        variant: Option<Arc<Variant>>,
        now: Instant,
    ) -> bool {
        let mut guard = self.lock(shard);
        let outcome = variant.and_then(|v| guard.store.insert(key.clone(), v, now));
        if guard.inflight.get(&**key).is_some_and(|f| f.id == id) {
            guard.inflight.remove(&**key);
        }
        drop(guard);
        if let Some(evicted) = outcome {
            self.stats.stores.fetch_add(1, Relaxed);
            self.stats.evictions.fetch_add(evicted, Relaxed);
        }
        outcome.is_some()
    }
}
