//! Unit tests with an injected clock (`check_at`): no sleeps.

use super::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000 * MS;

fn policy(name: &str, limit: u64, window: Duration, burst: u64) -> Policy {
    Policy::new(name, KeySpec::ClientIp, limit, window, burst, None)
}

fn check<'a>(p: &'a Policy, key: &'a str) -> Check<'a> {
    Check {
        policy: p,
        key,
        params: p.params_for(None),
    }
}

fn allowed_at(store: &MemoryStore, checks: &[Check<'_>], now: u64) -> bool {
    store.check_at(checks, now).allowed
}

#[test]
fn exact_boundary() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let p = policy("p", 10, Duration::from_secs(1), 10);
    let c = [check(&p, "ip:1.2.3.4")];
    for i in 0..10 {
        let d = s.check_at(&c, 0);
        assert!(d.allowed, "request {i}");
        let h = d.headers.expect("headers");
        assert_eq!(
            (h.limit, h.remaining, h.retry_after_secs),
            (10, 9 - i, None)
        );
    }
    let d = s.check_at(&c, 0);
    assert!(!d.allowed);
    assert_eq!(d.rejected_by.as_deref(), Some("p"));
    let h = d.headers.expect("headers");
    assert_eq!(
        (h.remaining, h.retry_after_secs, h.reset_secs),
        (0, Some(1), 1)
    );
    assert_eq!(h.policy, "10;w=1");
    assert!(!allowed_at(&s, &c, 99 * MS));
    assert!(!allowed_at(&s, &c, 100 * MS - 1));
    assert!(allowed_at(&s, &c, 100 * MS));
    assert!(!allowed_at(&s, &c, 100 * MS));
    assert!(allowed_at(&s, &c, 200 * MS));
}

#[test]
fn burst_above_limit() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let p = policy("per-ip", 100, Duration::from_secs(1), 150);
    let c = [check(&p, "ip:1.2.3.4")];
    let first = s.check_at(&c, 0).headers.expect("headers");
    // 149 left in the bucket, reported as at most the limit.
    assert_eq!((first.limit, first.remaining), (100, 100));
    assert_eq!(first.policy, "100;w=1;burst=150");
    assert_eq!((1..150).filter(|_| allowed_at(&s, &c, 0)).count(), 149);
    assert!(!allowed_at(&s, &c, 0));
    assert!(!allowed_at(&s, &c, 10 * MS - 1));
    assert!(allowed_at(&s, &c, 10 * MS));
}

#[test]
fn sustained_rate_while_hammering() {
    // A client hammering every 10 ms while limited gets exactly one request per T = 100 ms
    // after its burst: refusals consume nothing, so it recovers on schedule.
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let p = policy("p", 10, Duration::from_secs(1), 10);
    let c = [check(&p, "k")];
    let mut allowed_times = Vec::new();
    for step in 0..=10_000u64 {
        let now = step * 10 * MS;
        // 20 at once at t=0 (burst), then one every 10 ms for 100 s.
        for _ in 0..if step == 0 { 20 } else { 1 } {
            if allowed_at(&s, &c, now) {
                allowed_times.push(now);
            }
        }
    }
    assert_eq!(allowed_times.len(), 10 + 1000);
    assert!(allowed_times[..10].iter().all(|&t| t == 0));
    for (i, &t) in allowed_times[10..].iter().enumerate() {
        assert_eq!(t, (i as u64 + 1) * 100 * MS);
    }
    // Any 1 s window holds at most burst + limit*1s/window = 10 + 10 requests... and in
    // steady state exactly 10.
    let in_window = |from: u64| {
        allowed_times
            .iter()
            .filter(|&&t| t >= from && t < from + SEC)
            .count()
    };
    assert_eq!(in_window(50 * SEC), 10);
}

#[test]
fn tiers_choose_limit_and_scale_burst() {
    let mut p = policy("per-user", 1000, Duration::from_secs(60), 1500);
    p.key = KeySpec::Jwt("sub".into());
    p.tiers = Some(Tiers {
        claim: "tier".into(),
        limits: [("premium".to_string(), 10_000), ("free".to_string(), 1000)].into(),
        default: Some(500),
    });
    assert_eq!(
        p.params_for(Some("premium")),
        Params {
            limit: 10_000,
            burst: 15_000
        }
    );
    assert_eq!(
        p.params_for(Some("free")),
        Params {
            limit: 1000,
            burst: 1500
        }
    );
    assert_eq!(
        p.params_for(Some("gold")),
        Params {
            limit: 500,
            burst: 750
        }
    );
    assert_eq!(
        p.params_for(None),
        Params {
            limit: 500,
            burst: 750
        }
    );
    if let Some(t) = p.tiers.as_mut() {
        t.default = None;
    }
    assert_eq!(
        p.params_for(None),
        Params {
            limit: 1000,
            burst: 1500
        }
    );

    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let premium = [Check {
        policy: &p,
        key: "v:alice",
        params: p.params_for(Some("premium")),
    }];
    let free = [Check {
        policy: &p,
        key: "v:bob",
        params: p.params_for(Some("free")),
    }];
    assert_eq!(
        (0..20_000).filter(|_| allowed_at(&s, &premium, 0)).count(),
        15_000
    );
    assert_eq!(
        (0..20_000).filter(|_| allowed_at(&s, &free, 0)).count(),
        1500
    );
    assert_eq!(
        p.policy_header(&premium[0].params),
        "10000;w=60;burst=15000"
    );
}

#[test]
fn hierarchy_refusal_charges_nobody() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let outer = policy("per-ip", 5, Duration::from_secs(10), 5);
    let inner = policy("per-user", 2, Duration::from_secs(10), 2);
    let both = [check(&outer, "ip:9.9.9.9"), check(&inner, "v:alice")];
    let results: Vec<Decision> = (0..5).map(|_| s.check_at(&both, 0)).collect();
    assert_eq!(results.iter().filter(|d| d.allowed).count(), 2);
    for d in &results[2..] {
        assert_eq!(d.rejected_by.as_deref(), Some("per-user"));
        let h = d.headers.as_ref().expect("headers");
        assert_eq!((h.limit, h.retry_after_secs), (2, Some(5)));
    }
    // Allowed responses carry the tightest policy: per-user with 0 left after 2 requests.
    let h = results[1].headers.as_ref().expect("headers");
    assert_eq!((h.limit, h.remaining), (2, 0));
    // per-ip was charged only for the 2 allowed requests: 3 left.
    let outer_only = [check(&outer, "ip:9.9.9.9")];
    assert_eq!(
        (0..10).filter(|_| allowed_at(&s, &outer_only, 0)).count(),
        3
    );
}

#[test]
fn same_bucket_twice_in_one_request() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let p = policy("p", 3, Duration::from_secs(3), 3);
    let twice = [check(&p, "k"), check(&p, "k")];
    assert!(allowed_at(&s, &twice, 0));
    assert!(!allowed_at(&s, &twice, 0), "only one unit left");
    assert!(allowed_at(&s, &[check(&p, "k")], 0));
}

/// Buckets are found by a hash of (policy, key) and compared in place: the same key under
/// two policies, keys that are prefixes of each other, a key with a NUL in it (a JWT claim
/// can carry one) are all separate buckets, and every bucket is still found after the
/// tables grew and after a sweep shrank them (both rehash from the stored keys).
#[test]
fn buckets_are_told_apart_and_survive_growth_and_shrinking() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let a = policy("a", 1, Duration::from_secs(3600), 1);
    let ab = policy("ab", 1, Duration::from_secs(3600), 1);
    let short = policy("s", 1, Duration::from_secs(1), 1);
    let keys = ["k", "k\0", "\0k", "kk", "b\0k", "v:x\0y", ""];
    for k in keys {
        for p in [&a, &ab] {
            assert!(allowed_at(&s, &[check(p, k)], 0), "{}/{k:?}: fresh", p.name);
        }
    }
    // "a" + "bk" is not "ab" + "k" (joined without the NUL they would be one bucket).
    assert!(allowed_at(&s, &[check(&a, "bk")], 0));
    for k in keys {
        for p in [&a, &ab] {
            assert!(
                !allowed_at(&s, &[check(p, k)], 0),
                "{}/{k:?}: spent",
                p.name
            );
        }
    }
    // 50,000 more buckets (the tables grow many times), half of them short-lived.
    let many: Vec<String> = (0..50_000)
        .map(|i| format!("ip:10.0.{}.{}", i >> 8, i & 255))
        .collect();
    for (i, k) in many.iter().enumerate() {
        let p = if i % 2 == 0 { &a } else { &short };
        assert!(allowed_at(&s, &[check(p, k), check(&ab, k)], 0), "{k}");
    }
    let live = |s: &MemoryStore, now: u64| {
        for (i, k) in many.iter().enumerate() {
            if i % 2 == 0 {
                assert!(!allowed_at(s, &[check(&a, k)], now), "a/{k}: found again");
            }
            assert!(!allowed_at(s, &[check(&ab, k)], now), "ab/{k}: found again");
        }
        for k in keys {
            assert!(!allowed_at(s, &[check(&a, k)], now), "a/{k:?}: found again");
        }
    };
    // And 300,000 short-lived ones, so that the sweep below leaves the shards mostly
    // empty and shrinks them (rehashing every bucket kept from its stored key).
    for i in 0..300_000u32 {
        let k = format!("v:idle-{i}");
        assert!(allowed_at(&s, &[check(&short, &k)], 0), "{k}");
    }
    live(&s, 0);
    // The short-lived buckets go idle after a second: the sweep drops them, shrinks the
    // tables, and every bucket it keeps is found again.
    let before = s.capacity();
    assert_eq!(s.sweep_at(2 * SEC), 2 * keys.len() + 1 + 50_000 + 25_000);
    assert!(
        s.capacity() * 2 < before,
        "not shrunk: {before} -> {}",
        s.capacity()
    );
    live(&s, 2 * SEC);
}

#[test]
fn idle_keys_are_evicted() {
    let p = policy("p", 10, Duration::from_secs(1), 10);
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let fill = |s: &MemoryStore, suffix: &str, now: u64| {
        for k in &keys {
            assert!(allowed_at(s, &[check(&p, &format!("{k}{suffix}"))], now));
        }
    };
    // Buckets are full again at 100 ms: the explicit sweep drops them all then.
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    fill(&s, "", 0);
    assert_eq!(s.len(), 100_000);
    assert_eq!(s.sweep_at(99 * MS), 100_000);
    assert_eq!(s.sweep_at(100 * MS), 0);
    // The growth-triggered sweep does it too, without any help.
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    fill(&s, "", 0);
    fill(&s, "x", SEC);
    assert!(s.len() <= 100_000, "idle buckets not swept: {}", s.len());
}

#[test]
fn hard_cap_under_a_million_distinct_keys() {
    // 1,000,000 distinct live keys from two concurrent "attackers" against a 100k cap.
    let cap = 100_000;
    let s = MemoryStore::new(cap);
    let p = policy("p", 1, Duration::from_secs(3600), 1);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..2u64 {
            let (s, p) = (&s, &p);
            scope.spawn(move || {
                let mut key = String::new();
                for i in 0..500_000u64 {
                    key.clear();
                    key.push_str(if t == 0 { "v:a" } else { "v:b" });
                    key.push_str(&i.to_string());
                    assert!(allowed_at(s, &[check(p, &key)], i));
                    if i % 100_000 == 0 {
                        assert!(s.len() <= cap as usize);
                    }
                }
            });
        }
    });
    assert!(
        s.len() <= cap as usize && s.len() >= cap as usize * 7 / 8,
        "{}",
        s.len()
    );
    // The most recent keys (largest TAT) survived eviction and are still limited.
    assert!(!allowed_at(&s, &[check(&p, "v:a499999")], 500_000));
    eprintln!("1M distinct keys in {:?}", started.elapsed());
}

#[test]
fn fallback_key_namespacing() {
    let ip: IpAddr = [1, 2, 3, 4].into();
    let sub = KeySpec::Jwt("sub".into());
    assert_eq!(sub.bucket_key(Some("alice"), ip), "v:alice");
    assert_eq!(sub.bucket_key(None, ip), "ip:1.2.3.4");
    assert_eq!(sub.bucket_key(Some(""), ip), "ip:1.2.3.4");
    assert_eq!(
        sub.bucket_key(Some(&"x".repeat(MAX_KEY_VALUE_LEN + 1)), ip),
        "ip:1.2.3.4"
    );
    // A client sending the literal value "1.2.3.4" does not land in an IP bucket.
    assert_eq!(sub.bucket_key(Some("1.2.3.4"), ip), "v:1.2.3.4");
    let hdr = KeySpec::parse("header:X-Api-Key").expect("valid");
    assert_eq!(
        hdr,
        KeySpec::Header(http::HeaderName::from_static("x-api-key"))
    );
    assert_eq!(hdr.bucket_key(None, "::1".parse().expect("ip")), "ip:::1");
    assert_eq!(
        KeySpec::ClientIp.bucket_key(Some("ignored"), ip),
        "ip:1.2.3.4"
    );
    assert_eq!(KeySpec::Route.bucket_key(Some("api"), ip), "r:api");
    assert_eq!(KeySpec::Global.bucket_key(None, ip), "global");
}

const SPEC_YAML: &str = r#"
store: memory
redis: { url: "redis://127.0.0.1:6379/0", timeout: 50ms, on_error: allow, prefix: "gh:" }
policies:
  per-ip:   { key: client_ip, limit: 100, window: 1s, burst: 150 }
  per-user: { key: jwt.sub, limit: 1000, window: 1m,
              tiers: { claim: tier, limits: { premium: 10000, free: 1000 } } }
  per-org:  { key: jwt.org, limit: 20000, window: 1m }
  by-key:   { key: "header:X-Api-Key", limit: 5, window: 500ms }
"#;

#[test]
fn spec_example_builds() {
    let raw: RawRateLimits = serde_yaml::from_str(SPEC_YAML).expect("yaml");
    let ps = build_policies(&raw).expect("valid");
    assert_eq!(ps.len(), 4);
    let ip = ps.get("per-ip").expect("per-ip");
    assert_eq!(
        (ip.limit, ip.burst, ip.window),
        (100, 150, Duration::from_secs(1))
    );
    let user = ps.get("per-user").expect("per-user");
    assert_eq!(user.key, KeySpec::Jwt("sub".into()));
    assert_eq!(
        user.params_for(Some("premium")),
        Params {
            limit: 10_000,
            burst: 10_000
        }
    );
    let by_key = ps.get("by-key").expect("by-key");
    assert_eq!(by_key.policy_header(&by_key.params_for(None)), "5;w=0.5");
    assert!(matches!(build_store(&raw), Ok(Store::Memory(_))));
    let mut redis = raw.clone();
    redis.store = Some("redis".into());
    // Equal store settings keep the running store on reload; a change rebuilds it.
    let store = |r: &RawRateLimits| RateLimitConfig::from_raw(r).map(|c| c.store);
    assert_eq!(store(&raw), store(&raw));
    assert_ne!(store(&raw), store(&redis));
}

#[test]
fn all_errors_collected_with_paths() {
    let yaml = r#"
store: redis
max_keys: 10
policies:
  per-ip:   { key: ip, limit: 0, window: 0s, burst: 0 }
  per-user: { key: jwt., limit: 10, window: 1m,
              tiers: { claim: "", limits: { premium: 0 }, default: 0 } }
  "bad:name": { key: "header:Bad Header", limit: 1, window: 1s }
"#;
    let raw: RawRateLimits = serde_yaml::from_str(yaml).expect("yaml");
    let errs = build_policies(&raw).expect_err("invalid");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    let expected = [
        "rate_limits.max_keys",
        "rate_limits.redis",
        "rate_limits.policies.bad:name",
        "rate_limits.policies.bad:name.key",
        "rate_limits.policies.per-ip.key",
        "rate_limits.policies.per-ip.limit",
        "rate_limits.policies.per-ip.window",
        "rate_limits.policies.per-ip.burst",
        "rate_limits.policies.per-user.key",
        "rate_limits.policies.per-user.tiers.claim",
        "rate_limits.policies.per-user.tiers.limits.premium",
        "rate_limits.policies.per-user.tiers.default",
    ];
    assert_eq!(paths, expected, "{errs:#?}");
    let key_err = errs
        .iter()
        .find(|e| e.path.ends_with("per-ip.key"))
        .expect("key error");
    assert_eq!(
        key_err.message,
        r#"unknown key "ip" (valid: client_ip, jwt.<claim>, header:<Name>, consumer, route, global)"#
    );

    let yaml = r#"
store: memcached
redis: { url: "http://nope", timeout: 0s, on_error: explode }
"#;
    let raw: RawRateLimits = serde_yaml::from_str(yaml).expect("yaml");
    let errs = build_policies(&raw).expect_err("invalid");
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(
        got[0],
        r#"rate_limits.store: unknown store "memcached" (valid: memory, redis, hybrid)"#
    );
    assert!(
        got[1].starts_with("rate_limits.redis.url: invalid redis url"),
        "{}",
        got[1]
    );
    assert_eq!(got[2], "rate_limits.redis.timeout: timeout must be > 0");
    assert!(got[3].contains(r#"unknown on_error "explode" (valid: allow, deny)"#));
    assert!(build_store(&raw).is_err());

    let unknown = serde_yaml::from_str::<RawRateLimits>(
        "policies: { a: { key: global, limit: 1, window: 1s, brust: 2 } }",
    );
    assert!(unknown.is_err(), "deny_unknown_fields");
}

#[test]
fn empty_request_is_allowed_without_headers() {
    let s = MemoryStore::new(DEFAULT_MAX_KEYS);
    let d = s.check_at(&[], 0);
    assert!(d.allowed && d.headers.is_none() && d.rejected_by.is_none());
}

#[test]
fn policy_header_windows() {
    let hdr = |ms: u64| {
        let p = policy("p", 7, Duration::from_millis(ms), 7);
        p.policy_header(&p.params_for(None))
    };
    assert_eq!(hdr(1000), "7;w=1");
    assert_eq!(hdr(60_000), "7;w=60");
    assert_eq!(hdr(500), "7;w=0.5");
    assert_eq!(hdr(1250), "7;w=1.25");
    assert_eq!(hdr(1005), "7;w=1.005");
    let p = policy("p", 100, Duration::from_secs(1), 150);
    assert_eq!(
        p.policy_header(&Params {
            limit: 0,
            burst: 18_446_744_073_709_551_615
        }),
        "0;w=1;burst=18446744073709551615"
    );
}

#[test]
fn policy_value_is_built_once_and_follows_changes() {
    let mut p = policy("p", 100, Duration::from_secs(1), 150);
    assert_eq!(p.policy_value(&p.params_for(None)), "100;w=1;burst=150");
    // Other parameters (a tier) are built on the spot.
    let tier = Params {
        limit: 1000,
        burst: 1500,
    };
    assert_eq!(p.policy_value(&tier), "1000;w=1;burst=1500");
    // The fields are public: a changed window or limit is not served from the cache.
    p.window = Duration::from_millis(500);
    assert_eq!(p.policy_value(&p.params_for(None)), "100;w=0.5;burst=150");
    p.limit = 150;
    assert_eq!(p.policy_value(&p.params_for(None)), "150;w=0.5");
}

mod gcra;

#[test]
fn consumer_keys_and_their_fallback() {
    let yaml = r#"
policies:
  by-consumer: { key: consumer, limit: 10, window: 1s }
  consumers-only: { key: consumer, limit: 10, window: 1s, fallback: refuse }
  by-ip: { key: client_ip, limit: 10, window: 1s, fallback: client_ip }
"#;
    let raw: RawRateLimits = serde_yaml::from_str(yaml).expect("yaml");
    let policies = build_policies(&raw).expect("valid");
    assert_eq!(
        policies.get("by-consumer").unwrap().key,
        KeySpec::Consumer { refuse: false }
    );
    assert_eq!(
        policies.get("consumers-only").unwrap().key,
        KeySpec::Consumer { refuse: true }
    );
    let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let k = &policies.get("by-consumer").unwrap().key;
    assert_eq!(k.bucket_key(Some("partner-a"), ip), "c:partner-a");
    assert_eq!(k.bucket_key(None, ip), "ip:192.0.2.7");

    let yaml = r#"
policies:
  a: { key: client_ip, limit: 10, window: 1s, fallback: refuse }
  b: { key: consumer, limit: 10, window: 1s, fallback: sometimes }
"#;
    let raw: RawRateLimits = serde_yaml::from_str(yaml).expect("yaml");
    let errs = build_policies(&raw).expect_err("invalid");
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "rate_limits.policies.a.fallback",
            "rate_limits.policies.b.fallback"
        ],
        "{errs:#?}"
    );
}
