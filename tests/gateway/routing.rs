use crate::common::*;

fn config(a: &EchoServer, b: &EchoServer) -> String {
    format!(
        r#"
services:
  users: {{ upstreams: [{{ address: "{a}" }}] }}
  rest: {{ upstreams: [{{ address: "{b}" }}] }}
routes:
  - name: users
    match: {{ path_prefix: /api/users, methods: [GET, POST] }}
    service: users
    strip_prefix: true
  - name: admin-host
    match: {{ host: admin.example.com, path_prefix: /api }}
    service: users
  - name: api
    match: {{ path_prefix: /api }}
    service: rest
"#,
        a = a.addr(),
        b = b.addr()
    )
}

#[test]
fn routes_by_prefix_host_and_method_with_strip_prefix() {
    let up = upstreams(2);
    let gw = Gateway::start(&config(&up[0], &up[1]));

    let r = gw.get("/api/users/42?x=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), "a");
    assert_eq!(r.json()["path"], "/42?x=1", "strip_prefix keeps the query");

    let r = gw.get("/api/users");
    assert_eq!(
        (r.upstream().as_str(), r.json()["path"].as_str()),
        ("a", Some("/"))
    );

    // segment boundary: /api/usersX is not /api/users
    let r = gw.get("/api/usersX");
    assert_eq!(r.upstream(), "b");
    assert_eq!(r.json()["path"], "/api/usersX", "no strip on the api route");

    // host-specific route wins for its host (case and port ignored)
    let r = request(
        gw.addr,
        "GET",
        "/api/x",
        &[("host", "Admin.Example.com:8080")],
        b"",
    )
    .unwrap();
    assert_eq!(r.upstream(), "a");

    // method mismatch on users falls through to the next matching route (api: any method)
    let r = request(gw.addr, "DELETE", "/api/users/1", &[], b"").unwrap();
    assert_eq!(r.upstream(), "b");
}

#[test]
fn unknown_paths_get_404_and_wrong_methods_405_as_json() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        r#"
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: r, match: {{ path_prefix: /only, methods: [GET, POST] }}, service: s }}
"#,
        up[0].addr()
    ));
    let r = gw.get("/elsewhere");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));

    let r = request(gw.addr, "PUT", "/only/x", &[], b"{}").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert_eq!(r.json()["error"], "method_not_allowed");

    // dot-dot segments are refused, never routed
    let r = gw.get("/only/../admin");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_path");
    assert_eq!(up[0].requests(), 0, "nothing reached the upstream");
}

#[test]
fn request_body_limit_is_413_for_declared_and_streamed_bodies() {
    let up = upstreams(1);
    let gw = Gateway::start_with(
        &format!(
            r#"
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, service: s }}
"#,
            up[0].addr()
        ),
        "  max_request_body: 1KiB\n",
    );
    let ok = request(gw.addr, "POST", "/a", &[], &[b'x'; 1024]).unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_bytes"], 1024);

    let big = request(gw.addr, "POST", "/a", &[], &[b'x'; 1025]).unwrap();
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"], "body_too_large");

    // chunked: no length up front, counted as it streams
    let mut chunked = Vec::new();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'y'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = request(
        gw.addr,
        "POST",
        "/a",
        &[("transfer-encoding", "chunked")],
        &chunked,
    )
    .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
}
