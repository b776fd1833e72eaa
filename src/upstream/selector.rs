//! Gatehouse's [`BackendSelection`]: one selector type for every `balance` mode, so a
//! service's Pingora `LoadBalancer<Selector>` is the same type whatever it balances by.
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
//! Whatever the first choice, the iterator then walks the remaining upstreams so that
//! `LoadBalancer::select_with` can skip unhealthy or already-tried ones.

use super::UpstreamState;
use crate::config::Balance;
use pingora::lb::selection::consistent::{KetamaHashing, OwnedNodeIterator};
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a selector is built from besides the backend set.
#[derive(Clone)]
pub struct SelectorConfig {
    pub balance: Balance,
    /// Per-upstream shared state (in-flight counts for least_connections).
    pub states: Arc<HashMap<SocketAddr, Arc<UpstreamState>>>,
}

pub struct Selector {
    backends: Box<[Backend]>,
    states: Box<[Option<Arc<UpstreamState>>]>,
    balance: Balance,
    counter: AtomicUsize,
    /// `weighted`: one period of the smooth weighted sequence, as backend indices.
    /// `random`: each index repeated `weight` times.
    table: Box<[u16]>,
    ketama: Option<Arc<KetamaHashing>>,
}

impl BackendSelection for Selector {
    type Iter = SelectorIter;
    type Config = SelectorConfig;

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(
            backends,
            &SelectorConfig {
                balance: Balance::RoundRobin,
                states: Arc::default(),
            },
        )
    }

    fn build_with_config(backends: &BTreeSet<Backend>, config: &SelectorConfig) -> Self {
        let list: Box<[Backend]> = backends.iter().cloned().collect();
        let states = list
            .iter()
            .map(|b| b.addr.as_inet().and_then(|a| config.states.get(a).cloned()))
            .collect();
        let weights: Vec<usize> = list.iter().map(|b| b.weight.max(1)).collect();
        let table = match config.balance {
            Balance::Weighted => smooth_weighted_sequence(&weights),
            Balance::Random => weights
                .iter()
                .enumerate()
                .flat_map(|(i, w)| std::iter::repeat_n(i as u16, *w))
                .collect(),
            _ => Box::default(),
        };
        let ketama = (config.balance == Balance::ConsistentHash)
            .then(|| Arc::new(KetamaHashing::build(backends)));
        Selector {
            backends: list,
            states,
            balance: config.balance,
            counter: AtomicUsize::new(0),
            table,
            ketama,
        }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> SelectorIter {
        let n = self.backends.len();
        if let Some(k) = &self.ketama {
            return SelectorIter {
                sel: self.clone(),
                first: 0,
                step: 0,
                ring: Some(k.iter(key)),
            };
        }
        let first = if n == 0 {
            0
        } else {
            match self.balance {
                Balance::RoundRobin | Balance::ConsistentHash => {
                    self.counter.fetch_add(1, Ordering::Relaxed) % n
                }
                Balance::Weighted => {
                    let i = self.counter.fetch_add(1, Ordering::Relaxed) % self.table.len();
                    self.table[i] as usize
                }
                Balance::Random => {
                    self.table[rand::random::<u32>() as usize % self.table.len()] as usize
                }
                Balance::LeastConnections => self.least_loaded(),
            }
        };
        SelectorIter {
            sel: self.clone(),
            first,
            step: 0,
            ring: None,
        }
    }
}

impl Selector {
    fn least_loaded(&self) -> usize {
        let n = self.backends.len();
        let start = self.counter.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = (usize::MAX, 1usize);
        for k in 0..n {
            let i = (start + k) % n;
            let inflight = self.states[i].as_ref().map_or(0, |s| s.inflight.get());
            let weight = self.backends[i].weight.max(1);
            // inflight/weight < best_inflight/best_weight, without division
            if (inflight as u128) * (best_load.1 as u128) < (best_load.0 as u128) * (weight as u128)
            {
                best = i;
                best_load = (inflight, weight);
            }
        }
        best
    }
}

/// Walks the first choice, then every other backend once (ring order).
pub struct SelectorIter {
    sel: Arc<Selector>,
    first: usize,
    step: usize,
    ring: Option<OwnedNodeIterator>,
}

impl BackendIter for SelectorIter {
    fn next(&mut self) -> Option<&Backend> {
        if let Some(ring) = &mut self.ring {
            return ring.next();
        }
        let n = self.sel.backends.len();
        if self.step >= n {
            return None;
        }
        let i = (self.first + self.step) % n;
        self.step += 1;
        Some(&self.sel.backends[i])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(spec: &[(&str, usize)]) -> BTreeSet<Backend> {
        spec.iter()
            .map(|(a, w)| Backend::new_with_weight(a, *w).unwrap())
            .collect()
    }

    fn first(sel: &Arc<Selector>, key: &[u8]) -> String {
        sel.iter(key).next().unwrap().addr.to_string()
    }

    fn build(balance: Balance, spec: &[(&str, usize)]) -> (Arc<Selector>, SelectorConfig) {
        let states: HashMap<SocketAddr, Arc<UpstreamState>> = spec
            .iter()
            .map(|(a, _)| {
                let addr: SocketAddr = a.parse().unwrap();
                (addr, Arc::new(UpstreamState::new("s", a)))
            })
            .collect();
        let config = SelectorConfig {
            balance,
            states: Arc::new(states),
        };
        (
            Arc::new(Selector::build_with_config(&backends(spec), &config)),
            config,
        )
    }

    #[test]
    fn smooth_sequence_interleaves() {
        assert_eq!(&*smooth_weighted_sequence(&[3, 1]), &[0, 0, 1, 0]);
        assert_eq!(
            &*smooth_weighted_sequence(&[5, 1, 1]),
            &[0, 0, 1, 0, 2, 0, 0]
        );
        // every backend appears exactly `weight` times per period
        let seq = smooth_weighted_sequence(&[7, 3, 2]);
        for (i, w) in [7, 3, 2].iter().enumerate() {
            assert_eq!(seq.iter().filter(|&&x| x as usize == i).count(), *w);
        }
    }

    #[test]
    fn weighted_split_over_1000() {
        let (sel, _) = build(Balance::Weighted, &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)]);
        let a = (0..1000)
            .filter(|_| first(&sel, b"") == "127.0.0.1:1")
            .count();
        assert_eq!(a, 750);
    }

    #[test]
    fn round_robin_ignores_weight() {
        let (sel, _) = build(
            Balance::RoundRobin,
            &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)],
        );
        let a = (0..100)
            .filter(|_| first(&sel, b"") == "127.0.0.1:1")
            .count();
        assert_eq!(a, 50);
    }

    #[test]
    fn least_connections_prefers_idle() {
        let (sel, cfg) = build(
            Balance::LeastConnections,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        let busy = cfg.states[&"127.0.0.1:1".parse().unwrap()].clone();
        let _g1 = busy.inflight.begin();
        let busy2 = cfg.states[&"127.0.0.1:2".parse().unwrap()].clone();
        let _g2 = busy2.inflight.begin();
        for _ in 0..10 {
            assert_eq!(first(&sel, b""), "127.0.0.1:3");
        }
    }

    #[test]
    fn consistent_hash_is_sticky() {
        let (sel, _) = build(
            Balance::ConsistentHash,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
        );
        for key in [b"alice".as_slice(), b"bob", b"carol"] {
            let a = first(&sel, key);
            assert!((0..20).all(|_| first(&sel, key) == a));
        }
    }

    #[test]
    fn iterator_visits_every_backend_once() {
        let (sel, _) = build(
            Balance::Random,
            &[("127.0.0.1:1", 1), ("127.0.0.1:2", 5), ("127.0.0.1:3", 1)],
        );
        let mut it = sel.iter(b"");
        let mut seen = BTreeSet::new();
        while let Some(b) = it.next() {
            assert!(seen.insert(b.addr.to_string()));
        }
        assert_eq!(seen.len(), 3);
    }
}
