//! Adaptive active health checks (`health_check.adaptive`): each upstream has its own
//! state and its own next-check time, so a passing upstream is checked rarely, one that
//! just failed a check is watched more closely, and one out of rotation is checked often
//! enough to come back quickly.
//!
//! ```text
//!            fail (< unhealthy_after in a row)          fail (unhealthy_after in a row)
//!  Healthy ───────────────────────────────────▶ Suspect ───────────────────────────▶ Unhealthy
//!     ▲   every `healthy`        every `suspect` │  ▲       every `unhealthy`            │
//!     └──────── recover_after passes in a row ───┘  └──── healthy_after passes in a row ─┘
//!     ▲                                                                                  │
//!     └──────────────── max(recover_after, healthy_after) passes in a row ───────────────┘
//! ```
//!
//! Healthy and Suspect upstreams are in rotation; Unhealthy ones are not. The tracker is
//! the state machine; Pingora's `HealthRegistry` only mirrors its verdict (the probe
//! reports a threshold of 1 and answers from the tracker between checks).

use super::config::Adaptive;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where an upstream stands in its active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    /// In rotation, but a recent check failed: checked every `suspect`.
    Suspect,
    /// Out of rotation.
    Unhealthy,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Suspect => "suspect",
            HealthState::Unhealthy => "unhealthy",
        }
    }

    /// `gatehouse_upstream_health_state`: 0 healthy, 1 suspect, 2 unhealthy.
    pub fn gauge(self) -> i64 {
        match self {
            HealthState::Healthy => 0,
            HealthState::Suspect => 1,
            HealthState::Unhealthy => 2,
        }
    }

    pub fn in_rotation(self) -> bool {
        self != HealthState::Unhealthy
    }
}

/// One upstream's checks so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    pub state: HealthState,
    /// Consecutive passes (since the last failure) and failures (since the last pass).
    pub passes: u32,
    pub failures: u32,
    /// When the next check is due.
    pub due: Instant,
}

/// The thresholds the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub adaptive: Adaptive,
    /// Consecutive passes that bring an unhealthy upstream back into rotation.
    pub healthy_after: u32,
    /// Consecutive failures that take an upstream out of rotation.
    pub unhealthy_after: u32,
}

impl Rules {
    fn interval(&self, state: HealthState) -> Duration {
        match state {
            HealthState::Healthy => self.adaptive.healthy,
            HealthState::Suspect => self.adaptive.suspect,
            HealthState::Unhealthy => self.adaptive.unhealthy,
        }
    }

    /// The state after one check (`passed` or not), and when the next one is due.
    pub fn observe(&self, t: &mut Track, passed: bool, now: Instant) {
        if passed {
            t.passes = t.passes.saturating_add(1);
            t.failures = 0;
            let recovered = self.adaptive.recover_after.max(self.healthy_after);
            t.state = match t.state {
                _ if t.passes >= recovered => HealthState::Healthy,
                HealthState::Unhealthy if t.passes >= self.healthy_after => HealthState::Suspect,
                s => s,
            };
        } else {
            t.failures = t.failures.saturating_add(1);
            t.passes = 0;
            t.state = if t.failures >= self.unhealthy_after {
                HealthState::Unhealthy
            } else if t.state == HealthState::Healthy {
                HealthState::Suspect
            } else {
                t.state
            };
        }
        t.due = now + self.interval(t.state);
    }
}

/// The adaptive state of a service's upstreams, keyed by address (as health is).
pub struct Tracker {
    pub rules: Rules,
    tracks: Mutex<HashMap<SocketAddr, Track>>,
}

impl Tracker {
    pub fn new(rules: Rules) -> Self {
        Tracker {
            rules,
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// How often the check loop wakes to see which upstreams are due: a tenth of the
    /// shortest interval, between 10 ms and 1 s.
    pub fn tick(&self) -> Duration {
        let a = &self.rules.adaptive;
        (a.healthy.min(a.suspect).min(a.unhealthy) / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Whether `addr` is due for a check (a new upstream is, at once); if not, its
    /// current state.
    pub fn due(&self, addr: SocketAddr, now: Instant) -> Result<(), HealthState> {
        let tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        match tracks.get(&addr) {
            Some(t) if now < t.due => Err(t.state),
            _ => Ok(()),
        }
    }

    /// Record a check's result; returns the state before and after.
    pub fn record(
        &self,
        addr: SocketAddr,
        passed: bool,
        now: Instant,
    ) -> (HealthState, HealthState) {
        let mut tracks = self.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let t = tracks.entry(addr).or_insert(Track {
            state: HealthState::Healthy,
            passes: 0,
            failures: 0,
            due: now,
        });
        let before = t.state;
        self.rules.observe(t, passed, now);
        (before, t.state)
    }

    /// The upstream's state (healthy until its first check says otherwise).
    pub fn state(&self, addr: SocketAddr) -> HealthState {
        self.tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&addr)
            .map_or(HealthState::Healthy, |t| t.state)
    }

    /// Forget upstreams that are no longer checked.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.tracks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|a, _| keep(a));
    }
}
