//! Coalescing tests: one leader per cold key, waiters released on store, on drop and on
//! timeout. Real waits stay in the low milliseconds.

use super::{hdrs, policy, req, GET};
use crate::cache::*;
use bytes::Bytes;
use std::sync::Barrier;

fn response(cache: &RouteCache, resp: &HeaderMap, body: &'static str) -> CachedResponse {
    let mut c = cache.collector(200, resp, Duration::from_secs(30));
    assert!(c.push(&Bytes::from_static(body.as_bytes())));
    c.finish().expect("complete body")
}

#[tokio::test]
async fn stampede_has_one_leader_and_49_served_waiters() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let barrier = Barrier::new(50);
    let lookups: Vec<Lookup> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    cache.lookup(&req(GET, "/hot", &h))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    let mut leaders = Vec::new();
    let mut waiters = Vec::new();
    for l in lookups {
        match l {
            Lookup::Miss(g) => leaders.push(g),
            Lookup::Wait(w) => waiters.push(tokio::spawn(w.wait(Duration::from_secs(10)))),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((leaders.len(), waiters.len()), (1, 49));
    tokio::task::yield_now().await; // let the waiters start waiting
    let leader = leaders.pop().expect("one leader");
    assert!(leader.store(response(&cache, &HeaderMap::new(), "hot")));
    let mut first: Option<Arc<CachedResponse>> = None;
    for w in waiters {
        match w.await.expect("task") {
            WaitOutcome::Hit(r) => {
                assert_eq!(&r.body[..], b"hot");
                let f = first.get_or_insert_with(|| r.clone());
                assert!(Arc::ptr_eq(f, &r), "all share the stored entry");
            }
            WaitOutcome::Fetch => panic!("waiter told to fetch"),
        }
    }
    let s = cache.stats();
    assert_eq!((s.misses, s.waits, s.hits, s.stores), (1, 49, 49, 1));
    assert!(matches!(
        cache.lookup(&req(GET, "/hot", &h)),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn dropped_leader_releases_waiters_promptly() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let Lookup::Miss(leader) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    let waiters: Vec<_> = (0..5)
        .map(|_| match cache.lookup(&req(GET, "/x", &h)) {
            Lookup::Wait(w) => tokio::spawn(w.wait(Duration::from_secs(30))),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    tokio::task::yield_now().await;
    let start = std::time::Instant::now();
    drop(leader); // e.g. upstream error, or the response was not storable
    for w in waiters {
        assert!(matches!(w.await.expect("task"), WaitOutcome::Fetch));
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "not the 30s timeout"
    );
    // The key is free again: the next request leads a new fill.
    assert!(matches!(cache.lookup(&req(GET, "/x", &h)), Lookup::Miss(_)));
}

#[tokio::test]
async fn unstorable_response_releases_waiters() {
    let cache = RouteCache::new(CachePolicy {
        max_body: 2,
        ..policy()
    });
    let h = HeaderMap::new();
    let Lookup::Miss(leader) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    let Lookup::Wait(w) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    let w = tokio::spawn(w.wait(Duration::from_secs(30)));
    let resp = CachedResponse {
        body: Bytes::from_static(b"abc"),
        ..response(&cache, &h, "")
    };
    assert!(!leader.store(resp), "over max_body");
    assert!(matches!(w.await.expect("task"), WaitOutcome::Fetch));
    assert!(cache.is_empty());
}

#[tokio::test]
async fn waiter_times_out_and_leader_still_fills() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let Lookup::Miss(leader) = cache.lookup(&req(GET, "/slow", &h)) else {
        panic!()
    };
    let Lookup::Wait(w) = cache.lookup(&req(GET, "/slow", &h)) else {
        panic!()
    };
    let start = std::time::Instant::now();
    assert!(matches!(
        w.wait(Duration::from_millis(5)).await,
        WaitOutcome::Fetch
    ));
    assert!(start.elapsed() >= Duration::from_millis(5));
    assert!(leader.store(response(&cache, &HeaderMap::new(), "late")));
    assert!(matches!(
        cache.lookup(&req(GET, "/slow", &h)),
        Lookup::Hit(_)
    ));
}

#[tokio::test]
async fn waiter_with_other_variant_fetches_itself() {
    let cache = RouteCache::new(policy());
    let gzip = hdrs(&[("accept-encoding", "gzip")]);
    let identity = HeaderMap::new();
    let Lookup::Miss(leader) = cache.lookup(&req(GET, "/v", &gzip)) else {
        panic!()
    };
    let Lookup::Wait(same) = cache.lookup(&req(GET, "/v", &gzip)) else {
        panic!()
    };
    let Lookup::Wait(other) = cache.lookup(&req(GET, "/v", &identity)) else {
        panic!()
    };
    let (same, other) = (
        tokio::spawn(same.wait(Duration::from_secs(30))),
        tokio::spawn(other.wait(Duration::from_secs(30))),
    );
    tokio::task::yield_now().await;
    let vary = hdrs(&[("vary", "accept-encoding")]);
    assert!(leader.store(response(&cache, &vary, "zipped")));
    assert!(matches!(same.await.expect("task"), WaitOutcome::Hit(_)));
    assert!(matches!(other.await.expect("task"), WaitOutcome::Fetch));
}

#[tokio::test]
async fn revalidating_request_joins_running_fill() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let nc = hdrs(&[("cache-control", "no-cache")]);
    let Lookup::Miss(_leader) = cache.lookup(&req(GET, "/r", &h)) else {
        panic!()
    };
    assert!(matches!(
        cache.lookup(&req(GET, "/r", &nc)),
        Lookup::Wait(_)
    ));
}

#[test]
fn guard_outlives_replaced_cache() {
    // A reload that changed the policy drops the old RouteCache while requests still run.
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let resp = response(&cache, &HeaderMap::new(), "x");
    let Lookup::Miss(leader) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    drop(cache);
    assert!(leader.store(resp));
}

#[test]
fn handles_are_send_and_sync() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RouteCache>();
    send_sync::<CachedResponse>();
    send_sync::<FillGuard>();
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let _leader = cache.lookup(&req(GET, "/x", &h));
    let Lookup::Wait(w) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    let fut = w.wait(Duration::from_millis(1));
    send(&fut); // a Pingora phase future must be Send
}
