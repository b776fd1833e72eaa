//! Traffic policies: response cache, header rules, CORS, IP rules, compression.

use crate::common::*;
use std::io::Read;

fn one_route(up: &EchoServer, route_extra: &str, server_extra: &str) -> Gateway {
    Gateway::start_with(
        &format!(
            "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    service: s\n{route_extra}",
            up.addr()
        ),
        server_extra,
    )
}

#[test]
fn conditional_requests_get_304_from_a_fresh_entry() {
    let up = upstreams(1);
    let gw = one_route(
        &up[0],
        "    cache: { ttl: 30s, max_entries: 100, max_body: 64KiB }\n",
        "",
    );
    let r = gw.get("/doc/etag/1");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let cond = |headers: &[(&str, &str)]| {
        request(gw.addr, "GET", "/doc/etag/1", headers, b"").expect("req")
    };
    for inm in ["\"v1\"", "W/\"v1\"", "\"v0\", \"v1\"", "*"] {
        let r = cond(&[("if-none-match", inm)]);
        assert_eq!((r.status, r.header("x-cache")), (304, Some("HIT")), "{inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert!(r.header("content-type").is_none());
    }
    let r = cond(&[("if-none-match", "\"v2\"")]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert!(!r.body.is_empty());
    // If-Modified-Since: not before Last-Modified → 304; before it → the full answer;
    // and If-None-Match wins when both are sent.
    let r = cond(&[("if-modified-since", "Wed, 02 Dec 2026 00:00:00 GMT")]);
    assert_eq!(r.status, 304);
    let r = cond(&[("if-modified-since", "Mon, 30 Nov 2026 00:00:00 GMT")]);
    assert_eq!(r.status, 200);
    let r = cond(&[
        ("if-none-match", "\"v2\""),
        ("if-modified-since", "Wed, 02 Dec 2026 00:00:00 GMT"),
    ]);
    assert_eq!(r.status, 200);
    assert_eq!(
        up[0].requests(),
        1,
        "every answer came from the one stored entry"
    );
}

#[test]
fn stale_entries_are_revalidated_upstream_and_a_304_refreshes_them() {
    let up = upstreams(1);
    let gw = one_route(
        &up[0],
        "    cache: { ttl: 1s, max_entries: 100, max_body: 64KiB }\n",
        "",
    );
    let first = gw.get("/doc/etag/1");
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    assert_eq!(gw.get("/doc/etag/1").header("x-cache"), Some("HIT"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // Stale: the upstream is asked with the stored validators and answers 304 (the
    // echo does so only for If-None-Match: "v1"), so the stored body is served again.
    let r = gw.get("/doc/etag/1");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("REVALIDATED")));
    assert_eq!(r.body, first.body, "the stored body, not a new one");
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(up[0].requests(), 2);
    assert_eq!(
        up[0].seen().last().map(String::as_str),
        Some("GET /doc/etag/1 0")
    );
    // Refreshed: fresh again for the route's ttl, served without asking.
    let r = gw.get("/doc/etag/1");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(up[0].requests(), 2);
    // A client's own conditional on a stale entry: revalidated, then 304 to it.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r = request(
        gw.addr,
        "GET",
        "/doc/etag/1",
        &[("if-none-match", "\"v1\"")],
        b"",
    )
    .expect("req");
    assert_eq!((r.status, r.header("x-cache")), (304, Some("REVALIDATED")));
    assert!(r.body.is_empty());
    assert_eq!(up[0].requests(), 3);
    // The connection stays usable after a revalidation.
    let raw = b"GET /doc/etag/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /doc/etag/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut s = std::net::TcpStream::connect(gw.addr).expect("connect");
    std::io::Write::write_all(&mut s, raw).expect("write");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    assert_eq!(all.matches("HTTP/1.1 200").count(), 2, "{all}");
    assert_eq!(
        gw.metric(
            "gatehouse_cache_requests_total",
            "result=\"revalidated\",route=\"r\""
        ),
        Some(2.0)
    );
    // Without validators a stale entry is simply fetched again.
    assert_eq!(gw.get("/plain").header("x-cache"), Some("MISS"));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(gw.get("/plain").header("x-cache"), Some("MISS"));
}

#[test]
fn admin_purge_drops_entries_by_route_and_path_prefix() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: a, match: {{ path_prefix: /a }}, service: s, cache: {{ ttl: 60s }} }}\n  - {{ name: b, match: {{ path_prefix: /b }}, service: s, cache: {{ ttl: 60s }} }}\n  - {{ name: c, match: {{ path_prefix: /c }}, service: s }}\n",
        up[0].addr()
    ));
    let paths = ["/a/1", "/a/2", "/a/x/3", "/a/x/4?q=1", "/b/1"];
    for p in paths {
        assert_eq!(gw.get(p).header("x-cache"), Some("MISS"), "{p}");
        assert_eq!(gw.get(p).header("x-cache"), Some("HIT"), "{p}");
    }
    let purge = |query: &str| {
        request(
            gw.admin,
            "POST",
            &format!("/admin/cache/purge{query}"),
            &[],
            b"",
        )
        .expect("purge")
    };
    let r = purge("?route=a&prefix=%2Fa%2Fx");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(gw.get("/a/x/3").header("x-cache"), Some("MISS"));
    assert_eq!(gw.get("/a/x/4?q=1").header("x-cache"), Some("MISS"));
    assert_eq!(gw.get("/a/1").header("x-cache"), Some("HIT"));
    assert_eq!(gw.get("/b/1").header("x-cache"), Some("HIT"));
    let r = purge("?route=a");
    assert_eq!(r.json()["purged"], 4);
    assert_eq!(r.json()["routes"]["a"], 4);
    assert_eq!(gw.get("/a/2").header("x-cache"), Some("MISS"));
    assert_eq!(gw.get("/b/1").header("x-cache"), Some("HIT"));
    // Every cached route at once.
    let r = purge("");
    assert_eq!(r.json()["purged"], 2, "{}", r.text());
    assert_eq!(gw.get("/b/1").header("x-cache"), Some("MISS"));
    // Mistakes get a clear answer.
    assert_eq!(purge("?route=zzz").status, 404);
    assert_eq!(purge("?route=c").status, 409);
    assert_eq!(purge("?prefix=a").status, 400);
    let r = request(gw.admin, "GET", "/admin/cache/purge", &[], b"").expect("get");
    assert_eq!(r.status, 405);
}

#[test]
fn cache_miss_then_hit_and_what_is_never_stored() {
    let up = upstreams(1);
    let gw = one_route(
        &up[0],
        "    cache: { ttl: 30s, max_entries: 100, max_body: 64KiB }\n",
        "",
    );
    let r = gw.get("/items?page=1");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    let r = gw.get("/items?page=1");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert!(r.header("age").is_some());
    assert!(
        r.header("x-request-id").is_some(),
        "hits carry their own request id"
    );
    assert_eq!(up[0].requests(), 1, "the hit never reached the upstream");
    // another query is another key
    assert_eq!(gw.get("/items?page=2").header("x-cache"), Some("MISS"));
    // a request with Authorization is neither served from nor stored in the cache
    let r = request(
        gw.addr,
        "GET",
        "/items?page=1",
        &[("authorization", "Bearer x")],
        b"",
    )
    .unwrap();
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    let r = request(gw.addr, "GET", "/private", &[("cookie", "s=1")], b"").unwrap();
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    assert_eq!(gw.get("/private").header("x-cache"), Some("MISS"));
    // POST is never cached
    let r = request(gw.addr, "POST", "/items?page=1", &[], b"x").unwrap();
    assert_ne!(r.header("x-cache"), Some("HIT"));
    assert_eq!(
        gw.metric(
            "gatehouse_cache_requests_total",
            "result=\"hit\",route=\"r\""
        ),
        Some(1.0)
    );
    assert!(gw
        .metric(
            "gatehouse_cache_requests_total",
            "result=\"miss\",route=\"r\""
        )
        .is_some_and(|v| v >= 3.0));
}

#[test]
fn no_store_responses_are_not_cached() {
    // An upstream that says no-store: use a second gateway as the upstream, whose
    // response_headers rule sets Cache-Control — a real server saying no-store.
    let up = upstreams(1);
    let origin = one_route(
        &up[0],
        "    response_headers: { set: { Cache-Control: no-store } }\n",
        "",
    );
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s, cache: {{ ttl: 30s }} }}\n",
        origin.addr
    ));
    for _ in 0..3 {
        assert_eq!(gw.get("/n").header("x-cache"), Some("MISS"));
    }
    assert_eq!(up[0].requests(), 3);
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let up = upstreams(1);
    let gw = one_route(&up[0], "    cache: { ttl: 30s }\n", "");
    let addr = gw.addr;
    let clients: Vec<_> = (0..20)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/sleep/300", &[], b"").unwrap()))
        .collect();
    let mut statuses = vec![];
    for c in clients {
        let r = c.join().unwrap();
        statuses.push((r.status, r.header("x-cache").unwrap_or("").to_string()));
    }
    assert!(statuses.iter().all(|(s, _)| *s == 200), "{statuses:?}");
    assert_eq!(
        up[0].requests(),
        1,
        "one upstream call for 20 concurrent misses: {statuses:?}"
    );
}

#[test]
fn header_rules_rewrite_requests_and_responses() {
    let up = upstreams(1);
    let gw = one_route(
        &up[0],
        "    request_headers: { set: { X-Env: prod, X-Client: \"{client_ip}\", X-Req: \"{request_id}\" }, add: { X-Trace: gw }, remove: [Cookie] }\n    response_headers: { set: { X-Frame-Options: DENY }, remove: [X-Upstream] }\n",
        "",
    );
    let r = request(
        gw.addr,
        "GET",
        "/h",
        &[("cookie", "secret=1"), ("x-env", "dev")],
        b"",
    )
    .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["x-env"], "prod");
    assert_eq!(h["x-client"], "127.0.0.1");
    assert_eq!(h["x-req"].as_str(), r.header("x-request-id"));
    assert_eq!(h["x-trace"], "gw");
    assert!(h.get("cookie").is_none());
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-upstream"), None);
}

#[test]
fn cors_preflight_allowed_refused_and_simple_requests() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - name: api\n    match: {{ path_prefix: /api, methods: [GET, POST] }}\n    service: s\n    cors: {{ allow_origins: [\"https://app.example.com\"], allow_methods: [GET, POST], allow_headers: [Content-Type], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m }}\n",
        up[0].addr()
    ));
    let pre = |origin: &str, method: &str| {
        request(
            gw.addr,
            "OPTIONS",
            "/api/things",
            &[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type"),
            ],
            b"",
        )
        .unwrap()
    };
    let r = pre("https://app.example.com", "POST");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(
        up[0].requests(),
        0,
        "preflights are answered by the gateway"
    );

    let r = pre("https://evil.example.com", "POST");
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = pre("https://app.example.com", "DELETE");
    assert!(r.header("access-control-allow-origin").is_none());

    let r = request(
        gw.addr,
        "GET",
        "/api/x",
        &[("origin", "https://app.example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    let r = request(
        gw.addr,
        "GET",
        "/api/x",
        &[("origin", "https://evil.example.com")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn ip_allow_and_deny_lists_v4_and_v6() {
    let up = upstreams(1);
    // The test's own address is 127.0.0.1; X-Forwarded-For from it (a trusted proxy)
    // stands in for clients elsewhere, IPv6 included.
    let gw = one_route(
        &up[0],
        "    allow_ips: [127.0.0.1, 10.0.0.0/8, \"2001:db8::/32\"]\n    deny_ips: [10.6.6.0/24, \"2001:db8:bad::/48\"]\n",
        "  trusted_proxies: [127.0.0.1]\n",
    );
    let from = |ip: &str| {
        request(gw.addr, "GET", "/", &[("x-forwarded-for", ip)], b"")
            .unwrap()
            .status
    };
    assert_eq!(gw.get("/").status, 200);
    assert_eq!(from("10.1.2.3"), 200);
    assert_eq!(from("10.6.6.7"), 403);
    assert_eq!(from("192.0.2.1"), 403);
    assert_eq!(from("2001:db8::5"), 200);
    assert_eq!(from("2001:db8:bad::1"), 403);
    assert_eq!(from("2001:dead::1"), 403);
    let r = request(
        gw.addr,
        "GET",
        "/",
        &[("x-forwarded-for", "192.0.2.1")],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["error"], "forbidden");
}

#[test]
fn gzip_and_zstd_bodies_decode_to_the_original() {
    let up = upstreams(1);
    let gw = one_route(&up[0], "    compression: true\n", "");
    // The echo body is JSON; make it large enough to be worth compressing.
    let path = format!("/{}", "x".repeat(2000));
    let plain = gw.get(&path);
    assert!(plain.header("content-encoding").is_none());
    for (accept, enc) in [
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, br", "gzip"),
        ("deflate, gzip, br, zstd", "gzip"),
    ] {
        let r = request(gw.addr, "GET", &path, &[("accept-encoding", accept)], b"").unwrap();
        assert_eq!(r.header("content-encoding"), Some(enc), "accept {accept}");
        assert!(r
            .header("vary")
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
        let mut out = Vec::new();
        match enc {
            "gzip" => flate2::read::GzDecoder::new(&r.body[..])
                .read_to_end(&mut out)
                .unwrap(),
            _ => zstd::stream::read::Decoder::new(&r.body[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap(),
        };
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], path.as_str());
        assert!(r.body.len() < out.len() / 2, "{enc} compressed");
    }
    // brotli alone is not offered (see README); the body stays as it was
    let r = request(gw.addr, "GET", &path, &[("accept-encoding", "br")], b"").unwrap();
    assert!(r.header("content-encoding").is_none());
    // small responses are left alone
    let r = request(gw.addr, "GET", "/s", &[("accept-encoding", "gzip")], b"").unwrap();
    assert!(r.header("content-encoding").is_none());
}
