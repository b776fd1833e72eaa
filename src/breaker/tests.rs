use super::*;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// A clock the test moves by hand.
struct ManualClock {
    start: Instant,
    offset_ms: AtomicU64,
}

impl ManualClock {
    fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            start: Instant::now(),
            offset_ms: AtomicU64::new(0),
        })
    }
    fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }
}

fn cfg() -> BreakerConfig {
    BreakerConfig {
        failures: 3,
        open_for: Duration::from_secs(10),
        half_open_requests: 1,
        successes_to_close: 2,
        max_ejection_percent: 100,
    }
}

fn breaker(clock: &Arc<ManualClock>) -> Breaker {
    let b = Breaker::new("svc/127.0.0.1:1", clock.clone());
    b.configure(Some(cfg()), None);
    b
}

#[test]
fn opens_after_consecutive_failures_only() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    b.record(Admission::Normal, false);
    b.record(Admission::Normal, false);
    b.record(Admission::Normal, true); // resets the streak
    b.record(Admission::Normal, false);
    b.record(Admission::Normal, false);
    assert_eq!(b.state(), State::Closed);
    b.record(Admission::Normal, false);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.try_acquire(), Admission::Rejected);
}

#[test]
fn half_open_after_open_for_then_closes_on_successes() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..3 {
        b.record(Admission::Normal, false);
    }
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(b.try_acquire(), Admission::Rejected, "still open at 9.999s");
    assert_eq!(
        b.half_open_at(),
        Some(clock.start + Duration::from_secs(10))
    );
    clock.advance(Duration::from_millis(1));
    let p1 = b.try_acquire();
    assert!(matches!(p1, Admission::Probe(_)));
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.try_acquire(), Admission::Rejected, "one probe at a time");
    b.record(p1, true);
    assert_eq!(b.state(), State::HalfOpen, "needs two successes");
    let p2 = b.try_acquire();
    assert!(matches!(p2, Admission::Probe(_)));
    b.record(p2, true);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.try_acquire(), Admission::Normal);
}

#[test]
fn a_failed_probe_reopens_for_the_full_period() {
    let clock = ManualClock::new();
    let b = breaker(&clock);
    for _ in 0..3 {
        b.record(Admission::Normal, false);
    }
    clock.advance(Duration::from_secs(10));
    let probe = b.try_acquire();
    assert!(matches!(probe, Admission::Probe(_)));
    clock.advance(Duration::from_secs(1));
    b.record(probe, false);
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(9));
    assert_eq!(b.try_acquire(), Admission::Rejected);
    clock.advance(Duration::from_secs(1));
    assert!(matches!(b.try_acquire(), Admission::Probe(_)));
}

#[test]
fn dropped_ticket_gives_the_probe_slot_back() {
    let clock = ManualClock::new();
    let b = Arc::new(breaker(&clock));
    for _ in 0..3 {
        b.record(Admission::Normal, false);
    }
    clock.advance(Duration::from_secs(10));
    let t = Ticket::new(b.clone(), b.try_acquire());
    assert_eq!(b.try_acquire(), Admission::Rejected);
    drop(t);
    assert!(
        matches!(b.try_acquire(), Admission::Probe(_)),
        "slot released"
    );
}

#[test]
fn unconfigured_breaker_always_admits() {
    let clock = ManualClock::new();
    let b = Breaker::new("x", clock.clone());
    for _ in 0..100 {
        b.record(Admission::Normal, false);
    }
    assert_eq!(b.try_acquire(), Admission::Normal);
    // and removing the config closes an open breaker
    let b = breaker(&clock);
    for _ in 0..3 {
        b.record(Admission::Normal, false);
    }
    b.configure(None, None);
    assert_eq!(b.state(), State::Closed);
}

/// Property: over random interleavings of acquire / outcome / drop / time, the probes
/// in flight never exceed `half_open_requests`, an open breaker never admits before
/// `open_for` has passed, and a closed breaker always admits.
#[test]
fn random_sequences_respect_the_state_machine() {
    for seed in 0..300u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let clock = ManualClock::new();
        let config = BreakerConfig {
            failures: rng.gen_range(1..5),
            open_for: Duration::from_millis(rng.gen_range(1..50)),
            half_open_requests: rng.gen_range(1..4),
            successes_to_close: rng.gen_range(1..4),
            max_ejection_percent: 100,
        };
        let b = Arc::new(Breaker::new("p", clock.clone()));
        b.configure(Some(config), None);
        let mut held: Vec<Ticket> = Vec::new();
        let mut opened_at: Option<Instant> = None;
        for _ in 0..500 {
            match rng.gen_range(0..5) {
                0 | 1 => {
                    let before = b.state();
                    let a = b.try_acquire();
                    if before == State::Closed {
                        assert_eq!(a, Admission::Normal, "seed {seed}");
                    }
                    if a != Admission::Rejected {
                        if let (State::Open, Some(t)) = (before, opened_at) {
                            assert!(clock.now() >= t + config.open_for, "seed {seed}");
                        }
                        held.push(Ticket::new(b.clone(), a));
                    }
                }
                2 if !held.is_empty() => {
                    let t = held.swap_remove(rng.gen_range(0..held.len()));
                    let was = b.state();
                    t.record(rng.gen_bool(0.5));
                    if b.state() == State::Open && was != State::Open {
                        opened_at = Some(clock.now());
                    }
                }
                3 if !held.is_empty() => {
                    // the client went away: no outcome
                    drop(held.swap_remove(rng.gen_range(0..held.len())));
                }
                _ => clock.advance(Duration::from_millis(rng.gen_range(0..20))),
            }
            let current_probes = held
                .iter()
                .filter(
                    |t| matches!(t.admission(), Admission::Probe(g) if g == b.lock().generation),
                )
                .count() as u32;
            let in_flight = b.lock().probes_in_flight;
            assert!(
                in_flight <= config.half_open_requests,
                "seed {seed}: {in_flight} probes"
            );
            if b.state() == State::HalfOpen {
                assert_eq!(in_flight, current_probes, "seed {seed}: slot accounting");
            }
        }
    }
}

#[test]
fn retry_budget_allows_the_floor_then_a_ratio() {
    let budget = RetryBudget::new(200, 3);
    assert!(budget.withdraw() && budget.withdraw() && budget.withdraw());
    assert!(!budget.withdraw(), "floor spent, no deposits yet");
    for _ in 0..10 {
        budget.deposit();
    }
    assert!(
        budget.withdraw() && budget.withdraw(),
        "10 requests at 20% buy 2 retries"
    );
    assert!(!budget.withdraw());
}

#[test]
fn breakers_never_eject_more_than_max_ejection_percent_of_a_service() {
    let clock = ManualClock::new();
    let ejection = Arc::new(Ejection::new(50));
    ejection.reset(4, 0);
    let config = BreakerConfig {
        max_ejection_percent: 50,
        ..cfg()
    };
    let breakers: Vec<Breaker> = (0..4)
        .map(|i| {
            let b = Breaker::new(&format!("svc/{i}"), clock.clone());
            b.configure(Some(config), Some(ejection.clone()));
            b
        })
        .collect();
    // Every upstream fails, again and again: only two of four may open.
    for _ in 0..10 {
        for b in &breakers {
            let a = b.try_acquire();
            b.record(a, false);
        }
    }
    let open = breakers.iter().filter(|b| b.state() == State::Open).count();
    assert_eq!(open, 2);
    assert_eq!(ejection.ejected(), 2);
    // One closes again (probes succeed): another may now open.
    clock.advance(Duration::from_secs(11));
    let b = breakers
        .iter()
        .find(|b| b.state() == State::Open)
        .expect("an open one");
    for _ in 0..2 {
        let a = b.try_acquire();
        assert!(matches!(a, Admission::Probe(_)));
        b.record(a, true);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(ejection.ejected(), 1);
    let closed_failing = breakers
        .iter()
        .find(|x| x.state() == State::Closed && !std::ptr::eq(*x, b))
        .expect("a closed one");
    for _ in 0..3 {
        let a = closed_failing.try_acquire();
        closed_failing.record(a, false);
    }
    assert_eq!(closed_failing.state(), State::Open);
    assert_eq!(ejection.ejected(), 2);
}
