use crate::upstream::selector::*;
use crate::upstream::{Balance, UpstreamState};
use pingora::lb::selection::consistent::KetamaHashing;
use pingora::lb::selection::{BackendIter, BackendSelection};
use pingora::lb::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;

fn build(balance: Balance, spec: &[(&str, usize)]) -> Selector {
    let members = spec
        .iter()
        .map(|(a, w)| Member {
            backend: Backend::new_with_weight(a, *w).unwrap(),
            state: Arc::new(UpstreamState::new("s", a)),
        })
        .collect();
    Selector::new(balance, members)
}

fn first(sel: &Selector, key: &[u8]) -> usize {
    sel.candidates(key).next().unwrap()
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
    let sel = build(Balance::Weighted, &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)]);
    let a = (0..1000).filter(|_| first(&sel, b"") == 0).count();
    assert_eq!(a, 750);
}

#[test]
fn round_robin_ignores_weight() {
    let sel = build(
        Balance::RoundRobin,
        &[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)],
    );
    let picks: Vec<usize> = (0..6).map(|_| first(&sel, b"")).collect();
    assert_eq!(picks, [0, 1, 0, 1, 0, 1]);
}

#[test]
fn least_connections_prefers_idle() {
    let sel = build(
        Balance::LeastConnections,
        &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
    );
    let _g1 = sel.members[0].state.inflight.begin();
    let _g2 = sel.members[1].state.inflight.begin();
    for _ in 0..10 {
        assert_eq!(first(&sel, b""), 2);
    }
}

#[test]
fn consistent_hash_is_sticky_and_spreads() {
    let sel = build(
        Balance::ConsistentHash,
        &[("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)],
    );
    let mut chosen = BTreeSet::new();
    for n in 0..200u32 {
        let key = format!("user-{n}");
        let a = first(&sel, key.as_bytes());
        assert!((0..5).all(|_| first(&sel, key.as_bytes()) == a));
        chosen.insert(a);
    }
    assert_eq!(chosen.len(), 3, "200 keys should reach every upstream");
}

#[test]
fn consistent_hash_matches_pingoras_ring() {
    // The first choice is the one Pingora's Ketama selector makes for the key.
    let spec = [("127.0.0.1:1", 1), ("127.0.0.1:2", 2), ("127.0.0.1:3", 1)];
    let sel = build(Balance::ConsistentHash, &spec);
    let set: BTreeSet<Backend> = spec
        .iter()
        .map(|(a, w)| Backend::new_with_weight(a, *w).unwrap())
        .collect();
    let ring = Arc::new(KetamaHashing::build(&set));
    for n in 0..100u32 {
        let key = format!("k{n}");
        let theirs = ring.iter(key.as_bytes()).next().unwrap().addr.to_string();
        let ours = first(&sel, key.as_bytes());
        assert_eq!(spec[ours].0, theirs, "key {key}");
    }
}

#[test]
fn every_balance_walks_every_upstream_once() {
    let spec: Vec<(String, usize)> = (1..=70)
        .map(|p| (format!("127.0.0.1:{p}"), 1 + p % 3))
        .collect();
    let spec: Vec<(&str, usize)> = spec.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    for balance in [
        Balance::RoundRobin,
        Balance::Weighted,
        Balance::LeastConnections,
        Balance::ConsistentHash,
        Balance::Random,
    ] {
        for n in [1, 2, 3, 70] {
            let sel = build(balance, &spec[..n]);
            for key in [&b"a"[..], b"bob", b""] {
                let walk: Vec<usize> = sel.candidates(key).collect();
                let unique: BTreeSet<usize> = walk.iter().copied().collect();
                assert_eq!(walk.len(), n, "{balance:?} over {n}: {walk:?}");
                assert_eq!(unique.len(), n, "{balance:?} over {n}: {walk:?}");
            }
        }
    }
}

#[test]
fn an_empty_service_has_no_candidates() {
    for balance in [
        Balance::RoundRobin,
        Balance::Weighted,
        Balance::ConsistentHash,
    ] {
        assert_eq!(build(balance, &[]).candidates(b"x").next(), None);
    }
}

mod adaptive {
    use crate::upstream::adaptive::{HealthState, Rules, Tracker};
    use crate::upstream::config::Adaptive;
    use std::time::{Duration, Instant};

    fn tracker() -> Tracker {
        Tracker::new(Rules {
            adaptive: Adaptive {
                healthy: Duration::from_secs(30),
                suspect: Duration::from_secs(10),
                unhealthy: Duration::from_secs(5),
                recover_after: 3,
            },
            healthy_after: 1,
            unhealthy_after: 2,
        })
    }

    #[test]
    fn states_and_intervals_follow_the_design() {
        let t = tracker();
        let a = "127.0.0.1:1".parse().unwrap();
        let now = Instant::now();
        let secs = |s| now + Duration::from_secs(s);
        assert_eq!(t.due(a, now), Ok(()), "a new upstream is checked at once");
        assert_eq!(t.state(a), HealthState::Healthy);
        assert_eq!(
            t.record(a, true, now),
            (HealthState::Healthy, HealthState::Healthy)
        );
        assert_eq!(t.due(a, secs(29)), Err(HealthState::Healthy));
        assert_eq!(t.due(a, secs(30)), Ok(()));
        // One failure: suspect, checked every 10 s, still in rotation.
        assert_eq!(t.record(a, false, secs(30)).1, HealthState::Suspect);
        assert!(HealthState::Suspect.in_rotation());
        assert_eq!(t.due(a, secs(39)), Err(HealthState::Suspect));
        // A pass resets the failures but does not end the suspicion.
        assert_eq!(t.record(a, true, secs(40)).1, HealthState::Suspect);
        assert_eq!(t.record(a, false, secs(50)).1, HealthState::Suspect);
        // Two failures in a row: out, checked every 5 s.
        assert_eq!(t.record(a, false, secs(60)).1, HealthState::Unhealthy);
        assert_eq!(t.due(a, secs(64)), Err(HealthState::Unhealthy));
        assert_eq!(t.due(a, secs(65)), Ok(()));
        // One pass (healthy_after): back in rotation, suspect; three: healthy again.
        assert_eq!(t.record(a, true, secs(65)).1, HealthState::Suspect);
        assert_eq!(t.due(a, secs(74)), Err(HealthState::Suspect));
        assert_eq!(t.record(a, true, secs(75)).1, HealthState::Suspect);
        assert_eq!(t.record(a, true, secs(85)).1, HealthState::Healthy);
        assert_eq!(t.due(a, secs(114)), Err(HealthState::Healthy));
        t.retain(|_| false);
        assert_eq!(t.due(a, secs(86)), Ok(()), "forgotten: due again");
    }

    #[test]
    fn tick_is_a_tenth_of_the_shortest_interval_within_bounds() {
        assert_eq!(tracker().tick(), Duration::from_millis(500));
        let fast = Tracker::new(Rules {
            adaptive: Adaptive {
                healthy: Duration::from_millis(50),
                suspect: Duration::from_millis(50),
                unhealthy: Duration::from_millis(50),
                recover_after: 1,
            },
            healthy_after: 1,
            unhealthy_after: 1,
        });
        assert_eq!(fast.tick(), Duration::from_millis(10));
    }
}
