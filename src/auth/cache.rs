//! Verified-token cache: makes a repeated valid token cost a hash, a short mutex section
//! and a memcmp instead of an RSA/ECDSA verification.
//!
//! - Keyed by a keyed SipHash (random per process, so nobody can aim collisions at one
//!   shard) of the token's last 64 bytes plus its length. The tail holds the signature,
//!   which already distinguishes valid tokens; hashing only it keeps lookups cheap for
//!   8 KiB tokens. A hit still compares the *full* token bytes, so a token that shares the
//!   tail but differs anywhere else (tampering) never hits.
//! - Entries expire at the token's `exp` (capped by the verifier) and are never returned
//!   after it. Only valid tokens are inserted, so a failure always re-verifies.
//! - `shards` independent `std::sync::Mutex<HashMap>`s; the lock is held only for one map
//!   operation. Eviction when a shard is full: drop expired entries, else one arbitrary
//!   entry. No LRU bookkeeping on the hit path.

use super::token::Claims;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const MAX_SHARDS: usize = 16;
const HASHED_TAIL: usize = 64;

struct Entry {
    token: Box<str>,
    claims: Arc<Claims>,
    /// Unix seconds; the entry is valid while `now < expires`.
    expires: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>,
    hits: u64,
}

/// The keys are already SipHash outputs; hashing them again would only cost time.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl TokenCache {
    /// A cache holding at most `capacity` entries; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_SHARDS);
        TokenCache {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            // Floor division keeps the total at or below `capacity`.
            per_shard: capacity / n,
            hasher: RandomState::new(),
        }
    }

    fn key(&self, token: &str) -> u64 {
        let b = token.as_bytes();
        let mut h = self.hasher.build_hasher();
        h.write(&b[b.len().saturating_sub(HASHED_TAIL)..]);
        h.write_usize(b.len());
        h.finish()
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // High bits pick the shard so the map's bucket bits (low) stay well spread.
        let i = (key >> 40) as usize % self.shards.len();
        // A panic while holding the lock cannot leave a half-written entry behind
        // (single map operations), so a poisoned shard is still usable.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        if self.per_shard == 0 {
            return None;
        }
        let key = self.key(token);
        let mut shard = self.shard(key);
        let (fresh, claims) = match shard.map.get(&key) {
            Some(e) if *e.token == *token => (e.expires > now, Arc::clone(&e.claims)),
            _ => return None,
        };
        if fresh {
            shard.hits += 1;
            Some(claims)
        } else {
            shard.map.remove(&key);
            None
        }
    }

    pub(crate) fn insert(&self, token: &str, claims: Arc<Claims>, expires: u64, now: u64) {
        if self.per_shard == 0 || expires <= now {
            return;
        }
        let key = self.key(token);
        let mut shard = self.shard(key);
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&key) {
            shard.map.retain(|_, e| e.expires > now);
            if shard.map.len() >= self.per_shard {
                if let Some(&victim) = shard.map.keys().next() {
                    shard.map.remove(&victim);
                }
            }
        }
        let token = token.into();
        shard.map.insert(
            key,
            Entry {
                token,
                claims,
                expires,
            },
        );
    }

    /// Drop everything, e.g. after the JWKS key set changed (a removed key must stop
    /// validating its tokens at once).
    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().unwrap_or_else(PoisonError::into_inner).map.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).hits)
            .sum()
    }
}
