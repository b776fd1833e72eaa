use crate::common::*;

#[test]
fn spoofed_forwarded_for_from_untrusted_peer_is_replaced() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[
            ("host", "api.example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
        ],
        b"",
    )
    .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], "api.example.com", "Host is passed through");
}

#[test]
fn trusted_proxy_chain_is_kept_and_client_is_rightmost_untrusted() {
    let up = upstreams(1);
    let gw = Gateway::start_with(
        &one_route(&up[0]),
        "  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n",
    );
    let r = request(
        gw.addr,
        "GET",
        "/x",
        &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")],
        b"",
    )
    .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(
        h["x-forwarded-for"],
        "6.6.6.6, 198.51.100.7, 10.1.2.3, 127.0.0.1"
    );
    assert_eq!(h["x-real-ip"], "198.51.100.7");
}

#[test]
fn request_id_kept_when_sane_generated_otherwise_and_echoed() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let r = request(gw.addr, "GET", "/", &[("x-request-id", "abc-123")], b"").unwrap();
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    assert_eq!(r.json()["headers"]["x-request-id"], "abc-123");

    let r = request(
        gw.addr,
        "GET",
        "/",
        &[("x-request-id", "<script>alert(1)</script>")],
        b"",
    )
    .unwrap();
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 32, "generated id: {id}");
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());

    let a = gw.get("/").header("x-request-id").unwrap().to_string();
    let b = gw.get("/").header("x-request-id").unwrap().to_string();
    assert_ne!(a, b);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let r = request(
        gw.addr,
        "GET",
        "/",
        &[
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
        ],
        b"",
    )
    .unwrap();
    let h = &r.json()["headers"];
    assert_eq!(h["x-end-to-end"], "kept");
    for hop in ["keep-alive", "proxy-authorization", "te"] {
        assert!(h.get(hop).is_none(), "{hop} must not be forwarded: {h}");
    }
}

/// Requests with no hop-by-hop field, or only `Connection: keep-alive/close`, skip
/// Pingora's upstream request policy (the gateway removes `Connection` itself); every
/// other shape still goes through it. Either way the upstream sees the same thing.
#[test]
fn connection_fields_are_not_forwarded_on_either_path() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let send = |raw: &str| {
        let r = exchange(gw.addr, raw.as_bytes(), false).unwrap();
        assert_eq!(r.status, 200, "{raw:?}");
        r.json()["headers"].clone()
    };

    // No hop-by-hop field at all (HTTP/1.0 closes without asking).
    let h = send("GET / HTTP/1.0\r\nhost: gateway.test\r\nx-end-to-end: kept\r\n\r\n");
    assert_eq!(h["x-end-to-end"], "kept", "{h}");
    assert!(h.get("connection").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");

    // Only Connection, nominating nothing but keep-alive/close, in any case and split.
    let h = send(
        "GET / HTTP/1.1\r\nhost: gateway.test\r\nConnection: Keep-Alive, CLOSE\r\n\
         x-end-to-end: kept\r\nconnection: , keep-alive\r\n\r\n",
    );
    assert_eq!(h["x-end-to-end"], "kept", "{h}");
    assert!(h.get("connection").is_none(), "{h}");

    // A field named by Connection, and a field named `close` that `Connection: close`
    // nominates: Pingora's policy removes both.
    let h = send(
        "GET / HTTP/1.1\r\nhost: gateway.test\r\nconnection: close, x-secret-hop\r\n\
         x-secret-hop: 1\r\nclose: 1\r\nx-end-to-end: kept\r\n\r\n",
    );
    assert_eq!(h["x-end-to-end"], "kept", "{h}");
    for gone in ["connection", "x-secret-hop", "close"] {
        assert!(h.get(gone).is_none(), "{gone} must not be forwarded: {h}");
    }

    // A protected field nominated: Pingora's policy refuses the request.
    let r = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nhost: gateway.test\r\nconnection: close, x-forwarded-for\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(r.status, 400);
}
