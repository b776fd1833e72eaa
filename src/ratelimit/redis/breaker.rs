//! The store's circuit breaker: after `failures` consecutive errors or timeouts,
//! decisions skip Redis for `cool_down` and apply `on_error` at once, instead of each
//! waiting out the timeout; a background probe closes it as soon as Redis answers.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What `gatehouse_rate_limit_store_state` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Answering.
    Up = 0,
    /// Failing, not yet given up on.
    Degraded = 1,
    /// Given up on: decisions apply `on_error` without asking.
    Down = 2,
}

impl StoreState {
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Up => "up",
            StoreState::Degraded => "degraded",
            StoreState::Down => "down",
        }
    }
}

pub struct StoreBreaker {
    threshold: u32,
    cool_down: Duration,
    consecutive: AtomicU32,
    /// While open: until when (ms on [`now_ms`]); 0 when closed.
    open_until: AtomicU64,
    /// A probe task is running.
    pub(super) probing: AtomicBool,
}

/// Milliseconds on the process's monotonic clock, never 0.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let ms = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

impl StoreBreaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        StoreBreaker {
            threshold: threshold.max(1),
            cool_down,
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Whether a decision may ask Redis now. Once the cool-down has passed without a
    /// probe closing it, requests ask again (and one more failure reopens it).
    pub fn admits(&self) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    pub fn state(&self) -> StoreState {
        if !self.admits() {
            StoreState::Down
        } else if self.consecutive.load(Ordering::Relaxed) > 0 {
            StoreState::Degraded
        } else {
            StoreState::Up
        }
    }

    pub fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Relaxed);
        }
    }

    /// Count a failure; true when this one opened the breaker (start probing then).
    pub fn failure(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.threshold {
            return false;
        }
        let until = now_ms() + u64::try_from(self.cool_down.as_millis()).unwrap_or(u64::MAX / 2);
        let was = self.open_until.swap(until, Ordering::Relaxed);
        was == 0 || now_ms() >= was
    }
}
