//! Rate limits on real Redis deployments: a three-master Cluster (keys on every node
//! limited exactly, a decision across slots, a Cluster node given as a plain URL refused),
//! a Sentinel failover followed, the store breaker (fail fast, then recover), and the
//! hybrid store (local decisions from leases, never over the limit).

use crate::common::*;
use crate::redis_deploy::{cli, Cluster, Sentinel};
use std::time::{Duration, Instant};

fn limited_by_key(store: &str, redis: &str, up: &EchoServer, limit: u32) -> String {
    format!(
        "rate_limits:\n  store: {store}\n  redis: {redis}\n  policies:\n    \
         per-key: {{ key: \"header:X-Key\", limit: {limit}, window: 1m }}\n    \
         per-route: {{ key: route, limit: 1000, window: 1m }}\n\
         services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: one, match: {{ path_prefix: /one }}, service: s, rate_limit: [per-key] }}\n  \
         - {{ name: two, match: {{ path_prefix: /two }}, service: s, rate_limit: [per-key, per-route] }}\n",
        up.addr()
    )
}

fn now_us() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as f64
}

fn get_key(gw: &Gateway, path: &str, key: &str) -> u16 {
    request(gw.addr, "GET", path, &[("X-Key", key)], b"")
        .expect("request")
        .status
}

#[test]
fn a_cluster_limits_keys_on_every_node_exactly() {
    if !RedisServer::available() {
        return;
    }
    let dir = scratch_dir("redis-cluster");
    let cluster = Cluster::start(&dir);
    let up = upstreams(1);
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let gw = Gateway::start(&limited_by_key(
        "redis",
        &format!("{{ cluster: [{nodes}], timeout: 500ms, on_error: deny }}"),
        &up[0],
        3,
    ));
    // 30 keys over the slots of all three nodes, on a route with one policy and on one
    // with two (buckets in different slots: charged one by one, refunded on refusal).
    let mut two_started_us = 0.0;
    for path in ["/one", "/two"] {
        if path == "/two" {
            two_started_us = now_us();
        }
        for k in 0..30 {
            let key = format!("{path}-user-{k}");
            let statuses: Vec<u16> = (0..5).map(|_| get_key(&gw, path, &key)).collect();
            assert_eq!(statuses, [200, 200, 200, 429, 429], "{key}: {}", gw.log());
        }
    }
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().all(|n| *n > 0),
        "buckets on every node: {per_node:?}"
    );
    assert_eq!(
        gw.metric("gatehouse_rate_limit_store_errors_total", ""),
        Some(0.0),
        "no redirect turned into an error"
    );
    // The refused requests on /two gave their per-route charge back: 90 allowed.
    let route_key = "gh:{per-route:r:two}".to_string();
    let node = cluster
        .ports
        .iter()
        .find(|p| !cli(&["-p", &p.to_string(), "GET", &route_key]).contains("MOVED"))
        .copied()
        .expect("a node holds the route bucket");
    let tat: f64 = cli(&["-p", &node.to_string(), "GET", &route_key])
        .trim()
        .parse()
        .expect("tat");
    // 1000/min: a request is 60 ms of the bucket, so 90 charges put it 5.4 s ahead of
    // when /two started (the loop takes far less): 150 without the refunds.
    let charged = (tat - two_started_us) / 60_000.0;
    assert!(
        (89.9..91.0).contains(&charged),
        "per-route charged {charged:.2} requests, expected 90"
    );

    // A Cluster node given as a plain url is refused by -t and at start.
    let config = dir.join("plain-url.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ address: \"127.0.0.1:{}\" }}]\n{}",
            free_port(),
            limited_by_key(
                "redis",
                &format!("{{ url: \"redis://127.0.0.1:{}\" }}", cluster.ports[0]),
                &up[0],
                3
            )
        ),
    )
    .expect("write");
    let out = run_cli(&["-c", config.to_str().expect("path"), "-t"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rate_limits.redis.url:") && err.contains("is a node of a Redis Cluster"),
        "{err}"
    );
}

#[test]
fn a_sentinel_failover_is_followed() {
    if !RedisServer::available() {
        return;
    }
    let dir = scratch_dir("redis-sentinel");
    let mut sentinel = Sentinel::start(&dir, "gh");
    let up = upstreams(1);
    let gw = Gateway::start(&limited_by_key(
        "redis",
        &format!(
            "{{ sentinel: {{ master: gh, nodes: [\"{}\"] }}, timeout: 300ms, on_error: deny, \
             breaker: {{ failures: 3, cool_down: 500ms }} }}",
            sentinel.url()
        ),
        &up[0],
        2,
    ));
    assert!(
        wait_until(Duration::from_secs(5), || get_key(&gw, "/one", "warm")
            == 200),
        "{}",
        gw.log()
    );
    let statuses: Vec<u16> = (0..3).map(|_| get_key(&gw, "/one", "before")).collect();
    assert_eq!(statuses, [200, 200, 429]);

    sentinel.failover();
    sentinel.kill_old_master();
    // Limits hold again on the new master soon after; in between on_error (deny) applies.
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || get_key(
            &gw,
            "/one",
            "probe-key"
        ) != 503),
        "not following the new master: {}",
        gw.log()
    );
    let statuses: Vec<u16> = (0..3).map(|_| get_key(&gw, "/one", "after")).collect();
    assert_eq!(statuses, [200, 200, 429], "{}", gw.log());
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(gw.log().contains("following the master"), "{}", gw.log());
    // The buckets are in the new master.
    let keys = cli(&["-p", &sentinel.replica.to_string(), "KEYS", "gh:per-key:*"]);
    assert!(keys.contains("after"), "{keys}");
}

#[test]
fn the_store_breaker_fails_fast_and_recovers() {
    if !RedisServer::available() {
        return;
    }
    let mut redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let gw = Gateway::start(&limited_by_key(
        "redis",
        &format!(
            "{{ url: \"{}\", timeout: 200ms, on_error: allow, breaker: {{ failures: 3, cool_down: 10s }} }}",
            redis.url()
        ),
        &up[0],
        1000,
    ));
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("gatehouse_rate_limit_store_state", "") == Some(0.0)
            && get_key(&gw, "/one", "k") == 200
    }));

    // Paused: the first decisions wait out the timeout, then the breaker opens and
    // decisions answer on_error (allow) at once.
    redis.signal("-STOP");
    let timed = |gw: &Gateway| {
        let t = Instant::now();
        let s = get_key(gw, "/one", "k");
        (s, t.elapsed())
    };
    let mut slow = 0;
    for _ in 0..3 {
        let (s, took) = timed(&gw);
        assert_eq!(s, 200);
        assert!(
            took < Duration::from_millis(400),
            "bounded by the timeout, never twice it: {took:?}"
        );
        if took >= Duration::from_millis(150) {
            slow += 1;
        }
    }
    assert!(slow >= 2, "the first failures wait for the timeout");
    assert_eq!(gw.metric("gatehouse_rate_limit_store_state", ""), Some(2.0));
    let status = gw.status();
    assert_eq!(status["rate_limit_store"]["kind"], "redis", "{status}");
    assert_eq!(status["rate_limit_store"]["state"], "down", "{status}");
    for _ in 0..20 {
        let (s, took) = timed(&gw);
        assert_eq!(s, 200);
        assert!(took < Duration::from_millis(100), "open breaker: {took:?}");
    }
    // Back: the probe closes it within a second.
    redis.signal("-CONT");
    let back = Instant::now();
    assert!(wait_until(Duration::from_secs(3), || {
        gw.metric("gatehouse_rate_limit_store_state", "") == Some(0.0)
    }));
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "{:?}",
        back.elapsed()
    );

    // Refused connections are errors at once, not waits.
    redis.kill();
    for _ in 0..5 {
        let (s, took) = timed(&gw);
        assert_eq!(s, 200);
        assert!(took < Duration::from_millis(150), "refused: {took:?}");
    }
    assert!(
        gw.metric("gatehouse_rate_limit_store_errors_total", "")
            .unwrap_or(0.0)
            >= 5.0
    );
}

#[test]
fn hybrid_decides_locally_and_never_over_the_limit() {
    if !RedisServer::available() {
        return;
    }
    let redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let store = format!(
        "{{ url: \"{}\", timeout: 500ms, on_error: deny }}",
        redis.url()
    );
    let g1 = Gateway::start(&limited_by_key("hybrid", &store, &up[0], 50));
    let g2 = Gateway::start(&limited_by_key("hybrid", &store, &up[0], 50));
    // One hot key, two instances taking turns: together exactly the limit, at most.
    let mut allowed = 0;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let s = get_key(gw, "/one", "hot");
        assert!(s == 200 || s == 429, "{s}");
        allowed += usize::from(s == 200);
    }
    assert!(
        (48..=50).contains(&allowed),
        "two instances admitted {allowed} of a limit of 50"
    );

    // A key with room: most requests need no round trip.
    let g3 = Gateway::start(&limited_by_key("hybrid", &store, &up[0], 100_000));
    let before = evalsha_calls(&redis);
    for _ in 0..300 {
        assert_eq!(get_key(&g3, "/one", "busy"), 200);
    }
    let made = evalsha_calls(&redis) - before;
    assert!(made < 40, "{made} Redis calls for 300 requests");
}

#[test]
fn concurrent_decisions_share_script_calls_and_stay_exact() {
    if !RedisServer::available() {
        return;
    }
    let redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let store = format!(
        "{{ url: \"{}\", timeout: 1s, on_error: deny }}",
        redis.url()
    );
    let gw = Gateway::start(&limited_by_key("redis", &store, &up[0], 100));
    assert!(wait_until(Duration::from_secs(5), || get_key(
        &gw, "/one", "warm"
    ) == 200));
    let calls_before = evalsha_calls(&redis);
    // 16 clients × 25 requests on one key (limit 100 a minute) and on the route
    // bucket: batched decisions must still admit exactly 100.
    let allowed: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..25)
                        .filter(|_| get_key(&gw, "/two", "hot") == 200)
                        .count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .sum()
    });
    assert_eq!(allowed, 100, "admitted {allowed} of a limit of 100");
    let calls = evalsha_calls(&redis) - calls_before;
    eprintln!("{calls} script calls for 400 decisions");
    assert!(
        calls < 400,
        "{calls} script calls for 400 decisions: none shared"
    );
}

fn evalsha_calls(r: &RedisServer) -> u64 {
    cli(&["-p", &r.port.to_string(), "INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
