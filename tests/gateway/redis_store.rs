//! Redis store against a real `redis-server` started by each test on a free loopback port
//! (skipped, with a message, when `redis-server` is not installed). Loops are bounded.

use crate::common::RedisServer;
use gatehouse::ratelimit::{build_store, Check, KeySpec, Policy, RawRateLimits, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn redis_store(url: &str, on_error: &str) -> Store {
    let yaml = format!(
        "store: redis\nredis: {{ url: \"{url}\", timeout: 50ms, on_error: {on_error}, prefix: \"t:\" }}"
    );
    let raw: RawRateLimits = serde_yaml::from_str(&yaml).expect("yaml");
    build_store(&raw).expect("store")
}

fn policy(name: &str, limit: u64, secs: u64) -> Policy {
    Policy::new(
        name,
        KeySpec::ClientIp,
        limit,
        Duration::from_secs(secs),
        limit,
        None,
    )
}

fn check<'a>(p: &'a Policy, key: &'a str) -> Check<'a> {
    Check {
        policy: p,
        key,
        params: p.params_for(None),
    }
}

/// Polls (bounded) until the store answers from Redis rather than via `on_error`.
async fn wait_until_healthy(store: &Store) {
    let probe = policy("probe", 1_000_000, 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.check(&[check(&probe, "probe")]).await.store_error {
        assert!(Instant::now() < deadline, "store did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_across_two_instances() {
    if !RedisServer::available() {
        return;
    }
    let server = RedisServer::start(RedisServer::free_port());
    let gateways = [
        Arc::new(redis_store(&server.url(), "deny")),
        Arc::new(redis_store(&server.url(), "deny")),
    ];
    for g in &gateways {
        wait_until_healthy(g).await;
    }
    let p = Arc::new(policy("per-ip", 20, 2));
    let barrier = Arc::new(tokio::sync::Barrier::new(30));
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (g, p, b) = (gateways[i % 2].clone(), p.clone(), barrier.clone());
            tokio::spawn(async move {
                b.wait().await;
                g.check(&[check(&p, "ip:192.0.2.1")]).await
            })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        let d = t.await.expect("task");
        assert!(!d.store_error);
        allowed += usize::from(d.allowed);
        if !d.allowed {
            let h = d.headers.expect("headers on refusal");
            assert_eq!((h.limit, h.remaining, h.retry_after_secs), (20, 0, Some(1)));
            assert_eq!(h.policy, "20;w=2");
        }
    }
    assert_eq!(allowed, 20);
    assert_eq!(gateways[0].redis_errors() + gateways[1].redis_errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchy_is_atomic() {
    if !RedisServer::available() {
        return;
    }
    let server = RedisServer::start(RedisServer::free_port());
    let store = redis_store(&server.url(), "deny");
    wait_until_healthy(&store).await;
    let outer = policy("per-ip", 5, 10);
    let inner = policy("per-user", 2, 10);
    let both = [check(&outer, "ip:198.51.100.7"), check(&inner, "v:alice")];
    let mut decisions = Vec::new();
    for _ in 0..5 {
        decisions.push(store.check(&both).await);
    }
    assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 2);
    for d in &decisions[2..] {
        assert_eq!(d.rejected_by.as_deref(), Some("per-user"));
        assert_eq!(d.headers.as_ref().and_then(|h| h.retry_after_secs), Some(5));
    }
    let outer_only = [check(&outer, "ip:198.51.100.7")];
    let mut left = 0;
    for _ in 0..10 {
        left += usize::from(store.check(&outer_only).await.allowed);
    }
    assert_eq!(left, 3, "per-ip charged only for the 2 allowed requests");
    // Prefixed key, integral µs TAT (not Lua's 14-digit float form), expiry = time until full.
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = "t:per-ip:ip:198.51.100.7";
    let tat: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(
        tat.len() >= 16 && tat.bytes().all(|b| b.is_ascii_digit()),
        "{tat}"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!((9_000..=10_001).contains(&pttl), "{pttl}");
    // The same bucket twice in one request counts twice.
    let twice_p = policy("twice", 3, 10);
    let twice = [check(&twice_p, "k"), check(&twice_p, "k")];
    assert!(store.check(&twice).await.allowed);
    assert!(!store.check(&twice).await.allowed);
    assert!(store.check(&twice[..1]).await.allowed);
}

/// Every call while Redis is unusable returns within the timeout plus a margin and
/// answers per `on_error`.
async fn assert_degraded(store: &Store, expect_allowed: bool) {
    let p = policy("per-ip", 1, 60);
    let errors_before = store.redis_errors();
    for _ in 0..5 {
        let started = Instant::now();
        let d = store.check(&[check(&p, "ip:203.0.113.9")]).await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(50 + 150), "call took {took:?}");
        assert!(d.store_error && d.headers.is_none());
        assert_eq!(d.allowed, expect_allowed);
    }
    assert_eq!(store.redis_errors(), errors_before + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_honours_on_error_and_recovers() {
    if !RedisServer::available() {
        return;
    }
    let mut server = RedisServer::start(RedisServer::free_port());
    let allow = redis_store(&server.url(), "allow");
    let deny = redis_store(&server.url(), "deny");
    wait_until_healthy(&allow).await;
    wait_until_healthy(&deny).await;

    // Hung server (SIGSTOP): only the timeout can answer.
    server.signal("-STOP");
    assert_degraded(&allow, true).await;
    assert_degraded(&deny, false).await;
    server.signal("-CONT");
    wait_until_healthy(&allow).await;

    // Killed server: connection refused.
    server.kill();
    assert_degraded(&allow, true).await;
    assert_degraded(&deny, false).await;

    // Restarted on the same port (empty, so the script must be reloaded: NOSCRIPT path).
    server.restart();
    wait_until_healthy(&allow).await;
    wait_until_healthy(&deny).await;
    let p = policy("per-ip", 3, 60);
    let mut allowed = 0;
    for _ in 0..6 {
        let d = deny.check(&[check(&p, "ip:203.0.113.10")]).await;
        assert!(!d.store_error);
        allowed += usize::from(d.allowed);
    }
    assert_eq!(allowed, 3, "limiting resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_startup_does_not_block() {
    if !RedisServer::available() {
        return;
    }
    let port = RedisServer::free_port();
    let started = Instant::now();
    let store = redis_store(&format!("redis://127.0.0.1:{port}/0"), "deny");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "build_store must not connect"
    );
    assert_degraded(&store, false).await;
    let _server = RedisServer::start(port);
    wait_until_healthy(&store).await;
}
