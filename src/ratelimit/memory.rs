//! In-process store: 64 shards of `Mutex<HashTable<(Box<str>, u64)>>` (bucket key → TAT
//! in ns).
//!
//! # Concurrency
//! A request locks the shards of all its buckets in ascending shard order (so no two
//! requests can deadlock), checks every policy, commits only if all allow, and unlocks:
//! the check-then-commit of one request is atomic with respect to every other request.
//! Critical sections are a hash lookup per policy; nothing awaits while a lock is held.
//! std's SipHash (randomly keyed) is kept on purpose: keys are client-controlled, so a
//! fast unkeyed hash would let a client flood one shard with colliding keys. Each bucket
//! is hashed once per request, from its parts (policy name, key) without joining them:
//! bits 32–37 of the hash pick the shard and the whole hash finds the bucket in it (the
//! table uses the low bits and the top 7, so the shard's bits do not cluster its slots);
//! the joined key is allocated only when a new bucket is stored.
//!
//! # Memory bound
//! An entry is a hashbrown slot (`Box<str>` 16 B + `u64` 8 B + 1 control byte, at a load
//! factor between 7/16 and 7/8: 29–57 B) plus the heap copy of `"<policy>\0<key>"` (a
//! 24-byte key such as `per-ip\0ip:203.0.113.7` is a 32 B malloc chunk, ~40 B with
//! allocator overhead): **about 70–100 B per entry** (the README gives the measured
//! figure). Values up to [`super::MAX_KEY_VALUE_LEN`] bytes are accepted, so pathological
//! 256-byte keys cost ~330 B each (at most ~330 MiB at the default cap). Each shard holds
//! at most `max_keys / 64` entries.
//!
//! Idle buckets (TAT <= now) are equivalent to absent ones, so dropping them is exact.
//! They are swept when a shard has doubled since its last sweep (amortised O(1) per
//! insert, keeping a shard within 2x its live set or 1024 entries), and by
//! [`MemoryStore::sweep`], which the server's supervisor calls every 30 s to also hand
//! memory back.
//!
//! # At the cap
//! When a shard is full, its idle buckets and about 1/16 of its live ones, those with the
//! smallest TAT (closest to being full again, i.e. whose state is worth least), are
//! evicted in one pass (amortised O(16) entries visited per insert; this pass and the idle
//! sweep are the only critical sections longer than a lookup: ~15k entries at the default
//! cap, tens of µs). **An evicted live bucket starts fresh**: that key gets its full burst
//! again early. This only happens when more than `max_keys` distinct keys were active
//! within one refill period, i.e. under a key flood, and it can only make limits laxer for
//! the evicted keys, never refuse anyone wrongly.

use super::decision::{Check, Decision};
use super::gcra::{decide, Outcome, Rate};
use hashbrown::hash_table::{Entry, HashTable};
use smallvec::SmallVec;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Number of shards.
pub const SHARDS: usize = 64;
// `max_keys` is validated against this: at least one entry per shard.
const _: () = assert!(super::config::MIN_MAX_KEYS == SHARDS as u64);
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// A shard is swept of idle buckets once it has grown to max(2 x its size after the last
/// sweep, this).
const MIN_SWEEP_AT: usize = 1024;
/// TATs sampled to pick the eviction threshold of a full shard.
const EVICT_SAMPLE: usize = 128;

#[derive(Default)]
struct Shard {
    /// `("<policy>\0<key>", TAT)`, found by [`bucket_hash`].
    map: HashTable<(Box<str>, u64)>,
    sweep_at: usize,
}

// Keep each shard's lock on its own cache line.
#[repr(align(64))]
#[derive(Default)]
struct Padded(Mutex<Shard>);

/// The default, in-process store. Long-lived: keep it across config reloads; buckets are
/// keyed by (policy name, key) so they survive a reload that keeps the policy's name.
pub struct MemoryStore {
    shards: Box<[Padded]>,
    hasher: RandomState,
    cap_per_shard: usize,
    epoch: Instant,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

impl MemoryStore {
    /// `max_keys` is the hard cap on buckets (split evenly over the shards, at least one
    /// each, so the total is at most `max(max_keys, 64)`).
    pub fn new(max_keys: u64) -> MemoryStore {
        let per = usize::try_from(max_keys / SHARDS as u64)
            .unwrap_or(usize::MAX)
            .max(1);
        MemoryStore {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            hasher: RandomState::new(),
            cap_per_shard: per,
            epoch: Instant::now(),
        }
    }

    /// The effective cap (`max_keys` rounded down to a multiple of 64).
    pub fn max_keys(&self) -> usize {
        self.cap_per_shard * SHARDS
    }

    /// Nanoseconds on this store's monotonic clock (the `now` that [`Self::check`] uses).
    pub fn now_nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Checks (and, if all allow, charges) every policy of one request, now.
    pub fn check(&self, checks: &[Check<'_>]) -> Decision {
        self.check_at(checks, self.now_nanos())
    }

    /// [`Self::check`] at an explicit time `now` in nanoseconds (monotonic; tests start at 0).
    pub fn check_at(&self, checks: &[Check<'_>], now: u64) -> Decision {
        match checks {
            [] => Decision::allow_without_headers(),
            [one] => self.check_one(one, now),
            _ => self.check_many(checks, now),
        }
    }

    /// The common case (one policy): one lock, one hash-table lookup, no bookkeeping.
    fn check_one(&self, c: &Check<'_>, now: u64) -> Decision {
        let hash = bucket_hash(&self.hasher, &c.policy.name, c.key);
        let cap = self.cap_per_shard;
        let mut g = self.lock(shard_of(hash));
        if g.map.len() >= g.sweep_at.max(MIN_SWEEP_AT).min(cap) {
            g.make_room(now, cap);
        }
        let rate = Rate::for_check(c, 1);
        let rehash = |e: &(Box<str>, u64)| stored_hash(&self.hasher, &e.0);
        let o = match g.map.entry(hash, |e| is_bucket(&e.0, c), rehash) {
            Entry::Occupied(mut e) => {
                let o = rate.eval(e.get().1, now);
                if o.allowed {
                    e.get_mut().1 = o.tat;
                }
                o
            }
            Entry::Vacant(e) => {
                let o = rate.eval(0, now);
                if o.allowed {
                    e.insert((bucket_key(c).into_boxed_str(), o.tat));
                }
                o
            }
        };
        drop(g);
        decide(
            std::slice::from_ref(c),
            std::slice::from_ref(&o),
            NANOS_PER_SEC,
        )
    }

    /// Several policies: lock their shards in ascending order, evaluate all, commit all or
    /// nothing.
    fn check_many(&self, checks: &[Check<'_>], now: u64) -> Decision {
        // Inline up to 4 policies: no heap for the bookkeeping of a request.
        let hashes: SmallVec<[u64; 4]> = checks
            .iter()
            .map(|c| bucket_hash(&self.hasher, &c.policy.name, c.key))
            .collect();
        let shards: SmallVec<[usize; 4]> = hashes.iter().map(|&h| shard_of(h)).collect();
        let mut order = shards.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: SmallVec<[MutexGuard<'_, Shard>; 4]> =
            order.iter().map(|&s| self.lock(s)).collect();
        let slot = |i: usize| order.binary_search(&shards[i]).unwrap_or(0);

        // Phase 1: evaluate all; a bucket named twice in one request sees its own charge.
        let mut outcomes: SmallVec<[Outcome; 4]> = SmallVec::new();
        let mut existed: SmallVec<[bool; 4]> = SmallVec::new();
        for (i, c) in checks.iter().enumerate() {
            let same = |j: usize| {
                hashes[j] == hashes[i]
                    && checks[j].policy.name == c.policy.name
                    && checks[j].key == c.key
            };
            let (tat, was) = match (0..i).rev().find(|&j| same(j)) {
                Some(j) => (Some(outcomes[j].tat), true),
                None => (
                    guards[slot(i)]
                        .map
                        .find(hashes[i], |e| is_bucket(&e.0, c))
                        .map(|e| e.1),
                    false,
                ),
            };
            existed.push(was || tat.is_some());
            outcomes.push(Rate::for_check(c, 1).eval(tat.unwrap_or(0), now));
        }
        // Phase 2: commit only if every policy allowed.
        if outcomes.iter().all(|o| o.allowed) {
            for (i, o) in outcomes.iter().enumerate() {
                let hasher = &self.hasher;
                let (hash, c) = (hashes[i], &checks[i]);
                guards[slot(i)].put(hasher, hash, c, existed[i], o.tat, now, self.cap_per_shard);
            }
        }
        drop(guards);
        decide(checks, &outcomes, NANOS_PER_SEC)
    }

    /// Drops idle buckets (exact: an idle bucket equals a missing one) and shrinks shards
    /// that are mostly empty. Locks one shard at a time. Returns the number of buckets left.
    pub fn sweep(&self) -> usize {
        self.sweep_at(self.now_nanos())
    }

    /// [`Self::sweep`] at an explicit time.
    pub fn sweep_at(&self, now: u64) -> usize {
        (0..SHARDS)
            .map(|s| {
                let mut g = self.lock(s);
                g.map.retain(|e| e.1 > now);
                if g.map.capacity() > 4 * g.map.len().max(MIN_SWEEP_AT) {
                    g.map.shrink_to_fit(|e| stored_hash(&self.hasher, &e.0));
                }
                g.sweep_at = (2 * g.map.len()).max(MIN_SWEEP_AT);
                g.map.len()
            })
            .sum()
    }

    /// Number of buckets held (locks every shard in turn; for tests and metrics).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.lock(s).map.len()).sum()
    }

    /// Buckets the shards have room for without growing (tests: that a sweep shrank them).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        (0..SHARDS).map(|s| self.lock(s).map.capacity()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave a TAT half-written; keep going.
        self.shards[shard]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The shard of a bucket: bits 32–37 of its hash (see the module documentation).
fn shard_of(hash: u64) -> usize {
    ((hash >> 32) % SHARDS as u64) as usize
}

/// The hash of the bucket `"<policy>\0<key>"`, from its parts.
fn bucket_hash(hasher: &RandomState, policy: &str, key: &str) -> u64 {
    let mut h = hasher.build_hasher();
    h.write(policy.as_bytes());
    h.write_u8(0);
    h.write(key.as_bytes());
    h.finish()
}

/// [`bucket_hash`] of a stored bucket (when the table grows or shrinks).
fn stored_hash(hasher: &RandomState, stored: &str) -> u64 {
    let (policy, key) = stored.split_once('\0').unwrap_or((stored, ""));
    bucket_hash(hasher, policy, key)
}

/// Whether the stored bucket is `c`'s: `"<policy>\0<key>"`, compared in place.
fn is_bucket(stored: &str, c: &Check<'_>) -> bool {
    let policy: &str = &c.policy.name;
    stored.len() == policy.len() + 1 + c.key.len()
        && stored.as_bytes()[policy.len()] == 0
        && stored.starts_with(policy)
        && stored.ends_with(c.key)
}

/// `"<policy>\0<key>"`: policy names cannot contain NUL, so buckets of different
/// policies never collide.
fn bucket_key(c: &Check<'_>) -> String {
    let mut k = String::with_capacity(c.policy.name.len() + 1 + c.key.len());
    k.push_str(&c.policy.name);
    k.push('\0');
    k.push_str(c.key);
    k
}

impl Shard {
    /// Stores `tat` for `c`'s bucket (`hash` is its [`bucket_hash`]). `existed`: the
    /// bucket was found under this same lock (so no insert and no eviction can be needed).
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        hasher: &RandomState,
        hash: u64,
        c: &Check<'_>,
        existed: bool,
        tat: u64,
        now: u64,
        cap: usize,
    ) {
        if existed {
            if let Some(e) = self.map.find_mut(hash, |e| is_bucket(&e.0, c)) {
                e.1 = tat;
                return;
            }
        }
        if self.map.len() >= self.sweep_at.max(MIN_SWEEP_AT).min(cap) {
            self.make_room(now, cap);
        }
        let value = (bucket_key(c).into_boxed_str(), tat);
        self.map
            .insert_unique(hash, value, |e| stored_hash(hasher, &e.0));
    }

    /// Drops idle buckets; if the shard is full, also evicts about 1/16 of it: the live
    /// buckets with the smallest TAT. The threshold is the 1/16 quantile of a sample of
    /// [`EVICT_SAMPLE`] TATs (hash order is independent of TAT, so the table's first slots
    /// are a fair sample), which keeps this to one pass over the shard; ties at the
    /// threshold are evicted only up to the 1/16 budget, so a shard of equal TATs is not
    /// wiped at once.
    fn make_room(&mut self, now: u64, cap: usize) {
        if self.map.len() < cap {
            self.map.retain(|e| e.1 > now);
        } else {
            let mut sample = [0u64; EVICT_SAMPLE];
            let mut n = 0;
            for (slot, e) in sample.iter_mut().zip(self.map.iter()) {
                *slot = e.1;
                n += 1;
            }
            let sample = &mut sample[..n];
            let threshold = *sample.select_nth_unstable((n / 16).saturating_sub(1)).1;
            let mut tie_budget = (cap / 16).max(1);
            self.map.retain(|&mut (_, t)| {
                if t <= now || t < threshold {
                    false
                } else if t == threshold && tie_budget > 0 {
                    tie_budget -= 1;
                    false
                } else {
                    true
                }
            });
        }
        self.sweep_at = (2 * self.map.len()).max(MIN_SWEEP_AT);
    }
}
