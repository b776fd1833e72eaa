use crate::common::*;
use std::collections::HashMap;
use std::time::Duration;

fn start(up: &[EchoServer], weights: &[u32], balance: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "services:\n  s:\n    balance: {balance}\n{extra}    upstreams:\n{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(up, weights)
    ))
}

fn tally(gw: &Gateway, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut t = HashMap::new();
    for _ in 0..n {
        let r = request(gw.addr, "GET", "/", headers, b"").expect("request");
        assert_eq!(r.status, 200);
        *t.entry(r.upstream()).or_default() += 1;
    }
    t
}

#[test]
fn round_robin_alternates() {
    let up = upstreams(2);
    let gw = start(&up, &[3, 1], "round_robin", "");
    let seq: Vec<String> = (0..6).map(|_| gw.get("/").upstream()).collect();
    for pair in seq.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin alternates: {seq:?}");
    }
    let t = tally(&gw, 100, &[]);
    assert_eq!(
        (t["a"], t["b"]),
        (50, 50),
        "weights are ignored by round_robin"
    );
}

#[test]
fn weighted_is_smooth_and_within_two_percent() {
    let up = upstreams(2);
    let gw = start(&up, &[3, 1], "weighted", "");
    let seq: Vec<String> = (0..8).map(|_| gw.get("/").upstream()).collect();
    // smooth: never three of the heavy one in a row followed by the light one in a burst
    let window_has_b = seq.windows(4).all(|w| w.iter().any(|u| u == "b"));
    assert!(window_has_b, "every 4 consecutive picks include b: {seq:?}");
    let t = tally(&gw, 1000, &[]);
    let share_a = t["a"] as f64 / 1000.0;
    assert!((share_a - 0.75).abs() <= 0.02, "a got {share_a}");
}

#[test]
fn random_roughly_follows_weights() {
    let up = upstreams(2);
    let gw = start(&up, &[3, 1], "random", "");
    let t = tally(&gw, 400, &[]);
    let share_a = t.get("a").copied().unwrap_or(0) as f64 / 400.0;
    // binomial sd ≈ 0.022: ±0.12 is > 5 sd
    assert!((0.63..=0.87).contains(&share_a), "a got {share_a}");
}

#[test]
fn consistent_hash_keeps_a_key_on_one_upstream() {
    let up = upstreams(3);
    let gw = start(
        &up,
        &[1, 1, 1],
        "consistent_hash",
        "    hash_key: header:X-User\n",
    );
    let mut seen = HashMap::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let t = tally(&gw, 5, &[("x-user", &user)]);
        assert_eq!(t.len(), 1, "{user} stuck to one upstream: {t:?}");
        let upstream = t.keys().next().cloned().unwrap_or_default();
        *seen.entry(upstream).or_insert(0) += 1;
    }
    assert!(seen.len() >= 2, "30 keys spread over upstreams: {seen:?}");
}

#[test]
fn least_connections_avoids_the_busy_upstream() {
    let up = upstreams(2);
    let gw = start(&up, &[1, 1], "least_connections", "");
    // Occupy one upstream with slow requests, then see where new ones go.
    let addr = gw.addr;
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/sleep/1500", &[], b"")))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || {
        let st = gw.status();
        st["services"][0]["inflight"].as_u64() == Some(3)
    }));
    let st = gw.status();
    let busy = st["services"][0]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|u| u["inflight"].as_u64())
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let busy_name = if busy == up[0].addr().to_string() {
        "a"
    } else {
        "b"
    };
    let t = tally(&gw, 10, &[]);
    for h in slow {
        assert_eq!(h.join().unwrap().unwrap().status, 200);
    }
    assert_eq!(
        t.get(busy_name),
        None,
        "busy upstream {busy_name} got none of {t:?}"
    );
}
