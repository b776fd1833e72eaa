//! Config, rules and store tests (synchronous). Coalescing tests are in `tests_fill.rs`.

use super::rules::{self, CacheControl};
use super::*;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

pub(super) const GET: &Method = &Method::GET;

pub(super) fn policy() -> CachePolicy {
    CachePolicy {
        ttl: Duration::from_secs(30),
        max_entries: 100,
        max_body: 1024,
        max_bytes: 1 << 20,
        cache_authorized: false,
    }
}

pub(super) fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).expect("test header name"),
            HeaderValue::from_str(v).expect("test header value"),
        );
    }
    h
}

pub(super) fn req<'a>(method: &'a Method, pq: &'a str, headers: &'a HeaderMap) -> RequestInfo<'a> {
    RequestInfo {
        method,
        host: "Example.COM",
        path_and_query: pq,
        headers,
    }
}

/// The leader's path through the integrator: storable → collector → store. `now` is the
/// clock of the whole fill.
pub(super) fn fill_at(
    cache: &RouteCache,
    req: &RequestInfo<'_>,
    resp: &HeaderMap,
    body: &'static str,
    now: Instant,
) -> bool {
    let Lookup::Miss(guard) = cache.lookup_at(req, now) else {
        panic!("expected a miss for {}", req.path_and_query);
    };
    let Some(ttl) = cache.storable(req, 200, resp) else {
        return false;
    };
    let mut collector = cache.collector(200, resp, ttl);
    collector.push(&Bytes::from_static(body.as_bytes()));
    collector
        .finish_at(now)
        .is_some_and(|r| guard.store_at(r, now))
}

pub(super) fn fill(
    cache: &RouteCache,
    req: &RequestInfo<'_>,
    resp: &HeaderMap,
    body: &'static str,
) -> bool {
    fill_at(cache, req, resp, body, Instant::now())
}

fn hit_body(lookup: Lookup) -> Option<Bytes> {
    match lookup {
        Lookup::Hit(r) => Some(r.body.clone()),
        _ => None,
    }
}

fn ttl_of(resp: &[(&str, &str)]) -> Option<Duration> {
    let h = HeaderMap::new();
    RouteCache::new(policy()).storable(&req(GET, "/", &h), 200, &hdrs(resp))
}

#[test]
fn config_defaults_and_errors_with_paths() {
    let raw: RawCache = serde_yaml::from_str("ttl: 30s").expect("yaml");
    let p = build(&raw, "routes[0].cache").expect("valid");
    assert_eq!(p.ttl, Duration::from_secs(30));
    assert_eq!(
        (p.max_entries, p.max_body, p.max_bytes),
        (10_000, 1 << 20, 64 << 20)
    );
    assert!(!p.cache_authorized);
    assert_eq!(
        p,
        build(&raw, "elsewhere").expect("valid"),
        "policies compare equal"
    );

    let raw: RawCache =
        serde_yaml::from_str("{ ttl: 0s, max_entries: 0, max_body: 2MiB, max_bytes: 1MiB }")
            .expect("yaml");
    let errs = build(&raw, "routes[3].cache").expect_err("invalid");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[3].cache.ttl",
            "routes[3].cache.max_entries",
            "routes[3].cache.max_body"
        ]
    );
    let raw: RawCache = serde_yaml::from_str("{ ttl: 2d, max_bytes: 0 }").expect("yaml");
    let errs = build(&raw, "r.cache").expect_err("invalid");
    assert_eq!(
        errs[0].to_string(),
        "r.cache.ttl: 172800s is too long (at most 1d)"
    );
    assert_eq!(errs[1].path, "r.cache.max_bytes");

    let e = serde_yaml::from_str::<RawCache>("{ ttl: 1s, tll: 2s }").expect_err("unknown");
    assert!(e.to_string().contains("unknown field"), "{e}");
    assert!(
        serde_yaml::from_str::<RawCache>("max_entries: 5").is_err(),
        "ttl required"
    );
}

#[test]
fn miss_store_hit() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let r = req(GET, "/items?page=1", &h);
    let resp = hdrs(&[("content-type", "application/json"), ("etag", "\"v1\"")]);
    assert!(fill(&cache, &r, &resp, "[1,2]"));
    let Lookup::Hit(hit) = cache.lookup(&r) else {
        panic!("expected hit")
    };
    assert_eq!((hit.status, &hit.body[..]), (200, &b"[1,2]"[..]));
    let get = |n: &str| {
        hit.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("content-length"), Some(HeaderValue::from(5)));
    assert_eq!(get("etag"), Some(HeaderValue::from_static("\"v1\"")));
    assert_eq!(hit.age_secs(), 0);
    assert_eq!(hit.age_secs_at(hit.stored_at + Duration::from_secs(7)), 7);
    assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 1, 1));
    assert!(cache.bytes() > 5);
    // The host is case-insensitive.
    let other = RequestInfo {
        host: "example.com",
        ..r
    };
    assert!(hit_body(cache.lookup(&other)).is_some());
}

#[test]
fn head_is_served_from_get_entry() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let head = req(&Method::HEAD, "/doc", &h);
    assert!(
        matches!(cache.lookup(&head), Lookup::Bypass),
        "HEAD cannot fill"
    );
    assert!(fill(
        &cache,
        &req(GET, "/doc", &h),
        &HeaderMap::new(),
        "body"
    ));
    assert!(matches!(cache.lookup(&head), Lookup::Hit(_)));
    assert_eq!(cache.storable(&head, 200, &HeaderMap::new()), None);
}

#[test]
fn query_distinguishes_keys() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    assert!(fill(
        &cache,
        &req(GET, "/s?q=a", &h),
        &HeaderMap::new(),
        "a"
    ));
    assert!(fill(
        &cache,
        &req(GET, "/s?q=b", &h),
        &HeaderMap::new(),
        "b"
    ));
    assert_eq!(
        hit_body(cache.lookup(&req(GET, "/s?q=a", &h))).as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        hit_body(cache.lookup(&req(GET, "/s?q=b", &h))).as_deref(),
        Some(&b"b"[..])
    );
    assert!(matches!(cache.lookup(&req(GET, "/s", &h)), Lookup::Miss(_)));
}

#[test]
fn vary_accept_encoding_selects_variants() {
    let cache = RouteCache::new(policy());
    let gzip = hdrs(&[("accept-encoding", "gzip, br")]);
    let identity = hdrs(&[("accept-encoding", "identity")]);
    let resp = hdrs(&[("vary", "Accept-Encoding")]);
    assert!(fill(&cache, &req(GET, "/v", &gzip), &resp, "zipped"));
    assert!(matches!(
        cache.lookup(&req(GET, "/v", &identity)),
        Lookup::Miss(_)
    ));
    assert!(fill(&cache, &req(GET, "/v", &identity), &resp, "plain"));
    let same = hdrs(&[("accept-encoding", "gzip,br")]); // same value, other spacing
    assert_eq!(
        hit_body(cache.lookup(&req(GET, "/v", &same))).as_deref(),
        Some(&b"zipped"[..])
    );
    assert_eq!(
        hit_body(cache.lookup(&req(GET, "/v", &identity))).as_deref(),
        Some(&b"plain"[..])
    );
    assert!(matches!(
        cache.lookup(&req(GET, "/v", &HeaderMap::new())),
        Lookup::Miss(_)
    ));
    assert_eq!(cache.len(), 2);
}

#[test]
fn vary_star_is_not_stored() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    assert_eq!(ttl_of(&[("vary", "*")]), None);
    assert_eq!(ttl_of(&[("vary", "accept, *")]), None);
    // Even if the integrator skipped `storable`, the guard refuses it.
    let Lookup::Miss(guard) = cache.lookup(&req(GET, "/x", &h)) else {
        panic!()
    };
    let mut c = cache.collector(200, &hdrs(&[("vary", "*")]), Duration::from_secs(5));
    assert!(c.push(&Bytes::from_static(b"x")));
    assert!(!guard.store(c.finish().expect("complete")));
    assert!(cache.is_empty());
}

#[test]
fn cache_control_forbids_or_shortens() {
    let ttl = |s| Some(Duration::from_secs(s));
    assert_eq!(ttl_of(&[]), ttl(30), "route TTL by default");
    for cc in [
        "no-store",
        "private",
        "no-cache",
        "public, no-cache=\"x\"",
        "Private=\"a, b\"",
    ] {
        assert_eq!(ttl_of(&[("cache-control", cc)]), None, "{cc}");
    }
    assert_eq!(ttl_of(&[("cache-control", "public, max-age=10")]), ttl(10));
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=3600")]),
        ttl(30),
        "never lengthened"
    );
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=20, s-maxage=5")]),
        ttl(5)
    );
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=5, s-maxage=20")]),
        ttl(20)
    );
    assert_eq!(ttl_of(&[("cache-control", "max-age=0")]), None);
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=ten")]),
        None,
        "invalid = stale"
    );
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=20"), ("age", "15")]),
        ttl(5)
    );
    assert_eq!(
        ttl_of(&[("cache-control", "max-age=20"), ("age", "25")]),
        None
    );
    let cc = CacheControl::parse(&hdrs(&[(
        "cache-control",
        "private=\"a, max-age=1\", s-maxage=9",
    )]));
    assert!(cc.private && cc.max_age.is_none() && cc.s_maxage == Some(9));
}

#[test]
fn expires_used_only_without_max_age() {
    let date = "Sun, 06 Nov 1994 08:49:37 GMT";
    let in_10s = "Sun, 06 Nov 1994 08:49:47 GMT";
    let expires = |e| ttl_of(&[("date", date), ("expires", e)]);
    assert_eq!(expires(in_10s), Some(Duration::from_secs(10)));
    assert_eq!(expires(date), None);
    assert_eq!(expires("0"), None, "invalid Expires = already expired");
    let with_max_age = [
        ("date", date),
        ("expires", "0"),
        ("cache-control", "max-age=7"),
    ];
    assert_eq!(ttl_of(&with_max_age), Some(Duration::from_secs(7)));
    let d = HeaderValue::from_static(date);
    assert_eq!(rules::parse_http_date(&d), Some(784_111_777));
    let leap = HeaderValue::from_static("Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(rules::parse_http_date(&leap), Some(951_782_400));
    // The obsolete forms RFC 9110 §5.6.7 requires recipients to accept.
    let rfc850 = HeaderValue::from_static("Sunday, 06-Nov-94 08:49:37 GMT");
    assert_eq!(rules::parse_http_date(&rfc850), Some(784_111_777));
    let asctime = HeaderValue::from_static("Sun Nov  6 08:49:37 1994");
    assert_eq!(rules::parse_http_date(&asctime), Some(784_111_777));
}

#[test]
fn max_age_entry_expires_and_is_dropped() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let r = req(GET, "/short", &h);
    let t0 = Instant::now();
    assert!(fill_at(
        &cache,
        &r,
        &hdrs(&[("cache-control", "max-age=10")]),
        "x",
        t0
    ));
    assert!(matches!(
        cache.lookup_at(&r, t0 + Duration::from_secs(9)),
        Lookup::Hit(_)
    ));
    assert!(matches!(
        cache.lookup_at(&r, t0 + Duration::from_secs(10)),
        Lookup::Miss(_)
    ));
    assert_eq!((cache.len(), cache.bytes()), (0, 0), "dropped on access");
}

#[test]
fn credentials_bypass_unless_cache_authorized() {
    let resp = HeaderMap::new();
    for (name, value) in [("authorization", "Bearer t"), ("cookie", "sid=1")] {
        let h = hdrs(&[(name, value)]);
        let cache = RouteCache::new(policy());
        assert!(
            matches!(cache.lookup(&req(GET, "/me", &h)), Lookup::Bypass),
            "{name}"
        );
        assert_eq!(cache.storable(&req(GET, "/me", &h), 200, &resp), None);
        let cache = RouteCache::new(CachePolicy {
            cache_authorized: true,
            ..policy()
        });
        assert!(
            fill(&cache, &req(GET, "/me", &h), &resp, "shared"),
            "{name}"
        );
    }
}

#[test]
fn set_cookie_status_and_request_directives() {
    assert_eq!(ttl_of(&[("set-cookie", "a=b")]), None);
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    let r = req(GET, "/", &h);
    for status in [500, 302, 206, 304] {
        assert_eq!(
            cache.storable(&r, status, &HeaderMap::new()),
            None,
            "{status}"
        );
    }
    for status in [200, 203, 204, 301, 404, 410] {
        assert!(
            cache.storable(&r, status, &HeaderMap::new()).is_some(),
            "{status}"
        );
    }
    for (name, value) in [("cache-control", "no-store"), ("range", "bytes=0-1")] {
        let h = hdrs(&[(name, value)]);
        assert!(
            matches!(cache.lookup(&req(GET, "/", &h)), Lookup::Bypass),
            "{name}"
        );
    }
    assert!(matches!(
        cache.lookup(&req(&Method::POST, "/", &h)),
        Lookup::Bypass
    ));
}

#[test]
fn client_no_cache_refreshes_entry() {
    let cache = RouteCache::new(policy());
    let h = HeaderMap::new();
    assert!(fill(&cache, &req(GET, "/r", &h), &HeaderMap::new(), "old"));
    for (name, value) in [
        ("cache-control", "no-cache"),
        ("cache-control", "max-age=0"),
        ("pragma", "no-cache"),
    ] {
        let nc = hdrs(&[(name, value)]);
        assert!(
            matches!(cache.lookup(&req(GET, "/r", &nc)), Lookup::Miss(_)),
            "{name}: {value}"
        );
    }
    let nc = hdrs(&[("cache-control", "no-cache")]);
    assert!(fill(&cache, &req(GET, "/r", &nc), &HeaderMap::new(), "new"));
    assert_eq!(
        hit_body(cache.lookup(&req(GET, "/r", &h))).as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(cache.len(), 1, "replaced, not duplicated");
}

#[test]
fn body_over_max_body_is_not_stored() {
    let cache = RouteCache::new(CachePolicy {
        max_body: 8,
        ..policy()
    });
    let h = HeaderMap::new();
    assert_eq!(
        cache.storable(&req(GET, "/", &h), 200, &hdrs(&[("content-length", "9")])),
        None
    );
    let mut c = cache.collector(200, &HeaderMap::new(), Duration::from_secs(5));
    assert!(c.push(&Bytes::from_static(b"12345")));
    assert!(!c.push(&Bytes::from_static(b"6789")), "over 8 bytes");
    assert!(c.is_overflowed() && c.is_empty(), "buffer released");
    assert!(!c.push(&Bytes::from_static(b"x")), "stays stopped");
    assert!(c.finish().is_none());
    assert!(!fill(
        &cache,
        &req(GET, "/big", &h),
        &HeaderMap::new(),
        "123456789"
    ));
    assert!(cache.is_empty());
}

#[test]
fn stored_headers_drop_hop_by_hop_and_cookies() {
    let upstream = hdrs(&[
        ("connection", "close, x-internal"),
        ("x-internal", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("set-cookie", "a=b"),
        ("age", "3"),
        ("content-length", "999"),
        ("content-type", "text/plain"),
        ("content-encoding", "gzip"),
        ("cache-control", "max-age=60"),
        ("vary", "accept-encoding"),
        ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]);
    let mut c = BodyCollector::new(200, &upstream, Duration::from_secs(5), 100);
    c.push(&Bytes::from_static(b"abc"));
    let now = Instant::now();
    let r = c.finish_at(now).expect("complete");
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "content-type",
            "content-encoding",
            "cache-control",
            "vary",
            "last-modified",
            "content-length"
        ]
    );
    assert_eq!(
        r.headers.last().map(|(_, v)| v.clone()),
        Some(HeaderValue::from(3))
    );
    // Upstream age is kept in the entry's age, not lost.
    assert_eq!(r.age_secs_at(now), 3);
    assert_eq!(r.expires_at(), now + Duration::from_secs(5));
}

mod evict;
mod fill;
mod revalidate;
