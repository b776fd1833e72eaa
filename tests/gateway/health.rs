use crate::common::*;
use std::time::Duration;

const FAST_HC: &str = "    health_check: { type: http, path: /health, interval: 100ms, timeout: 200ms, healthy_after: 1, unhealthy_after: 2 }\n";

fn start(up: &[EchoServer], extra: &str) -> Gateway {
    Gateway::start(&format!(
        "services:\n  s:\n{extra}    upstreams:\n{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(up, &[])
    ))
}

#[test]
fn killed_upstream_leaves_rotation_and_returns_while_gets_keep_succeeding() {
    let mut up = upstreams(2);
    let b_addr = up[1].addr();
    let gw = start(&up, &format!("{FAST_HC}    retries: {{ attempts: 1 }}\n"));
    let b = b_addr.to_string();
    assert_eq!(gw.upstream_healthy("s", &b), Some(true));

    up[1].stop();
    // Every GET succeeds: refused connections are retried on the other upstream.
    for i in 0..40 {
        let r = gw.get("/");
        assert_eq!(r.status, 200, "request {i} after kill: {}", r.text());
        assert_eq!(r.upstream(), "a");
    }
    assert!(
        wait_until(Duration::from_secs(5), || gw.upstream_healthy("s", &b)
            == Some(false)),
        "health check marks the killed upstream down"
    );
    assert_eq!(
        gw.metric("gatehouse_upstream_healthy", &format!("upstream=\"{b}\"")),
        Some(0.0)
    );
    let refused = gw
        .metric(
            "gatehouse_upstream_requests_total",
            &format!("outcome=\"refused\",service=\"s\",upstream=\"{b}\""),
        )
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "refused attempts are counted");

    // Restart on the same port: the health check brings it back.
    let b_again = EchoServer::start("b", &b).expect("restart b on its port");
    assert!(
        wait_until(Duration::from_secs(5), || gw.upstream_healthy("s", &b)
            == Some(true)),
        "health check brings the upstream back"
    );
    let served_b = (0..10).filter(|_| gw.get("/").upstream() == "b").count();
    assert!(served_b >= 4, "b is back in rotation ({served_b}/10)");
    drop(b_again);
}

#[test]
fn unhealthy_by_status_is_taken_out() {
    let up = upstreams(2);
    let gw = start(&up, FAST_HC);
    up[0].set_healthy(false);
    let a = up[0].addr().to_string();
    assert!(wait_until(Duration::from_secs(5), || gw
        .upstream_healthy("s", &a)
        == Some(false)));
    assert!((0..20).all(|_| gw.get("/").upstream() == "b"));
    // readyz is still fine: one healthy upstream is enough
    assert_eq!(gw.admin_get("/readyz").status, 200);
}

#[test]
fn all_upstreams_down_is_503_with_retry_after() {
    let mut up = upstreams(2);
    let gw = start(&up, FAST_HC);
    up[0].stop();
    up[1].stop();
    assert!(wait_until(Duration::from_secs(5), || gw
        .admin_get("/readyz")
        .status
        == 503));
    let r = gw.get("/x");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"], "no_healthy_upstream");
    let ready = gw.admin_get("/readyz").json();
    assert_eq!(ready["services_without_healthy_upstream"][0], "s");
}

#[test]
fn refused_without_health_check_is_502_after_retries() {
    // No health check: every attempt is refused, retries exhausted -> 502.
    let dead = free_port();
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    retries: {{ attempts: 2 }}\n    upstreams: [{{ address: \"127.0.0.1:{dead}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n"
    ));
    let r = gw.get("/?access_token=SECRET-IN-QUERY");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_failed");
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains("Fail to proxy")));
    assert!(
        !gw.log().contains("SECRET-IN-QUERY"),
        "error logs never carry the query"
    );
    let refused = gw.metric(
        "gatehouse_upstream_requests_total",
        &format!("outcome=\"refused\",service=\"s\",upstream=\"127.0.0.1:{dead}\""),
    );
    assert_eq!(refused, Some(3.0), "first try + 2 retries");
}

#[test]
fn slow_upstream_is_504() {
    let up = upstreams(1);
    let gw = start(
        &up,
        "    timeouts: { read: 200ms }\n    retries: { attempts: 0 }\n",
    );
    let r = gw.get("/sleep/2000");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(gw
        .metric("gatehouse_upstream_requests_total", "outcome=\"timeout\"")
        .is_some_and(|v| v >= 1.0));
}

/// Gaps between consecutive probe times, in ms.
fn gaps(times: &[std::time::Instant]) -> Vec<u128> {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_millis())
        .collect()
}

fn health_state(gw: &Gateway, upstream: &str) -> String {
    gw.status()["services"][0]["upstreams"]
        .as_array()
        .and_then(|list| list.iter().find(|u| u["address"] == upstream))
        .and_then(|u| u["health_state"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn adaptive_checks_probe_as_often_as_each_state_calls_for() {
    let up = upstreams(2);
    let b = up[1].addr().to_string();
    let gw = start(
        &up,
        "    health_check: { type: http, path: /health, timeout: 200ms, healthy_after: 1, unhealthy_after: 2, adaptive: { healthy: 800ms, suspect: 300ms, unhealthy: 100ms, recover_after: 3 } }\n",
    );
    // Healthy: every 800 ms.
    std::thread::sleep(Duration::from_millis(2900));
    let healthy = gaps(&up[1].health_checks());
    assert!(healthy.len() >= 2, "{healthy:?}");
    assert!(
        healthy.iter().all(|g| (700..=1100).contains(g)),
        "healthy gaps {healthy:?}"
    );
    assert_eq!(health_state(&gw, &b), "healthy");
    assert_eq!(
        gw.metric(
            "gatehouse_upstream_health_state",
            &format!("upstream=\"{b}\"")
        ),
        Some(0.0)
    );

    // A failed check makes it suspect (checked every 300 ms, still in rotation); the
    // second failure in a row takes it out (every 100 ms).
    let t0 = std::time::Instant::now();
    up[1].set_healthy(false);
    assert!(wait_until(Duration::from_secs(3), || health_state(&gw, &b)
        == "unhealthy"));
    std::thread::sleep(Duration::from_millis(700));
    let after: Vec<_> = up[1]
        .health_checks()
        .into_iter()
        .filter(|t| *t > t0)
        .collect();
    let failing = gaps(&after);
    assert!(failing.len() >= 5, "{failing:?}");
    assert!((230..=450).contains(&failing[0]), "suspect gap {failing:?}");
    assert!(
        failing[1..].iter().all(|g| (60..=250).contains(g)),
        "unhealthy gaps {failing:?}"
    );
    assert_eq!(gw.upstream_healthy("s", &b), Some(false));
    assert_eq!(
        gw.metric(
            "gatehouse_upstream_health_state",
            &format!("upstream=\"{b}\"")
        ),
        Some(2.0)
    );
    assert!((0..10).all(|_| gw.get("/").upstream() == "a"));

    // Passing again: back in rotation at once (healthy_after: 1) but suspect, checked
    // every 300 ms, and healthy (every 800 ms) after recover_after: 3 passes.
    let t1 = std::time::Instant::now();
    up[1].set_healthy(true);
    assert!(
        wait_until(Duration::from_secs(2), || health_state(&gw, &b)
            == "suspect"),
        "suspect while recovering"
    );
    assert_eq!(gw.upstream_healthy("s", &b), Some(true));
    assert!(wait_until(Duration::from_secs(3), || health_state(&gw, &b)
        == "healthy"));
    std::thread::sleep(Duration::from_millis(1000));
    let after: Vec<_> = up[1]
        .health_checks()
        .into_iter()
        .filter(|t| *t > t1)
        .collect();
    let recovering = gaps(&after);
    assert!(recovering.len() >= 3, "{recovering:?}");
    assert!(
        recovering[..2].iter().all(|g| (230..=450).contains(g)),
        "suspect gaps {recovering:?}"
    );
    assert!(
        (700..=1100).contains(&recovering[2]),
        "healthy gap {recovering:?}"
    );
}

#[test]
fn adaptive_config_errors_name_their_path() {
    assert_config_errors(
        "services:\n  s:\n    health_check: { type: http, interval: 1s, adaptive: { healthy: 10ms, recover_after: 0 } }\n    upstreams: [ { address: \"127.0.0.1:1\" } ]\nroutes:\n  - { name: r, match: { path_prefix: / }, service: s }\n",
        &[
            "services.s.health_check.interval",
            "services.s.health_check.adaptive.healthy",
            "services.s.health_check.adaptive.recover_after",
        ],
    );
}
