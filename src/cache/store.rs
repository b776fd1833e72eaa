//! One shard's bounded store: an O(1) LRU (a doubly linked list threaded through a slab,
//! no `unsafe`) plus an expiry index, so expired entries are dropped before any live one is
//! evicted. Several variants (`Vary`) may share one URL key.
//!
//! An entry with validators (`ETag` or `Last-Modified`) is kept for a while after it
//! goes stale ([`stale_keep`]): never served as it is, but the request that finds it
//! asks the upstream whether it changed, and a `304` refreshes it without the body
//! being sent again.

use super::body::CachedResponse;
use super::rules;
use http::header::{self, HeaderMap, HeaderName};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

const NIL: usize = usize::MAX;

/// What [`Store::get`] found.
pub enum Found {
    Fresh(Arc<Variant>),
    /// Stale, with validators: revalidate it upstream.
    Stale(Arc<Variant>),
    Nothing,
}

/// How long an entry stays after it went stale, to be revalidated: as long again as it
/// was fresh, at least a minute and at most an hour, when it has a validator; else not
/// at all.
pub fn stale_keep(response: &CachedResponse) -> std::time::Duration {
    if !response.has_validators() {
        return std::time::Duration::ZERO;
    }
    response.ttl.clamp(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(3600),
    )
}

/// The request header values a variant was selected by: (name, value or absent).
pub type VaryValues = Box<[(HeaderName, Option<Box<[u8]>>)]>;

/// One stored variant: the response plus the request header values (named by its `Vary`)
/// that select it.
#[derive(Debug)]
pub struct Variant {
    pub vary: VaryValues,
    pub response: Arc<CachedResponse>,
}

impl Variant {
    /// `None` when the response's `Vary` makes it unselectable (`*`, invalid names).
    pub fn new(response: Arc<CachedResponse>, request_headers: &HeaderMap) -> Option<Self> {
        let vary_values = response
            .headers
            .iter()
            .filter(|(n, _)| *n == header::VARY)
            .map(|(_, v)| v);
        let vary = rules::vary_names(vary_values)?
            .into_iter()
            .map(|name| {
                let value = rules::vary_value(request_headers, &name);
                (name, value)
            })
            .collect();
        Some(Variant { vary, response })
    }

    /// Whether a request with these headers may be served this variant.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| rules::vary_value(headers, name).as_deref() == value.as_deref())
    }

    /// A new variant supersedes an old one with the same selecting values, and every old one
    /// selected by a different header set (the upstream changed its `Vary`).
    fn superseded_by(&self, new: &Variant) -> bool {
        let names = |v: &Variant| v.vary.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        names(self) != names(new) || self.vary == new.vary
    }

    fn size(&self, key: &str) -> u64 {
        let vary: u64 = self
            .vary
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.as_ref().map_or(0, |v| v.len()) + 32) as u64)
            .sum();
        self.response.approx_size() + key.len() as u64 + vary
    }
}

struct Node {
    key: Arc<str>,
    variant: Arc<Variant>,
    /// Stale from then on.
    expires: Instant,
    /// Dropped from then on (later than `expires` for entries that can be revalidated).
    evict_at: Instant,
    seq: u64,
    size: u64,
    prev: usize,
    next: usize,
}

/// Bounded LRU of variants. Not thread-safe by itself: each shard wraps one in a mutex.
pub struct Store {
    map: HashMap<Arc<str>, Vec<usize>>,
    nodes: Vec<Option<Node>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next victim once no entry is expired.
    tail: usize,
    /// (eviction time, insertion seq) -> slot; `seq` keeps keys unique.
    by_expiry: BTreeMap<(Instant, u64), usize>,
    seq: u64,
    len: u64,
    bytes: u64,
    max_entries: u64,
    max_bytes: u64,
}

impl Store {
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        Store {
            map: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            by_expiry: BTreeMap::new(),
            seq: 0,
            len: 0,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node> {
        self.nodes.get_mut(i).and_then(Option::as_mut)
    }

    /// The variant of `key` matching `headers`, marked most recently used: fresh, or
    /// stale but kept for revalidation. Variants past their eviction time met on the way
    /// are removed.
    pub fn get(&mut self, key: &str, headers: &HeaderMap, now: Instant) -> Found {
        let Some(slots) = self.map.get(key) else {
            return Found::Nothing;
        };
        let mut evicted = Vec::new();
        let mut fresh = None;
        let mut stale = None;
        for &i in slots {
            let Some(node) = self.node(i) else { continue };
            if node.evict_at <= now {
                evicted.push(i);
            } else if !node.variant.matches(headers) {
            } else if node.expires > now {
                fresh = fresh.or(Some(i));
            } else {
                stale = stale.or(Some(i));
            }
        }
        for i in evicted {
            self.remove(i);
        }
        let Some(i) = fresh.or(stale) else {
            return Found::Nothing;
        };
        self.unlink(i);
        self.push_front(i);
        match self.node(i) {
            Some(n) if fresh.is_some() => Found::Fresh(n.variant.clone()),
            Some(n) => Found::Stale(n.variant.clone()),
            None => Found::Nothing,
        }
    }

    /// Remove every entry whose key `matches`; returns how many.
    pub fn purge(&mut self, matches: impl Fn(&str) -> bool) -> u64 {
        let doomed: Vec<usize> = self
            .map
            .iter()
            .filter(|(k, _)| matches(k))
            .flat_map(|(_, slots)| slots.iter().copied())
            .collect();
        let n = doomed.len() as u64;
        for i in doomed {
            self.remove(i);
        }
        n
    }

    /// Store `variant` under `key`, evicting as needed. Returns the number of entries
    /// removed to make room (expired first, then least recently used), or `None` if the
    /// entry cannot be stored at all (larger than the shard, or already expired).
    pub fn insert(&mut self, key: Arc<str>, variant: Arc<Variant>, now: Instant) -> Option<u64> {
        let size = variant.size(&key);
        let expires = variant.response.expires_at();
        let evict_at = expires + stale_keep(&variant.response);
        if size > self.max_bytes || self.max_entries == 0 || expires <= now {
            return None;
        }
        let mut evicted = 0;
        if let Some(slots) = self.map.get(&key) {
            let old: Vec<usize> = slots
                .iter()
                .copied()
                .filter(|&i| {
                    self.node(i)
                        .is_some_and(|n| n.evict_at <= now || n.variant.superseded_by(&variant))
                })
                .collect();
            for i in old {
                self.remove(i);
            }
        }
        if let Some(&oldest) = self
            .map
            .get(&key)
            .filter(|s| s.len() >= rules::MAX_VARIANTS)
            .and_then(|s| s.first())
        {
            self.remove(oldest);
            evicted += 1;
        }
        while let Some((&(at, _), &i)) = self.by_expiry.first_key_value() {
            if at > now {
                break;
            }
            self.remove(i);
            evicted += 1;
        }
        while self.tail != NIL
            && (self.len + 1 > self.max_entries || self.bytes + size > self.max_bytes)
        {
            self.remove(self.tail);
            evicted += 1;
        }
        self.seq += 1;
        let node = Node {
            key: key.clone(),
            variant,
            expires,
            evict_at,
            seq: self.seq,
            size,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.push_front(i);
        self.by_expiry.insert((evict_at, self.seq), i);
        self.map.entry(key).or_default().push(i);
        self.len += 1;
        self.bytes += size;
        Some(evicted)
    }

    fn remove(&mut self, i: usize) {
        if self.node(i).is_none() {
            return;
        }
        self.unlink(i);
        let Some(node) = self.nodes.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.by_expiry.remove(&(node.evict_at, node.seq));
        if let Some(slots) = self.map.get_mut(&node.key) {
            slots.retain(|&s| s != i);
            if slots.is_empty() {
                self.map.remove(&node.key);
            }
        }
        self.len -= 1;
        self.bytes -= node.size;
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let Some((prev, next)) = self.node(i).map(|n| (n.prev, n.next)) else {
            return;
        };
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        if let Some(n) = self.node_mut(i) {
            n.prev = NIL;
            n.next = NIL;
        }
    }

    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        if let Some(n) = self.node_mut(i) {
            n.prev = NIL;
            n.next = old_head;
        }
        match self.node_mut(old_head) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }
}
