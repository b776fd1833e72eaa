//! Per-route response cache (`routes[i].cache`): an in-memory shared cache for GET (and
//! HEAD, served from GET's entries) with request coalescing, so a cold or expired key costs
//! the upstream one request however many clients ask at once.
//!
//! * Rules (`rules.rs`): a conservative RFC 9111 subset. Upstream `Cache-Control` can only
//!   shorten the route TTL or forbid storing; entries are never served stale.
//! * Memory: one [`RouteCache`] per route, split in up to 16 mutex-guarded shards (locks
//!   are held for map operations only, never across `.await`); each shard is an LRU bounded
//!   by its share of `max_entries` and `max_bytes`, dropping expired entries first. With
//!   several shards the LRU order is per shard, i.e. approximate overall.
//! * Reload: a `RouteCache` depends only on its [`CachePolicy`]; keep the `Arc` when the
//!   route's new policy compares equal and the warm entries survive.
//!
//! Per request: [`RouteCache::lookup`] → [`Lookup::Hit`] (serve it), [`Lookup::Miss`] (go
//! upstream, fill with [`RouteCache::storable`], [`BodyCollector`], [`FillGuard::store`]),
//! [`Lookup::Wait`] ([`Waiter::wait`], then serve or go upstream) or [`Lookup::Bypass`].

mod body;
mod config;
mod fill;
mod rules;
mod shared;
mod store;
#[cfg(test)]
mod tests;

pub use body::{BodyCollector, CachedResponse};
pub use config::{build, CachePolicy, RawCache};
pub use fill::{FillGuard, WaitOutcome, Waiter};
pub use rules::{RequestInfo, CACHEABLE_STATUSES, MAX_VARIANTS};

use http::{HeaderMap, Method};
use rules::RequestClass;
use shared::{Counters, Inflight, Shard, Shared};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use store::{Found, Store};

/// What the cache did for one request: the `X-Cache` header and the
/// `gatehouse_cache_requests_total` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Fetched upstream (and stored when the response may be).
    Miss,
    /// Not a cacheable request: proxied as if the route had no cache.
    Bypass,
    /// A stale entry the upstream confirmed unchanged (`304`): refreshed and served.
    Revalidated,
}

impl CacheStatus {
    pub fn header_value(self) -> http::HeaderValue {
        http::HeaderValue::from_static(self.label())
    }

    /// `HIT`, `MISS`, `BYPASS` (the `X-Cache` value).
    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }

    /// The metric's `result` label; a bypass is not counted.
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            CacheStatus::Hit => Some("hit"),
            CacheStatus::Miss => Some("miss"),
            CacheStatus::Bypass => None,
            CacheStatus::Revalidated => Some("revalidated"),
        }
    }
}

/// The result of [`RouteCache::lookup`].
#[derive(Debug)]
pub enum Lookup {
    /// A fresh stored response. For HEAD send its headers only.
    Hit(Arc<CachedResponse>),
    /// This request leads the fill of its key: fetch upstream, then store or drop the guard.
    Miss(FillGuard),
    /// Like `Miss`, with a stored response (stale, or fresh but the client asked for
    /// `no-cache`) whose validators go upstream: a `304` refreshes it
    /// ([`CachedResponse::refreshed`]), anything else replaces it.
    Revalidate(FillGuard, Arc<CachedResponse>),
    /// Another request is fetching this key: [`Waiter::wait`] for it.
    Wait(Waiter),
    /// Not a cacheable request (method, `Range`, credentials, `no-store`, HEAD miss):
    /// proxy as if the route had no cache.
    Bypass,
}

/// Counters since the cache was created. `hits` includes waiters served by their leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub waits: u64,
    pub bypasses: u64,
    pub stores: u64,
    pub evictions: u64,
}

/// One route's cache store. Long-lived: create it with [`RouteCache::new`] when a route with
/// a `cache:` block first appears, keep it (in an `Arc`) across reloads while the policy is
/// unchanged.
pub struct RouteCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("policy", &self.shared.policy)
            .field("entries", &self.len())
            .finish()
    }
}

/// Shard count: a power of two up to 16, fewer for small caches so that each shard keeps at
/// least 256 entries and room for four maximal bodies (tiny test caches get one shard and
/// exact LRU).
fn shard_count(policy: &CachePolicy) -> u64 {
    let mut n = 16;
    while n > 1 && (policy.max_entries / n < 256 || policy.max_bytes / n < policy.max_body * 4) {
        n /= 2;
    }
    n
}

impl RouteCache {
    pub fn new(policy: CachePolicy) -> Self {
        let n = shard_count(&policy);
        // Split the budgets exactly: the first `rem` shards take one more unit.
        let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard {
                    store: Store::new(share(policy.max_entries, i), share(policy.max_bytes, i)),
                    inflight: HashMap::new(),
                })
            })
            .collect();
        RouteCache {
            shared: Arc::new(Shared {
                policy,
                shards,
                hasher: RandomState::new(),
                next_fill: AtomicU64::new(0),
                stats: Counters::default(),
            }),
        }
    }

    pub fn policy(&self) -> &CachePolicy {
        &self.shared.policy
    }

    /// Look the request up; see [`Lookup`]. Never blocks beyond a shard lock.
    pub fn lookup(&self, req: &RequestInfo<'_>) -> Lookup {
        self.lookup_at(req, Instant::now())
    }

    /// [`lookup`](Self::lookup) with an explicit clock (tests, or a timestamp at hand).
    pub fn lookup_at(&self, req: &RequestInfo<'_>, now: Instant) -> Lookup {
        let stats = &self.shared.stats;
        let RequestClass::Cacheable { revalidate } =
            rules::classify_request(&self.shared.policy, req)
        else {
            stats.bypasses.fetch_add(1, Relaxed);
            return Lookup::Bypass;
        };
        let key = rules::primary_key(req);
        let shard = self.shard_of(&key);
        let mut guard = self.shared.lock(shard);
        let stored = match guard.store.get(&key, req.headers, now) {
            Found::Fresh(variant) if !revalidate => {
                drop(guard);
                stats.hits.fetch_add(1, Relaxed);
                return Lookup::Hit(variant.response.clone());
            }
            Found::Fresh(v) | Found::Stale(v) if v.response.has_validators() => {
                Some(v.response.clone())
            }
            _ => None,
        };
        // A HEAD response has no body to fill a GET entry with.
        if *req.method == Method::HEAD {
            drop(guard);
            stats.bypasses.fetch_add(1, Relaxed);
            return Lookup::Bypass;
        }
        if let Some(fill) = guard.inflight.get(key.as_str()) {
            let rx = fill.rx.clone();
            drop(guard);
            stats.waits.fetch_add(1, Relaxed);
            return Lookup::Wait(Waiter {
                shared: self.shared.clone(),
                rx,
                headers: req.headers.clone(),
            });
        }
        let id = self.shared.next_fill.fetch_add(1, Relaxed);
        let key: Arc<str> = key.into();
        let (tx, rx) = shared::channel();
        guard.inflight.insert(key.clone(), Inflight { id, rx });
        drop(guard);
        stats.misses.fetch_add(1, Relaxed);
        let fill = FillGuard {
            shared: self.shared.clone(),
            shard,
            key,
            id,
            headers: req.headers.clone(),
            tx,
            done: false,
        };
        match stored {
            Some(response) => Lookup::Revalidate(fill, response),
            None => Lookup::Miss(fill),
        }
    }

    /// Remove the entries whose path starts with `prefix` (all of them without one);
    /// returns how many. Fills under way are not affected.
    pub fn purge(&self, prefix: Option<&str>) -> u64 {
        (0..self.shared.shards.len())
            .map(|i| {
                self.shared.lock(i).store.purge(|key| {
                    // Keys are the lower-cased host followed by the path and query.
                    prefix.is_none_or(|p| key.find('/').is_some_and(|at| key[at..].starts_with(p)))
                })
            })
            .sum()
    }

    /// How long the response to `req` may be cached, or `None` if it must not be stored.
    /// Call with the upstream's headers, before the gateway adds per-request ones.
    pub fn storable(
        &self,
        req: &RequestInfo<'_>,
        status: u16,
        headers: &HeaderMap,
    ) -> Option<Duration> {
        rules::response_ttl(&self.shared.policy, req, status, headers, SystemTime::now())
    }

    /// A collector for a response [`storable`](Self::storable) accepted with `ttl`.
    pub fn collector(&self, status: u16, headers: &HeaderMap, ttl: Duration) -> BodyCollector {
        BodyCollector::new(status, headers, ttl, self.shared.policy.max_body)
    }

    fn shard_of(&self, key: &str) -> usize {
        let hash = self.shared.hasher.hash_one(key) as usize;
        hash & (self.shared.shards.len() - 1)
    }

    /// Stored entries (variants), expired ones not yet dropped included.
    pub fn len(&self) -> u64 {
        (0..self.shared.shards.len())
            .map(|i| self.shared.lock(i).store.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held (bodies, headers and per-entry overhead).
    pub fn bytes(&self) -> u64 {
        (0..self.shared.shards.len())
            .map(|i| self.shared.lock(i).store.bytes())
            .sum()
    }

    pub fn hits(&self) -> u64 {
        self.shared.stats.hits.load(Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.shared.stats.misses.load(Relaxed)
    }

    pub fn stats(&self) -> CacheStats {
        let s = &self.shared.stats;
        CacheStats {
            hits: s.hits.load(Relaxed),
            misses: s.misses.load(Relaxed),
            waits: s.waits.load(Relaxed),
            bypasses: s.bypasses.load(Relaxed),
            stores: s.stores.load(Relaxed),
            evictions: s.evictions.load(Relaxed),
        }
    }
}
