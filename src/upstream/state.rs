//! What outlives a request: each upstream's in-flight count, circuit breaker and
//! attempt counters.

use crate::breaker::{Breaker, SystemClock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A count of requests in flight, shared by every request that holds a guard.
#[derive(Debug, Default)]
pub struct InflightCounter(AtomicUsize);

impl InflightCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Count one request until the guard drops, whatever path the request takes.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }
}

/// Decrements its counter on drop.
#[derive(Debug)]
pub struct InflightGuard(Arc<InflightCounter>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// State of one upstream that outlives a single request.
#[derive(Debug)]
pub struct UpstreamState {
    /// The configured address string; the `upstream` metric label.
    pub address: Arc<str>,
    /// Requests on this upstream now (least_connections reads it).
    pub inflight: Arc<InflightCounter>,
    /// Survives reloads with the upstream (keyed by address).
    pub breaker: Arc<Breaker>,
    /// `gatehouse_upstream_requests_total` for this upstream, by outcome, resolved on
    /// first use (a label lookup hashes three strings under a lock).
    pub attempt_counters: std::sync::OnceLock<[prometheus::IntCounter; 4]>,
}

impl UpstreamState {
    pub fn new(service: &str, address: &str) -> Self {
        UpstreamState {
            address: address.into(),
            inflight: Arc::default(),
            breaker: Arc::new(Breaker::new(
                &format!("{service}/{address}"),
                Arc::new(SystemClock),
            )),
            attempt_counters: std::sync::OnceLock::new(),
        }
    }
}
