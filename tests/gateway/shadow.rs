//! Traffic management across upstreams and services: gateway-issued sticky sessions and
//! request mirroring.

use crate::common::*;
use std::time::{Duration, Instant};

fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> &'a str {
    set_cookie
        .strip_prefix(&format!("{name}="))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a {name} cookie: {set_cookie}"))
}

fn with_cookie(gw: &Gateway, cookie: &str) -> Response {
    request(gw.addr, "GET", "/", &[("cookie", cookie)], b"").expect("request")
}

#[test]
fn sticky_cookie_pins_a_client_to_its_upstream_and_is_reissued_when_it_dies() {
    let mut up = upstreams(3);
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    sticky: {{ cookie: gh_affinity, ttl: 1h, secure: true }}\n    upstreams:\n{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(&up, &[])
    ));
    let r = gw.get("/");
    assert_eq!(r.status, 200);
    let set = r
        .header("set-cookie")
        .expect("the first answer sets the cookie");
    assert!(
        set.ends_with("; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    let id = cookie_value(set, "gh_affinity").to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "opaque id: {id}"
    );
    assert!(
        !set.contains("127.0.0.1"),
        "the address is not in the cookie"
    );
    let first = r.upstream();

    // The cookie keeps the client on its upstream (round robin would rotate), and a
    // client that already has the right cookie is not sent it again.
    for i in 0..20 {
        let r = with_cookie(&gw, &format!("other=1; gh_affinity={id}"));
        assert_eq!(r.upstream(), first, "request {i}");
        assert!(r.header("set-cookie").is_none());
    }
    // Without it, the balancer spreads clients, and each gets the cookie of its upstream.
    let mut ids = std::collections::BTreeMap::new();
    for _ in 0..6 {
        let r = gw.get("/");
        let set = r.header("set-cookie").expect("cookie for a new client");
        ids.insert(r.upstream(), cookie_value(set, "gh_affinity").to_string());
    }
    assert_eq!(ids.len(), 3, "round robin without the cookie: {ids:?}");
    assert_eq!(ids[&first], id, "the same upstream, the same id");
    // /admin/status names each upstream's id.
    let status = gw.status();
    let listed: Vec<String> = status["services"][0]["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .map(|u| u["sticky_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(listed.contains(&id), "{listed:?}");
    assert_eq!(status["services"][0]["sticky_cookie"], "gh_affinity");

    // An unknown value is ignored: the balancer chooses, and the answer sets a real id.
    let r = with_cookie(&gw, "gh_affinity=0123456789abcdef");
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_some());

    // Its upstream dies: the request is retried on another one, which answers and
    // re-issues the cookie; the client then sticks to that one.
    let dead = up.iter().position(|u| u.name() == first).expect("upstream");
    up[dead].stop();
    let r = with_cookie(&gw, &format!("gh_affinity={id}"));
    assert_eq!(r.status, 200);
    assert_ne!(r.upstream(), first);
    let second = r.upstream();
    let new_id =
        cookie_value(r.header("set-cookie").expect("re-issued"), "gh_affinity").to_string();
    assert_ne!(new_id, id);
    assert_eq!(ids[&second], new_id);
    for _ in 0..10 {
        let r = with_cookie(&gw, &format!("gh_affinity={new_id}"));
        assert_eq!((r.status, r.upstream()), (200, second.clone()));
        assert!(r.header("set-cookie").is_none());
    }
}

#[test]
fn sticky_config_errors_name_their_path() {
    assert_config_errors(
        "services:\n  s:\n    sticky: { cookie: \"bad name\", ttl: 0s }\n    upstreams: [ { address: \"127.0.0.1:1\" } ]\nroutes:\n  - { name: r, match: { path_prefix: / }, service: s, mirror: { service: nope, percent: 0 } }\n",
        &[
            "services.s.sticky.cookie",
            "services.s.sticky.ttl",
            "routes[0].mirror.service",
            "routes[0].mirror.percent",
        ],
    );
}

fn mirror_gateway(main: &EchoServer, shadow: &EchoServer) -> (Gateway, u16) {
    // `s` also lists a port nothing listens on: first attempts sent there are refused and
    // retried on the echo server, and those requests must be mirrored all the same.
    let dead = free_port();
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [ {{ address: \"{}\" }}, {{ address: \"127.0.0.1:{dead}\" }} ] }}\n  shadow: {{ upstreams: [ {{ address: \"{}\" }} ], timeouts: {{ read: 2s }} }}\nroutes:\n  - {{ name: half, match: {{ path_prefix: /half }}, service: s, mirror: {{ service: shadow, percent: 50 }} }}\n  - {{ name: all, match: {{ path_prefix: /all }}, service: s, mirror: {{ service: shadow, max_body: 1KiB, max_in_flight: 4 }} }}\n  - {{ name: plain, match: {{ path_prefix: / }}, service: s }}\n",
        main.addr(),
        shadow.addr()
    ));
    (gw, dead)
}

fn mirrored(shadow: &EchoServer, prefix: &str) -> Vec<String> {
    shadow
        .seen()
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn mirror_copies_a_share_of_requests_and_never_touches_the_answers() {
    let main = EchoServer::start("main", "127.0.0.1:0").expect("echo");
    let shadow = EchoServer::start("shadow", "127.0.0.1:0").expect("echo");
    let (gw, dead) = mirror_gateway(&main, &shadow);

    // 50%: of 200 requests, 100 copies (the sequence is even over any stretch).
    for i in 0..200 {
        let r = gw.get(&format!("/half/x?i={i}"));
        assert_eq!((r.status, r.upstream()), (200, "main".to_string()));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            mirrored(&shadow, "GET /half/").len() >= 100
        }),
        "copies: {}",
        mirrored(&shadow, "GET /half/").len()
    );
    std::thread::sleep(Duration::from_millis(200));
    let copies = mirrored(&shadow, "GET /half/");
    assert!((99..=101).contains(&copies.len()), "{}", copies.len());
    assert!(
        copies.iter().all(|l| l.ends_with(" 0 mirror")),
        "{copies:?}"
    );
    assert!(
        main.seen().iter().all(|l| !l.ends_with("mirror")),
        "the primary request carries no mirror mark"
    );
    assert!(wait_until(Duration::from_secs(3), || gw.metric(
        "gatehouse_mirror_requests_total",
        "outcome=\"ok\",route=\"half\",service=\"shadow\""
    ) == Some(
        copies.len() as f64
    )));
    // Most of those first tried the dead upstream (refused, retried): mirrored all the same.
    assert!(
        gw.metric(
            "gatehouse_upstream_requests_total",
            &format!("outcome=\"refused\",service=\"s\",upstream=\"127.0.0.1:{dead}\"")
        )
        .unwrap_or(0.0)
            >= 90.0,
        "{}",
        gw.metrics()
    );
    // Routes without a mirror send nothing.
    gw.get("/other");
    std::thread::sleep(Duration::from_millis(200));
    assert!(mirrored(&shadow, "GET /other").is_empty());

    // 100% with bodies: the copy carries the same body (length framing or chunked).
    let body = vec![b'x'; 1000];
    let r = request(gw.addr, "POST", "/all/upload", &[], &body).expect("post");
    assert_eq!(r.status, 200);
    let chunked = b"POST /all/chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = exchange(gw.addr, chunked, false).expect("chunked post");
    assert_eq!(r.status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        let seen = shadow.seen();
        seen.contains(&"POST /all/upload 1000 mirror".to_string())
            && seen.contains(&"POST /all/chunked 11 mirror".to_string())
    }));
    // Over max_body: the request is served, the copy skipped and counted.
    let r = request(gw.addr, "POST", "/all/big", &[], &vec![b'y'; 2000]).expect("post");
    assert_eq!(r.status, 200);
    assert!(wait_until(Duration::from_secs(3), || {
        gw.metric(
            "gatehouse_mirror_requests_total",
            "outcome=\"skipped\",route=\"all\",service=\"shadow\"",
        ) == Some(1.0)
    }));
    assert!(mirrored(&shadow, "POST /all/big").is_empty());

    // A shadow that hangs costs the primary nothing; copies beyond max_in_flight are
    // dropped (counted), the ones under way time out (read: 2s).
    shadow.set_hanging(true);
    let start = Instant::now();
    for i in 0..20 {
        let t = Instant::now();
        let r = gw.get(&format!("/all/h{i}"));
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "request {i} waited"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(2), || {
        gw.metric(
            "gatehouse_mirror_requests_total",
            "outcome=\"dropped\",route=\"all\",service=\"shadow\"",
        ) == Some(16.0)
    }));
    assert!(
        wait_until(Duration::from_secs(8), || {
            gw.metric(
                "gatehouse_mirror_requests_total",
                "outcome=\"timeout\",route=\"all\",service=\"shadow\"",
            )
            .unwrap_or(0.0)
                + gw.metric(
                    "gatehouse_mirror_requests_total",
                    "outcome=\"error\",route=\"all\",service=\"shadow\"",
                )
                .unwrap_or(0.0)
                >= 4.0
        }),
        "{}",
        gw.metrics()
    );
    shadow.set_hanging(false);
}

#[test]
fn mirror_to_an_http2_service() {
    let main = EchoServer::start("main", "127.0.0.1:0").expect("echo");
    let shadow = EchoServer::start("shadow", "127.0.0.1:0").expect("echo");
    // An h2c-only shadow: a second gateway (h2c listener) in front of the echo server.
    let inner = Gateway::start_with(&one_route(&shadow), "  h2c: true\n");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [ {{ address: \"{}\" }} ] }}\n  shadow: {{ http2: true, upstreams: [ {{ address: \"{}\" }} ] }}\nroutes:\n  - {{ name: rev, match: {{ path_prefix: /rev }}, service: shadow, mirror: {{ service: s }} }}\n  - {{ name: r, match: {{ path_prefix: / }}, service: s, mirror: {{ service: shadow }} }}\n",
        main.addr(),
        inner.addr
    ));
    let r = request(gw.addr, "POST", "/h2/copy?x=1", &[], b"hello").expect("post");
    assert_eq!((r.status, r.upstream()), (200, "main".to_string()));
    assert!(
        wait_until(Duration::from_secs(5), || shadow
            .seen()
            .contains(&"POST /h2/copy?x=1 5 mirror".to_string())),
        "{:?}\n{}",
        shadow.seen(),
        gw.log()
    );
    // Counted once its answer is read (just after the shadow logged the request).
    assert!(wait_until(Duration::from_secs(3), || gw.metric(
        "gatehouse_mirror_requests_total",
        "outcome=\"ok\",route=\"r\",service=\"shadow\""
    ) == Some(1.0)));
    // And the other way: an HTTP/2 primary, its copy over HTTP/1.1.
    let r = request(gw.addr, "POST", "/rev/x", &[], b"hello").expect("post");
    assert_eq!((r.status, r.upstream()), (200, "shadow".to_string()));
    assert!(
        wait_until(Duration::from_secs(5), || main
            .seen()
            .contains(&"POST /rev/x 5 mirror".to_string())),
        "{:?}\n{}",
        main.seen(),
        gw.log()
    );
}
