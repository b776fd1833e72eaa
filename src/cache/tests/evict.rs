//! Bounds tests: `max_entries`, `max_bytes`, LRU order, expired-first eviction, sharding.

use super::{fill, fill_at, hdrs, policy, req, GET};
use crate::cache::*;

#[test]
fn eviction_by_entries_is_lru() {
    let cache = RouteCache::new(CachePolicy {
        max_entries: 3,
        ..policy()
    });
    let h = HeaderMap::new();
    let none = HeaderMap::new();
    for p in ["/a", "/b", "/c"] {
        assert!(fill(&cache, &req(GET, p, &h), &none, "x"));
    }
    assert!(
        matches!(cache.lookup(&req(GET, "/a", &h)), Lookup::Hit(_)),
        "a now MRU"
    );
    assert!(fill(&cache, &req(GET, "/d", &h), &none, "x"));
    assert_eq!(cache.len(), 3);
    assert!(
        matches!(cache.lookup(&req(GET, "/b", &h)), Lookup::Miss(_)),
        "b was LRU"
    );
    for p in ["/a", "/c", "/d"] {
        assert!(
            matches!(cache.lookup(&req(GET, p, &h)), Lookup::Hit(_)),
            "{p}"
        );
    }
    assert_eq!(cache.stats().evictions, 1);
}

#[test]
fn eviction_by_bytes_is_lru() {
    let h = HeaderMap::new();
    let none = HeaderMap::new();
    let probe = RouteCache::new(policy());
    assert!(fill(&probe, &req(GET, "/a", &h), &none, "0123456789"));
    let one = probe.bytes();
    // Room for two such entries, not three.
    let cache = RouteCache::new(CachePolicy {
        max_bytes: one * 2 + one / 2,
        ..policy()
    });
    for p in ["/a", "/b"] {
        assert!(fill(&cache, &req(GET, p, &h), &none, "0123456789"));
    }
    assert!(matches!(cache.lookup(&req(GET, "/a", &h)), Lookup::Hit(_)));
    assert!(fill(&cache, &req(GET, "/c", &h), &none, "0123456789"));
    assert_eq!((cache.len(), cache.bytes()), (2, one * 2));
    assert!(cache.bytes() <= cache.policy().max_bytes);
    assert!(
        matches!(cache.lookup(&req(GET, "/b", &h)), Lookup::Miss(_)),
        "b was LRU"
    );
    assert!(matches!(cache.lookup(&req(GET, "/a", &h)), Lookup::Hit(_)));
}

#[test]
fn expired_entries_are_evicted_before_live_ones() {
    let cache = RouteCache::new(CachePolicy {
        max_entries: 3,
        ..policy()
    });
    let h = HeaderMap::new();
    let t0 = Instant::now();
    let short = hdrs(&[("cache-control", "max-age=1")]);
    assert!(fill_at(&cache, &req(GET, "/short", &h), &short, "x", t0));
    assert!(fill_at(
        &cache,
        &req(GET, "/b", &h),
        &HeaderMap::new(),
        "x",
        t0
    ));
    assert!(fill_at(
        &cache,
        &req(GET, "/c", &h),
        &HeaderMap::new(),
        "x",
        t0
    ));
    // `/short` becomes the most recently used, then expires.
    assert!(matches!(
        cache.lookup_at(&req(GET, "/short", &h), t0),
        Lookup::Hit(_)
    ));
    let t2 = t0 + Duration::from_secs(2);
    assert!(fill_at(
        &cache,
        &req(GET, "/d", &h),
        &HeaderMap::new(),
        "x",
        t2
    ));
    for p in ["/b", "/c", "/d"] {
        assert!(
            matches!(cache.lookup_at(&req(GET, p, &h), t2), Lookup::Hit(_)),
            "{p}"
        );
    }
}

#[test]
fn shards_split_budgets_exactly() {
    let p = CachePolicy {
        max_entries: 10_001,
        max_bytes: 64 << 20,
        max_body: 1 << 20,
        ..policy()
    };
    assert_eq!(shard_count(&p), 16);
    assert_eq!(
        shard_count(&CachePolicy {
            max_entries: 600,
            ..p
        }),
        2
    );
    assert_eq!(
        shard_count(&CachePolicy {
            max_body: 64 << 20,
            ..p
        }),
        1
    );
    let cache = RouteCache::new(p);
    let h = HeaderMap::new();
    for i in 0..200 {
        let path = format!("/k{i}");
        let r = req(GET, &path, &h);
        let Lookup::Miss(g) = cache.lookup(&r) else {
            panic!()
        };
        let c = cache.collector(200, &HeaderMap::new(), Duration::from_secs(9));
        assert!(g.store(c.finish().expect("empty body")));
    }
    assert_eq!(cache.len(), 200);
}
