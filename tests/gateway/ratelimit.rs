use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::{Duration, Instant};

const SECRET: &str = "ratelimit-test-secret-0123456789abcdef";

fn token(sub: &str, tier: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": sub, "tier": tier, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {t}")
}

#[test]
fn per_ip_limit_answers_429_with_headers_and_counts() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        r#"
rate_limits:
  policies:
    per-ip: {{ key: client_ip, limit: 5, window: 10s }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: limited, match: {{ path_prefix: /l }}, service: s, rate_limit: [per-ip] }}
  - {{ name: free, match: {{ path_prefix: / }}, service: s }}
"#,
        up[0].addr()
    ));
    for i in 0..5 {
        let r = gw.get("/l");
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
        assert!(r
            .header("ratelimit-policy")
            .is_some_and(|p| p.starts_with("5;w=10")));
    }
    let r = gw.get("/l");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry),
        "one token every 2s: retry-after {retry}"
    );
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // refused requests consume nothing: still exactly one refusal's worth of wait
    let r2 = gw.get("/l");
    assert_eq!(r2.status, 429);
    assert_eq!(r2.header("retry-after"), r.header("retry-after"));
    assert_eq!(
        up[0].requests(),
        5,
        "refused requests never reach the upstream"
    );
    // other routes are unaffected
    assert_eq!(gw.get("/other").status, 200);
    assert!(gw.get("/other").header("ratelimit-limit").is_none());
    assert_eq!(
        gw.metric(
            "gatehouse_rate_limited_total",
            "policy=\"per-ip\",route=\"limited\""
        ),
        Some(2.0)
    );
}

#[test]
fn tiers_and_user_keys_with_ip_fallback() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        r#"
jwt:
  main: {{ algorithms: [HS256], secret: "{SECRET}" }}
rate_limits:
  policies:
    per-user: {{ key: jwt.sub, limit: 2, window: 1m, tiers: {{ claim: tier, limits: {{ premium: 6 }} }} }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: api, match: {{ path_prefix: /api }}, service: s, auth: main, rate_limit: [per-user] }}
  - {{ name: open, match: {{ path_prefix: /open }}, service: s, rate_limit: [per-user] }}
"#,
        up[0].addr()
    ));
    let count_ok = |path: &str, auth: Option<&str>, n: usize| {
        (0..n)
            .filter(|_| {
                let h: Vec<(&str, &str)> =
                    auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
                request(gw.addr, "GET", path, &h, b"").unwrap().status == 200
            })
            .count()
    };
    let alice = token("alice", "free");
    let bob = token("bob", "premium");
    assert_eq!(count_ok("/api", Some(&alice), 5), 2, "free tier: 2");
    assert_eq!(count_ok("/api", Some(&bob), 10), 6, "premium tier: 6");
    // another user has their own bucket
    assert_eq!(count_ok("/api", Some(&token("carol", "free")), 3), 2);
    // no token on a jwt.sub policy: per client IP, not one shared bucket with users
    assert_eq!(count_ok("/open", None, 4), 2);
}

fn shared_config(redis: &RedisServer, up: &EchoServer, on_error: &str) -> String {
    format!(
        r#"
rate_limits:
  store: redis
  redis: {{ url: "{}", timeout: 100ms, on_error: {on_error}, prefix: "gh-test:" }}
  policies:
    everyone: {{ key: global, limit: 20, window: 30s }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, service: s, rate_limit: [everyone] }}
"#,
        redis.url(),
        up.addr()
    )
}

#[test]
fn two_gateways_share_one_redis_limit() {
    if !RedisServer::available() {
        return;
    }
    let redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let g1 = Gateway::start(&shared_config(&redis, &up[0], "deny"));
    let g2 = Gateway::start(&shared_config(&redis, &up[0], "deny"));
    let mut allowed = 0;
    for i in 0..40 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        match gw.get("/").status {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    // 95%..100% of the combined limit
    assert!(
        (19..=20).contains(&allowed),
        "allowed {allowed} of a shared 20"
    );
}

#[test]
fn redis_outage_honours_on_error_within_the_timeout_and_recovers() {
    if !RedisServer::available() {
        return;
    }
    let mut redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let gw = Gateway::start(&shared_config(&redis, &up[0], "allow"));
    assert_eq!(gw.get("/").status, 200);
    redis.kill();
    for _ in 0..10 {
        let t = Instant::now();
        let r = gw.get("/");
        assert_eq!(r.status, 200, "on_error: allow");
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "took {:?}",
            t.elapsed()
        );
    }
    assert!(gw
        .metric("gatehouse_rate_limit_store_errors_total", "")
        .is_some_and(|v| v >= 1.0));
    redis.restart();
    // Shared limiting resumes: the 20-per-30s budget runs out again.
    assert!(
        wait_until(Duration::from_secs(15), || gw.get("/").status == 429),
        "limiting resumed after Redis came back"
    );
}

#[test]
fn redis_down_with_deny_is_503() {
    if !RedisServer::available() {
        return;
    }
    let mut redis = RedisServer::start(RedisServer::free_port());
    let up = upstreams(1);
    let gw = Gateway::start(&shared_config(&redis, &up[0], "deny"));
    redis.kill();
    let t = Instant::now();
    let r = gw.get("/");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "rate_limit_unavailable");
    assert!(t.elapsed() < Duration::from_millis(600));
}

#[test]
fn limits_shared_through_redis_over_tls() {
    if !RedisServer::available() {
        return;
    }
    let dir = scratch_dir("rediss");
    let pki = crate::pki::Pki::new(&dir, "redis");
    let other = crate::pki::Pki::new(&dir, "other");
    let cert = pki.server("redis", &["127.0.0.1"], 5);
    let redis = RedisServer::start_tls(RedisServer::free_port(), cert.cert(), cert.key());
    let up = upstreams(1);
    let config = |ca: &str| {
        format!(
            "rate_limits:\n  store: redis\n  redis: {{ url: \"rediss://127.0.0.1:{}/0\", ca_file: \"{ca}\", timeout: 1s, on_error: deny }}\n  \
             policies:\n    p: {{ key: global, limit: 2, window: 1m }}\n\
             services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s, rate_limit: [p] }}\n",
            redis.port,
            up[0].addr()
        )
    };
    let gw = Gateway::start(&config(pki.ca()));
    let statuses: Vec<u16> = (0..3).map(|_| gw.get("/x").status).collect();
    assert_eq!(statuses, [200, 200, 429], "{}", gw.log());
    assert_eq!(
        gw.metric("gatehouse_rate_limit_store_errors_total", ""),
        Some(0.0)
    );
    // A CA that did not sign Redis's certificate: the store fails, on_error: deny.
    let gw = Gateway::start(&config(other.ca()));
    assert_eq!(gw.get("/x").status, 503);
}
