//! Gatehouse's upstream selection: the order in which one request considers a service's
//! upstreams, for every `balance` mode. Upstreams are named by their index in the
//! service's config.
//!
//! - `round_robin`: an atomic counter over the upstreams; weights ignored.
//! - `weighted`: *smooth* weighted round robin (nginx's algorithm). The sequence is
//!   deterministic, so it is computed once at build time (its period is the sum of the
//!   weights) and a request costs one atomic increment. Pingora's own `Weighted` repeats
//!   each backend `weight` times in a row (A,A,A,B), which bursts.
//! - `least_connections`: the upstream with the fewest in-flight requests relative to
//!   its weight; ties rotate.
//! - `consistent_hash`: Pingora's Ketama ring (weights honoured).
//! - `random`: weighted random.
//!
//! Whatever the first choice, [`Candidates`] then walks every other upstream once, so
//! the caller can skip unhealthy, open-circuit or already-tried ones. The walk allocates
//! nothing and hashes nothing but a consistent-hash key, where Pingora's
//! `LoadBalancer::select_with` keeps a `HashSet` of hashed backends for the same
//! guarantee (`benches/selection.rs` compares the two).

use super::config::Balance;
use super::state::UpstreamState;
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One upstream as the selector sees it.
pub struct Member {
    /// Its address and weight.
    pub backend: Backend,
    /// In-flight requests (least_connections reads them).
    pub state: Arc<UpstreamState>,
}

pub struct Selector {
    pub(super) members: Box<[Member]>,
    balance: Balance,
    counter: AtomicUsize,
    /// `weighted`: one period of the smooth weighted sequence, as upstream indices.
    /// `random`: each index repeated `weight` times.
    table: Box<[u16]>,
    ketama: Option<Arc<KetamaHashing>>,
}

impl Selector {
    pub fn new(balance: Balance, members: Vec<Member>) -> Self {
        let weights: Vec<usize> = members.iter().map(|m| m.backend.weight.max(1)).collect();
        let table = match balance {
            Balance::Weighted => smooth_weighted_sequence(&weights),
            Balance::Random => weights
                .iter()
                .enumerate()
                .flat_map(|(i, w)| std::iter::repeat_n(i as u16, *w))
                .collect(),
            _ => Box::default(),
        };
        let ketama = (balance == Balance::ConsistentHash).then(|| {
            let ring: BTreeSet<Backend> = members.iter().map(|m| m.backend.clone()).collect();
            Arc::new(KetamaHashing::build(&ring))
        });
        Selector {
            members: members.into_boxed_slice(),
            balance,
            counter: AtomicUsize::new(0),
            table,
            ketama,
        }
    }

    /// The upstreams in the order this request should consider them: the balancer's
    /// choice first, then each other upstream once.
    pub fn candidates(&self, key: &[u8]) -> Candidates<'_> {
        let n = self.members.len();
        let mut walk = Candidates {
            sel: self,
            first: 0,
            step: 0,
            ring: None,
            seen: smallvec::SmallVec::new(),
            given: 0,
        };
        if n == 0 {
            return walk;
        }
        walk.first = match self.balance {
            Balance::RoundRobin => self.counter.fetch_add(1, Ordering::Relaxed) % n,
            Balance::Weighted => {
                let i = self.counter.fetch_add(1, Ordering::Relaxed) % self.table.len();
                usize::from(self.table[i])
            }
            Balance::Random => {
                usize::from(self.table[rand::random::<u32>() as usize % self.table.len()])
            }
            Balance::LeastConnections => self.least_loaded(),
            Balance::ConsistentHash => {
                walk.ring = self.ketama.as_ref().map(|k| (k.iter(key), 0));
                walk.seen.resize(n.div_ceil(64), 0);
                0
            }
        };
        walk
    }

    fn least_loaded(&self) -> usize {
        let n = self.members.len();
        let start = self.counter.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = (usize::MAX, 1usize);
        for k in 0..n {
            let i = (start + k) % n;
            let m = &self.members[i];
            let inflight = m.state.inflight.get();
            let weight = m.backend.weight.max(1);
            // inflight/weight < best_inflight/best_weight, without division
            if (inflight as u128) * (best_load.1 as u128) < (best_load.0 as u128) * (weight as u128)
            {
                best = i;
                best_load = (inflight, weight);
            }
        }
        best
    }

    fn index_of(&self, backend: &Backend) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.backend.addr == backend.addr)
    }
}

/// Upstream indices for one request: the first choice, then every other upstream once.
pub struct Candidates<'a> {
    sel: &'a Selector,
    first: usize,
    /// How many indices of the plain walk (`first`, `first + 1`, …) were given.
    step: usize,
    /// Consistent hashing: the ring walk and the number of ring points visited.
    ring: Option<(<KetamaHashing as BackendSelection>::Iter, usize)>,
    /// Consistent hashing: upstreams the ring walk already gave, a bit per index
    /// (inline up to 128 upstreams).
    seen: smallvec::SmallVec<[u64; 2]>,
    /// How many bits of `seen` are set.
    given: usize,
}

impl Candidates<'_> {
    /// Mark `i` as given; false if it already was.
    fn mark(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let fresh = self.seen.get(word).is_some_and(|w| w & bit == 0);
        if fresh {
            self.seen[word] |= bit;
            self.given += 1;
        }
        fresh
    }

    fn was_given(&self, i: usize) -> bool {
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let n = self.sel.members.len();
        // The ring repeats each upstream at many points: it is walked until every
        // upstream was given or for a bounded number of points; the plain walk then
        // gives whatever the ring did not reach.
        while let Some((ring, visited)) = &mut self.ring {
            if self.given >= n || *visited >= n * 4 + 16 {
                self.ring = None;
                break;
            }
            *visited += 1;
            match ring.next().and_then(|b| self.sel.index_of(b)) {
                Some(i) if self.mark(i) => return Some(i),
                Some(_) => {}
                None => self.ring = None,
            }
        }
        while self.step < n {
            let i = (self.first + self.step) % n;
            self.step += 1;
            if !self.was_given(i) {
                return Some(i);
            }
        }
        None
    }
}

/// One period of nginx's smooth weighted round robin: each round every backend gains
/// its weight, the largest current value is picked and loses the total.
/// With weights 3:1 the period is A,A,B,A (interleaved), not A,A,A,B.
pub fn smooth_weighted_sequence(weights: &[usize]) -> Box<[u16]> {
    let total: usize = weights.iter().sum();
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u16);
    }
    out.into_boxed_slice()
}
