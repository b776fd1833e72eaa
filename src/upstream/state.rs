//! What outlives a request: each upstream's in-flight count, circuit breaker and
//! attempt counters.

use crate::breaker::{Breaker, SystemClock};
use crate::metrics::Outcome;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Milliseconds on the process's monotonic clock, never 0 (0 means "never" below).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

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

/// An upstream's attempt counters (by outcome) and duration histogram.
pub type AttemptMetrics = (
    [prometheus::IntCounter; Outcome::COUNT],
    prometheus::Histogram,
);

/// State of one upstream that outlives a single request.
#[derive(Debug)]
pub struct UpstreamState {
    /// The configured address string; the `upstream` metric label.
    pub address: Arc<str>,
    /// Requests on this upstream now (least_connections reads it).
    pub inflight: Arc<InflightCounter>,
    /// Survives reloads with the upstream (keyed by address).
    pub breaker: Arc<Breaker>,
    /// `gatehouse_upstream_requests_total` for this upstream, by outcome, and its
    /// `gatehouse_upstream_duration_seconds`, resolved on first use (a label lookup
    /// hashes the labels under a lock).
    pub attempt_metrics: OnceLock<AttemptMetrics>,
    /// While it drains (it left the member set): when requests still on it are cut,
    /// in [`now_ms`] (0: serving).
    drain_deadline: AtomicU64,
    /// [`now_ms`] of the last TLS failure log line about it (0: none).
    pub last_tls_log: AtomicU64,
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
            attempt_metrics: OnceLock::new(),
            drain_deadline: AtomicU64::new(0),
            last_tls_log: AtomicU64::new(0),
        }
    }

    /// It left its service: no new requests (it is not selected any more), and those
    /// still on it may run for `timeout` more. A drain already under way keeps its
    /// deadline.
    pub fn start_drain(&self, timeout: Duration) {
        let deadline =
            now_ms().saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let _ =
            self.drain_deadline
                .compare_exchange(0, deadline, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// It is back in its service.
    pub fn stop_drain(&self) {
        self.drain_deadline.store(0, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.drain_deadline.load(Ordering::Relaxed) != 0
    }

    /// Whether requests still on it have run out of drain time.
    pub fn drain_expired(&self) -> bool {
        let d = self.drain_deadline.load(Ordering::Relaxed);
        d != 0 && now_ms() >= d
    }

    /// Whether a log line about a failure of this upstream is due (at most one per 10 s).
    pub fn tls_log_due(&self) -> bool {
        let now = now_ms();
        let last = self.last_tls_log.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_tls_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
