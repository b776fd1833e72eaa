//! Circuit breakers (one per upstream) and the per-service retry budget.
//!
//! ```text
//!   closed ──(failures consecutive failures)──▶ open ──(open_for elapsed)──▶ half-open
//!     ▲                                          ▲                             │
//!     └────(successes_to_close probe successes)──┴──────(any probe failure)────┘
//! ```
//!
//! A failure is a connect error, a timeout or reset, or a 5xx other than 501. While open
//! the upstream is skipped by selection; half-open admits at most `half_open_requests`
//! probes at once (a [`Ticket`] holds the slot and gives it back however the request
//! ends). The breaker therefore also works as passive health: an upstream that only the
//! breaker took out comes back through probes, with or without an active health check.
//!
//! The closed/success path — nearly every request — touches only atomics; transitions
//! take a small mutex, never held across an `.await`. Time comes from a [`Clock`] so
//! tests drive it by hand.

mod config;

pub use config::{BreakerConfig, RawBreaker};

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// The `gatehouse_circuit_state` value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        self as i64
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Where time comes from; tests use a manual clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

#[derive(Debug)]
struct Inner {
    config: Option<BreakerConfig>,
    opened_at: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Bumped on every transition, so a probe admitted in an earlier half-open period
    /// cannot free a slot of the current one.
    generation: u64,
    /// Wall-clock time of the last transition, for `/admin/status`.
    since: SystemTime,
    /// The service's ejection budget (`max_ejection_percent`).
    ejection: Option<Arc<Ejection>>,
}

/// How many of a service's upstreams their breakers hold out (open or half-open), and
/// how many may be: a breaker opens only within `max_ejection_percent` of the members,
/// so a burst of failures on every upstream cannot empty the service.
#[derive(Debug, Default)]
pub struct Ejection {
    ejected: AtomicUsize,
    members: AtomicUsize,
    max_percent: AtomicUsize,
}

impl Ejection {
    pub fn new(max_percent: u32) -> Self {
        Ejection {
            max_percent: AtomicUsize::new(max_percent as usize),
            ..Ejection::default()
        }
    }

    /// A new member set: `members` upstreams, `ejected` of them out now.
    pub fn reset(&self, members: usize, ejected: usize) {
        self.members.store(members, Ordering::Release);
        self.ejected.store(ejected, Ordering::Release);
    }

    /// Take one more upstream out, if the cap allows.
    fn try_eject(&self) -> bool {
        let members = self.members.load(Ordering::Acquire);
        let max = self.max_percent.load(Ordering::Relaxed);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                ((n + 1) * 100 <= max * members).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Upstreams out now.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Acquire)
    }
}

/// One upstream's breaker. Disabled (always admits) until configured.
pub struct Breaker {
    label: String,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
}

/// Whether a request may go to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed (or no breaker): a normal request.
    Normal,
    /// Half-open: this request is a probe and holds a slot (of this generation).
    Probe(u64),
    /// Open, or half-open with every probe slot taken.
    Rejected,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("label", &self.label)
            .field("state", &self.state())
            .finish()
    }
}

impl Breaker {
    pub fn new(label: &str, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Breaker {
            label: label.to_string(),
            state: AtomicU8::new(State::Closed as u8),
            consecutive_failures: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                config: None,
                opened_at: now,
                probes_in_flight: 0,
                probe_successes: 0,
                generation: 0,
                since: SystemTime::now(),
                ejection: None,
            }),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set (or clear) the settings and the service's ejection budget; the state is kept
    /// across config reloads. Clearing closes the breaker.
    pub fn configure(&self, config: Option<BreakerConfig>, ejection: Option<Arc<Ejection>>) {
        let mut inner = self.lock();
        inner.ejection = ejection;
        if config.is_none() && self.state() != State::Closed {
            self.transition(
                &mut inner,
                State::Closed,
                "circuit breaker removed from config",
            );
        }
        inner.config = config;
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Wall-clock time of the last transition.
    pub fn since(&self) -> SystemTime {
        self.lock().since
    }

    /// When an open breaker will let probes through (`None` unless open).
    pub fn half_open_at(&self) -> Option<Instant> {
        if self.state() != State::Open {
            return None;
        }
        let inner = self.lock();
        inner.config.map(|c| inner.opened_at + c.open_for)
    }

    /// Ask to send a request. A `Probe` admission must be followed by
    /// [`Breaker::record`] or [`Breaker::release_probe`] (a [`Ticket`] does this).
    pub fn try_acquire(&self) -> Admission {
        if self.state() == State::Closed {
            return Admission::Normal;
        }
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(cfg) = inner.config else {
            return Admission::Normal;
        };
        match self.state() {
            State::Closed => Admission::Normal,
            State::Open if now < inner.opened_at + cfg.open_for => Admission::Rejected,
            State::Open => {
                self.transition(&mut inner, State::HalfOpen, "open_for elapsed, probing");
                inner.probes_in_flight = 1;
                Admission::Probe(inner.generation)
            }
            State::HalfOpen if inner.probes_in_flight < cfg.half_open_requests => {
                inner.probes_in_flight += 1;
                Admission::Probe(inner.generation)
            }
            State::HalfOpen => Admission::Rejected,
        }
    }

    /// Record the outcome of a request admitted with `admission`.
    pub fn record(&self, admission: Admission, success: bool) {
        match admission {
            Admission::Rejected => {}
            Admission::Normal => {
                if success {
                    if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                        self.consecutive_failures.store(0, Ordering::Relaxed);
                    }
                    return;
                }
                let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                let mut inner = self.lock();
                let Some(cfg) = inner.config else { return };
                if n >= cfg.failures && self.state() == State::Closed {
                    if inner.ejection.as_ref().is_some_and(|e| !e.try_eject()) {
                        // The service's ejection budget is spent: stay in rotation,
                        // and count failures anew.
                        self.consecutive_failures.store(0, Ordering::Relaxed);
                        log::warn!(
                            "circuit {}: {n} consecutive failures, but max_ejection_percent \
                             keeps it closed (too many of its service's upstreams are out)",
                            self.label
                        );
                        return;
                    }
                    inner.opened_at = self.clock.now();
                    self.transition(
                        &mut inner,
                        State::Open,
                        &format!("{n} consecutive failures"),
                    );
                }
            }
            Admission::Probe(generation) => {
                let mut inner = self.lock();
                if generation != inner.generation || self.state() != State::HalfOpen {
                    return; // a stale probe: its period already ended
                }
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                let Some(cfg) = inner.config else { return };
                if success {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= cfg.successes_to_close {
                        self.transition(&mut inner, State::Closed, "probes succeeded");
                    }
                } else {
                    inner.opened_at = self.clock.now();
                    self.transition(&mut inner, State::Open, "a probe failed");
                }
            }
        }
    }

    /// Give a probe slot back without an outcome (the request ended before the
    /// upstream answered, e.g. the client went away).
    pub fn release_probe(&self, generation: u64) {
        let mut inner = self.lock();
        if generation == inner.generation {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    fn transition(&self, inner: &mut Inner, to: State, why: &str) {
        let from = self.state();
        if from == to {
            return;
        }
        self.state.store(to as u8, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if to == State::Closed {
            if let Some(e) = &inner.ejection {
                e.release();
            }
        }
        inner.probe_successes = 0;
        inner.probes_in_flight = 0;
        inner.generation += 1;
        inner.since = SystemTime::now();
        match to {
            State::Open => log::warn!("circuit {} opened: {why}", self.label),
            State::HalfOpen => log::info!("circuit {} half-open: {why}", self.label),
            State::Closed => log::info!("circuit {} closed: {why}", self.label),
        }
    }
}

/// An admitted request's hold on a breaker: records the outcome once, or gives a probe
/// slot back when dropped without one.
pub struct Ticket {
    breaker: Arc<Breaker>,
    admission: Admission,
    done: bool,
}

impl Ticket {
    pub fn new(breaker: Arc<Breaker>, admission: Admission) -> Self {
        Ticket {
            breaker,
            admission,
            done: false,
        }
    }

    pub fn admission(&self) -> Admission {
        self.admission
    }

    pub fn record(mut self, success: bool) {
        self.done = true;
        self.breaker.record(self.admission, success);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let (false, Admission::Probe(generation)) = (self.done, self.admission) {
            self.breaker.release_probe(generation);
        }
    }
}

/// Retries may add at most `ratio` of recent requests, plus `min_per_second` always,
/// so a failing service cannot multiply its own load.
pub struct RetryBudget {
    ratio_milli: i64,
    min_per_second: u32,
    /// Tokens in thousandths: each request deposits `ratio_milli`, a retry costs 1000.
    balance: AtomicI64,
    floor_second: AtomicU64,
    floor_used: AtomicU32,
    epoch: Instant,
}

/// The most budget that can pile up during quiet periods (in whole retries).
const BUDGET_CAP: i64 = 1000;

impl RetryBudget {
    /// `permille` retries per thousand requests (200 = 20%), plus `min_per_second`.
    pub fn new(permille: u32, min_per_second: u32) -> Self {
        RetryBudget {
            ratio_milli: i64::from(permille),
            min_per_second,
            balance: AtomicI64::new(0),
            floor_second: AtomicU64::new(0),
            floor_used: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    /// Count one request towards the budget.
    pub fn deposit(&self) {
        let cap = BUDGET_CAP * 1000;
        let prev = self.balance.fetch_add(self.ratio_milli, Ordering::Relaxed);
        if prev + self.ratio_milli > cap {
            self.balance.fetch_min(cap, Ordering::Relaxed);
        }
    }

    /// Take one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        if self.floor_second.swap(second, Ordering::Relaxed) != second {
            self.floor_used.store(0, Ordering::Relaxed);
        }
        if self.floor_used.fetch_add(1, Ordering::Relaxed) < self.min_per_second {
            return true;
        }
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests;
