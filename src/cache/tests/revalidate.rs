//! Stale entries kept for revalidation, the refresh a `304` brings, and purges.

use super::*;

fn at(now: Instant, secs: u64) -> Instant {
    now + Duration::from_secs(secs)
}

#[test]
fn a_stale_entry_with_validators_is_offered_for_revalidation() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let now = Instant::now();
    let resp = hdrs(&[("etag", "\"v1\""), ("cache-control", "max-age=10")]);
    assert!(fill_at(&cache, &req(GET, "/e", &h), &resp, "body", now));
    assert!(matches!(
        cache.lookup_at(&req(GET, "/e", &h), at(now, 5)),
        Lookup::Hit(_)
    ));
    // Stale after 10 s: not served, but offered with its validators.
    let Lookup::Revalidate(guard, stored) = cache.lookup_at(&req(GET, "/e", &h), at(now, 11))
    else {
        panic!("expected a revalidation");
    };
    assert_eq!(stored.body, Bytes::from_static(b"body"));
    assert!(stored.has_validators());
    // Concurrent requests wait for it like for any fill.
    assert!(matches!(
        cache.lookup_at(&req(GET, "/e", &h), at(now, 11)),
        Lookup::Wait(_)
    ));
    // A 304 with new freshness: the merged headers, the same body, fresh from now.
    let update = hdrs(&[
        ("cache-control", "max-age=20"),
        ("etag", "\"v1\""),
        ("x-new", "1"),
        ("content-length", "0"),
    ]);
    let fresh = stored.refreshed(&update, Duration::from_secs(20), at(now, 11));
    assert_eq!(fresh.body, stored.body);
    assert_eq!(
        fresh.header(&http::header::CACHE_CONTROL),
        Some(&HeaderValue::from_static("max-age=20"))
    );
    assert_eq!(
        fresh.header(&http::header::CONTENT_LENGTH),
        Some(&HeaderValue::from_static("4")),
        "the 304's Content-Length does not replace the body's"
    );
    assert!(fresh.header(&HeaderName::from_static("x-new")).is_some());
    assert_eq!(
        fresh
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::ETAG)
            .count(),
        1
    );
    assert!(guard.store_at(fresh, at(now, 11)));
    assert!(matches!(
        cache.lookup_at(&req(GET, "/e", &h), at(now, 30)),
        Lookup::Hit(_)
    ));
}

#[test]
fn without_validators_or_past_the_keep_time_a_stale_entry_is_a_plain_miss() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let now = Instant::now();
    assert!(fill_at(
        &cache,
        &req(GET, "/plain", &h),
        &hdrs(&[("cache-control", "max-age=10")]),
        "x",
        now
    ));
    assert!(matches!(
        cache.lookup_at(&req(GET, "/plain", &h), at(now, 11)),
        Lookup::Miss(_)
    ));
    assert!(fill_at(
        &cache,
        &req(GET, "/lm", &h),
        &hdrs(&[
            ("cache-control", "max-age=10"),
            ("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT")
        ]),
        "x",
        now
    ));
    // Kept a minute at least (the fresh lifetime was shorter), then dropped.
    assert!(matches!(
        cache.lookup_at(&req(GET, "/lm", &h), at(now, 65)),
        Lookup::Revalidate(..)
    ));
    assert!(matches!(
        cache.lookup_at(&req(GET, "/lm", &h), at(now, 71)),
        Lookup::Miss(_)
    ));
}

#[test]
fn a_no_cache_request_revalidates_a_fresh_entry() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let now = Instant::now();
    assert!(fill_at(
        &cache,
        &req(GET, "/n", &h),
        &hdrs(&[("etag", "\"a\"")]),
        "x",
        now
    ));
    let nc = hdrs(&[("cache-control", "no-cache")]);
    assert!(matches!(
        cache.lookup_at(&req(GET, "/n", &nc), at(now, 1)),
        Lookup::Revalidate(..)
    ));
}

#[test]
fn purge_by_path_prefix_or_everything() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let resp = hdrs(&[]);
    for p in ["/a/1", "/a/2?x=1", "/ab", "/b"] {
        assert!(fill(&cache, &req(GET, p, &h), &resp, "x"));
    }
    assert_eq!(cache.purge(Some("/a/")), 2);
    assert!(matches!(
        cache.lookup(&req(GET, "/a/1", &h)),
        Lookup::Miss(_)
    ));
    assert!(matches!(cache.lookup(&req(GET, "/ab", &h)), Lookup::Hit(_)));
    assert_eq!(cache.purge(Some("/nothing")), 0);
    assert_eq!(cache.purge(None), 2);
    assert!(cache.is_empty());
}
