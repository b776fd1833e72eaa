//! Circuit breakers, passive health and safe retries.

use crate::common::*;
use std::time::Duration;

fn start(up: &[EchoServer], breaker: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "services:\n  s:\n    circuit_breaker: {breaker}\n{extra}    upstreams:\n{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(up, &[])
    ))
}

fn circuit(gw: &Gateway, up: &EchoServer) -> Option<f64> {
    gw.metric(
        "gatehouse_circuit_state",
        &format!("upstream=\"{}\"", up.addr()),
    )
}

#[test]
fn breaker_opens_moves_traffic_without_client_errors_then_probes_back() {
    let up = upstreams(2);
    let gw = start(
        &up,
        "{ failures: 3, open_for: 1s, half_open_requests: 1, successes_to_close: 2 }",
        "    retries: { attempts: 1 }\n",
    );
    assert_eq!(circuit(&gw, &up[1]), Some(0.0));
    up[1].set_failing(Some(500));
    for i in 0..20 {
        let r = gw.get("/x");
        assert_eq!(
            r.status, 200,
            "GET {i}: a 5xx is retried on the healthy upstream"
        );
        assert_eq!(r.upstream(), "a");
    }
    assert_eq!(circuit(&gw, &up[1]), Some(1.0), "open after 3 failures");
    let seen_by_b = up[1].requests();
    assert!(
        (3..=4).contains(&seen_by_b),
        "b saw {seen_by_b}: only until the breaker opened"
    );
    let st = gw.status();
    assert_eq!(
        st["services"][0]["upstreams"][1]["circuit_breaker"]["state"],
        "open"
    );

    // b recovers; after open_for the probes close the breaker (no active health check).
    up[1].set_failing(None);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let _ = gw.get("/x");
            circuit(&gw, &up[1]) == Some(0.0)
        }),
        "half-open probes close the breaker"
    );
    let back = (0..10).filter(|_| gw.get("/x").upstream() == "b").count();
    assert!(back >= 4, "b is back in rotation ({back}/10)");
}

#[test]
fn every_upstream_open_is_503_with_retry_after_until_half_open() {
    let up = upstreams(2);
    let gw = start(
        &up,
        "{ failures: 2, open_for: 5s }",
        "    retries: { attempts: 1 }\n",
    );
    up[0].set_failing(Some(502));
    up[1].set_failing(Some(503));
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(gw.get("/").status);
    }
    let r = gw.get("/");
    assert_eq!(r.status, 503, "after {statuses:?}");
    assert_eq!(r.json()["error"], "no_healthy_upstream");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "retry-after {retry}");
    assert_eq!(circuit(&gw, &up[0]), Some(1.0));
    assert_eq!(circuit(&gw, &up[1]), Some(1.0));
}

#[test]
fn a_post_is_not_retried_after_the_upstream_saw_it() {
    let up = upstreams(2);
    let gw = start(&up, "{ failures: 100 }", "    retries: { attempts: 2 }\n");
    up[0].set_failing(Some(500));
    let mut statuses = vec![];
    for _ in 0..2 {
        statuses.push(
            request(gw.addr, "POST", "/orders", &[], b"{\"n\":1}")
                .unwrap()
                .status,
        );
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 500],
        "the POST that reached a is answered with a's 500"
    );
    assert_eq!(up[0].requests(), 1, "a saw the POST once");
    assert_eq!(up[1].requests(), 1, "and it was not replayed on b");
    // the same failure on a GET is retried
    for _ in 0..4 {
        assert_eq!(gw.get("/items").status, 200);
    }
}

#[test]
fn hanging_upstream_times_out_and_gets_are_retried() {
    let up = upstreams(2);
    let gw = start(
        &up,
        "{ failures: 2, open_for: 30s }",
        "    retries: { attempts: 1 }\n    timeouts: { read: 300ms }\n",
    );
    up[0].set_hanging(true);
    for i in 0..6 {
        let r = gw.get("/slow");
        assert_eq!(r.status, 200, "GET {i}");
        assert_eq!(r.upstream(), "b");
    }
    assert_eq!(
        circuit(&gw, &up[0]),
        Some(1.0),
        "timeouts count as failures"
    );
    let timeouts = gw.metric(
        "gatehouse_upstream_requests_total",
        &format!(
            "outcome=\"timeout\",service=\"s\",upstream=\"{}\"",
            up[0].addr()
        ),
    );
    assert!(
        timeouts.is_some_and(|v| v >= 2.0),
        "a's timeouts: {timeouts:?}"
    );
    up[0].set_hanging(false);
}

#[test]
fn refused_upstream_opens_its_breaker_and_connects_are_retried() {
    let mut up = upstreams(2);
    let gw = start(
        &up,
        "{ failures: 2, open_for: 30s }",
        "    retries: { attempts: 1 }\n",
    );
    up[0].stop();
    for _ in 0..6 {
        assert_eq!(
            request(gw.addr, "POST", "/p", &[], b"x").unwrap().status,
            200,
            "connect errors are retried for any method"
        );
    }
    assert_eq!(circuit(&gw, &up[0]), Some(1.0));
}

#[test]
fn breakers_never_take_out_more_than_max_ejection_percent() {
    let up = upstreams(4);
    for u in &up {
        u.set_failing(Some(503));
    }
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    upstreams:\n{}    circuit_breaker: {{ failures: 2, open_for: 30s, max_ejection_percent: 50 }}\n    retries: {{ attempts: 0 }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(&up, &[])
    ));
    for i in 0..60 {
        let r = gw.get(&format!("/fail/{i}"));
        assert_eq!(
            r.status, 503,
            "the upstreams' own 503, never an empty service"
        );
    }
    let st = gw.status();
    let states: Vec<String> = st["services"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| {
            u["circuit_breaker"]["state"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let open = states.iter().filter(|s| *s == "open").count();
    assert_eq!(open, 2, "half of four upstreams at most: {states:?}");
    // The two in rotation kept getting requests after the others opened.
    let served: Vec<u64> = up.iter().map(EchoServer::requests).collect();
    assert!(
        served.iter().filter(|n| **n >= 10).count() >= 2,
        "{served:?}"
    );
    assert!(gw.log().contains("max_ejection_percent keeps it closed"));
}
