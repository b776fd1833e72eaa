//! Request matching beyond host/prefix/method (headers, query, cookies, path regex),
//! path rewrites with captures, `set_host`, and redirects — against the real binary.

use crate::common::*;

fn gateway(up: &[EchoServer]) -> Gateway {
    Gateway::start(&format!(
        "services:\n  v1: {{ upstreams: [{{ address: \"{a}\" }}] }}\n  v2: {{ upstreams: [{{ address: \"{b}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: beta, match: {{ path_prefix: /api, headers: {{ X-Beta: \"yes\" }} }}, service: v2 }}\n\
         \x20 - {{ name: canary, match: {{ path_prefix: /api, cookies: {{ canary: {{ regex: \"^(1|true)$\" }} }} }}, service: v2 }}\n\
         \x20 - {{ name: preview, match: {{ path_prefix: /api, query: {{ preview: {{ present: true }} }} }}, service: v2 }}\n\
         \x20 - {{ name: users, match: {{ path_regex: \"^/api/v1/users/(?<id>[0-9]+)$\", methods: [GET] }}, service: v1,\n\
         \x20     rewrite: {{ path_regex: \"^/api/v1/users/(?<id>[0-9]+)$\", replacement: \"/users/{{id}}\", set_host: users.internal }} }}\n\
         \x20 - {{ name: old, match: {{ path_regex: \"^/old/(?<slug>[a-z-]+)$\" }}, redirect: {{ to: \"/new/{{slug}}\", status: 301 }} }}\n\
         \x20 - {{ name: secure, match: {{ path_prefix: /login }}, redirect: {{ to: \"https://{{host}}{{path}}\", status: 308 }} }}\n\
         \x20 - {{ name: api, match: {{ path_prefix: /api }}, service: v1 }}\n",
        a = up[0].addr(),
        b = up[1].addr()
    ))
}

#[test]
fn headers_cookies_query_and_regex_pick_routes() {
    let up = upstreams(2);
    let gw = gateway(&up);
    let to = |path: &str, headers: &[(&str, &str)]| {
        let r = request(gw.addr, "GET", path, headers, b"").expect("request");
        (
            r.status,
            r.json()["upstream"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(to("/api/x", &[]), (200, "a".into()));
    assert_eq!(to("/api/x", &[("x-beta", "yes")]), (200, "b".into()));
    assert_eq!(
        to("/api/x", &[("x-beta", "YES")]),
        (200, "a".into()),
        "exact is exact"
    );
    assert_eq!(
        to("/api/x", &[("cookie", "s=1; canary=true")]),
        (200, "b".into())
    );
    assert_eq!(to("/api/x", &[("cookie", "canary=0")]), (200, "a".into()));
    assert_eq!(to("/api/x?preview", &[]), (200, "b".into()));
    assert_eq!(to("/api/x?nopreview=1", &[]), (200, "a".into()));
    // The regex route is GET only: a POST to its path goes on to the next candidate in
    // file order (the /api route); a 405 comes only when no later route takes it.
    let r = request(gw.addr, "POST", "/api/v1/users/42", &[], b"").expect("post");
    assert_eq!(
        r.status, 200,
        "the /api route (any method) is a later candidate"
    );
    let r = request(gw.addr, "GET", "/api/v1/users/abc", &[], b"").expect("get");
    assert_eq!(
        r.json()["path"],
        "/api/v1/users/abc",
        "no regex match: the /api route, unrewritten"
    );
    // Metrics name the route that matched.
    assert!(gw
        .metric("gatehouse_requests_total", "route=\"beta\"")
        .is_some_and(|v| v >= 1.0));
}

#[test]
fn rewrites_with_captures_and_set_host() {
    let up = upstreams(2);
    let gw = gateway(&up);
    let r = gw.get("/api/v1/users/42?fields=name");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["upstream"], "a");
    assert_eq!(v["path"], "/users/42?fields=name");
    assert_eq!(v["headers"]["host"], "users.internal");
    assert_eq!(
        v["headers"]["x-forwarded-host"], "gateway.test",
        "the client's Host stays in X-Forwarded-Host"
    );
}

#[test]
fn redirects_answer_without_proxying() {
    let up = upstreams(2);
    let gw = gateway(&up);
    let before: u64 = up.iter().map(EchoServer::requests).sum();
    let r = gw.get("/old/hello-world");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/new/hello-world"));
    assert!(r.header("x-request-id").is_some());
    let r = request(
        gw.addr,
        "GET",
        "/login/form?next=%2Fhome",
        &[("host", "shop.example")],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example/login/form?next=%2Fhome")
    );
    assert_eq!(gw.get("/old/UPPER").status, 404, "no regex match, no route");
    let after: u64 = up.iter().map(EchoServer::requests).sum();
    assert_eq!(before, after, "nothing reached an upstream");
    assert!(gw
        .metric(
            "gatehouse_requests_total",
            "route=\"old\",service=\"none\",status=\"301\""
        )
        .is_some_and(|v| v == 1.0));
}

#[test]
fn bad_match_rewrite_and_redirect_config_is_refused_with_paths() {
    assert_config_errors(
        "listen: [{ address: 127.0.0.1:1 }]\n\
         services: { s: { upstreams: [{ address: 127.0.0.1:2 }] } }\n\
         routes:\n\
         \x20 - { name: a, match: { path_regex: \"([\" }, service: s }\n\
         \x20 - { name: b, match: { headers: { X-A: { regex: \"x\", present: true } } }, service: s }\n\
         \x20 - { name: c, match: { path_prefix: /c }, service: s, rewrite: { path_regex: \"^/c/(?<id>.*)$\", replacement: \"/{idd}\" } }\n\
         \x20 - { name: d, match: { path_prefix: /d }, redirect: { to: \"/x/{slug}\" } }\n\
         \x20 - { name: e, match: { path_prefix: /e }, service: s, redirect: { to: /x, status: 200 } }\n\
         \x20 - { name: f, match: { path_prefix: /f } }\n\
         \x20 - { name: g, match: { path_prefix: /g }, service: s, strip_prefix: true, rewrite: { path_regex: \"^/g$\", replacement: / } }\n",
        &[
        "routes[0].match.path_regex: invalid regex",
        "routes[1].match.headers.X-A: give exactly one of exact, present, regex",
        "routes[2].rewrite.replacement: {idd} is not defined",
        "routes[3].redirect.to: {slug} is not defined",
        "routes[4].service: a redirect route proxies nothing",
        "routes[4].redirect.status: must be 301, 302, 303, 307 or 308",
        "routes[5].service: required (or services: for a split; only a redirect route has none)",
        "routes[6].strip_prefix: use either strip_prefix or rewrite.path_regex",
        ],
    );
}

fn split_gateway(up: &[EchoServer], sticky: &str) -> Gateway {
    Gateway::start(&format!(
        "services:\n  v1: {{ upstreams: [{{ address: \"{a}\" }}] }}\n  v2: {{ upstreams: [{{ address: \"{b}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: canary, match: {{ path_prefix: / }}, services: [{{ service: v1, weight: 90 }}, {{ service: v2, weight: 10 }}]{sticky} }}\n",
        a = up[0].addr(),
        b = up[1].addr()
    ))
}

#[test]
fn a_90_10_split_holds_over_1000_requests_and_labels_the_service_used() {
    let up = upstreams(2);
    let gw = split_gateway(&up, "");
    let mut v2 = 0;
    let mut longest_v1_run = 0;
    let mut run = 0;
    for i in 0..1000 {
        let r = gw.get(&format!("/x/{i}"));
        assert_eq!(r.status, 200);
        if r.json()["upstream"] == "b" {
            v2 += 1;
            run = 0;
        } else {
            run += 1;
            longest_v1_run = longest_v1_run.max(run);
        }
    }
    assert!(
        (70..=130).contains(&v2),
        "v2 got {v2} of 1000 (want 100 ± 30)"
    );
    assert!(
        longest_v1_run < 30,
        "the services interleave (longest v1 run {longest_v1_run})"
    );
    let m = gw.metrics();
    let count = |svc: &str| {
        metric_value(
            &m,
            "gatehouse_requests_total",
            &format!("route=\"canary\",service=\"{svc}\",status=\"200\""),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("v2"), f64::from(v2));
    assert_eq!(count("v1"), f64::from(1000 - v2));
    assert!(m.contains("gatehouse_request_duration_seconds_count{route=\"canary\",service=\"v2\"}"));
}

#[test]
fn a_sticky_split_keeps_each_client_on_its_version() {
    let up = upstreams(2);
    let gw = split_gateway(&up, ", split_sticky: { cookie: gh_version, ttl: 1h }");
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..60 {
        let r = gw.get(&format!("/first/{i}"));
        let cookie = r
            .header("set-cookie")
            .expect("a new client gets the cookie")
            .to_string();
        assert!(
            cookie.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        let pair = cookie.split(';').next().expect("pair").to_string();
        let upstream = r.json()["upstream"].as_str().expect("upstream").to_string();
        assert_eq!(
            pair,
            format!("gh_version={}", if upstream == "a" { "v1" } else { "v2" })
        );
        // The same client again, ten times: same version, no new cookie.
        for _ in 0..10 {
            let again =
                request(gw.addr, "GET", "/again", &[("cookie", &pair)], b"").expect("again");
            assert_eq!(again.json()["upstream"].as_str(), Some(upstream.as_str()));
            assert!(again.header("set-cookie").is_none());
        }
        *seen.entry(upstream).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both versions got new clients: {seen:?}");
    // A cookie naming a version that is no longer in the split: chosen anew.
    let r = request(gw.addr, "GET", "/", &[("cookie", "gh_version=v9")], b"").expect("stale");
    assert!(r.header("set-cookie").is_some());

    let gw = split_gateway(&up, ", split_sticky: { hash_key: \"header:X-User-Id\" }");
    let mut versions = std::collections::BTreeSet::new();
    for user in 0..40 {
        let id = format!("user-{user}");
        let first = request(gw.addr, "GET", "/", &[("x-user-id", &id)], b"").expect("req");
        let v = first.json()["upstream"]
            .as_str()
            .expect("upstream")
            .to_string();
        for _ in 0..5 {
            let r = request(gw.addr, "GET", "/", &[("x-user-id", &id)], b"").expect("req");
            assert_eq!(r.json()["upstream"].as_str(), Some(v.as_str()), "{id}");
        }
        versions.insert(v);
    }
    assert_eq!(versions.len(), 2, "users spread over both versions");
}

#[test]
fn bad_splits_are_refused_with_paths() {
    assert_config_errors(
        "listen: [{ address: 127.0.0.1:1 }]\n\
         services: { s: { upstreams: [{ address: 127.0.0.1:2 }] } }\n\
         routes:\n\
         \x20 - { name: a, match: { path_prefix: /a }, services: [{ service: s, weight: 0 }] }\n\
         \x20 - { name: b, match: { path_prefix: /b }, services: [{ service: nope, weight: 1 }] }\n\
         \x20 - { name: c, match: { path_prefix: /c }, service: s, services: [{ service: s, weight: 1 }] }\n\
         \x20 - { name: d, match: { path_prefix: /d }, service: s, split_sticky: { cookie: x } }\n\
         \x20 - { name: e, match: { path_prefix: /e }, services: [{ service: s, weight: 1 }], split_sticky: { hash_key: \"bogus\" } }\n",
        &[
        "routes[0].services: the weights sum to 0",
        "routes[1].services[0].service: unknown service \"nope\"",
        "routes[2].services: give one of service, services (a split) or redirect",
        "routes[3].split_sticky: only with services:",
        "routes[4].split_sticky.hash_key:",
        ],
    );
}
