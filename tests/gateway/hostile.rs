//! Hostile and careless clients, and a broken upstream, over raw sockets against the real
//! binary and an upstream that records every byte it receives: each numbered failure of
//! the hostile-clients issue, with the status, the time bound, and what the upstream saw.

use crate::common::*;
use crate::recorder::{Answer, Recorder};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Short timeouts so every bound is tested in about a second.
const SERVER: &str = "  h2c: true\n  timeouts: { client_header: 1s, client_body: 1s, keepalive: 2s, preface: 1s }\n  \
                      limits: { request_headers: 30, request_head: 4KiB, response_head: 8KiB }\n";

fn gateway(up: &Recorder) -> Gateway {
    Gateway::start_with(
        &format!(
            "services:\n  s: {{ retries: {{ attempts: 2 }}, upstreams: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: all, match: {{ path_prefix: / }}, service: s }}\n",
            up.addr
        ),
        SERVER,
    )
}

/// What came back on one connection: the bytes, and when the gateway answered or closed.
struct Outcome {
    raw: Vec<u8>,
    took: Duration,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.raw);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }
}

/// Send `bytes`, optionally half-close, and read until the gateway closes (or `limit`).
fn send(addr: SocketAddr, bytes: &[u8], half_close: bool, limit: Duration) -> Outcome {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(limit)).expect("timeout");
    let t = Instant::now();
    s.write_all(bytes).expect("write");
    if half_close {
        s.shutdown(Shutdown::Write).expect("half-close");
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    Outcome {
        raw,
        took: t.elapsed(),
    }
}

/// Read one response head and its `content-length` body from `s`.
fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + len {
                return raw;
            }
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&b[..n]),
        }
    }
}

#[test]
fn a_half_closed_request_is_answered_and_sent_upstream_once() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    let limit = Duration::from_secs(5);
    let o = send(
        gw.addr,
        b"GET /dup HTTP/1.1\r\nHost: a\r\n\r\n",
        true,
        limit,
    );
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
    let o = send(
        gw.addr,
        b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        true,
        limit,
    );
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
    assert!(wait_until(Duration::from_secs(2), || up.complete() == 2));
    let seen = up.text();
    assert_eq!(seen.matches("GET /dup").count(), 1, "{seen}");
    assert_eq!(seen.matches("POST /post").count(), 1, "{seen}");
    assert!(
        seen.contains("\r\n\r\nabc"),
        "the body went with its head: {seen}"
    );
    // Nothing was counted against the upstream.
    assert_eq!(
        gw.metric("gatehouse_upstream_requests_total", "outcome=\"error\"")
            .unwrap_or(0.0),
        0.0
    );
}

#[test]
fn bad_chunked_bodies_get_400_at_once_and_nothing_upstream() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    let bodies: [&[u8]; 3] = [b"0_2e\r\n\r\n", b"5\r\r;ABCD", b"3\r\nabc\n0\r\n\r\n"];
    for method in ["POST", "GET"] {
        for body in bodies {
            let mut raw = format!(
                "{method} /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .into_bytes();
            raw.extend_from_slice(body);
            let o = send(gw.addr, &raw, false, Duration::from_secs(5));
            let what = format!("{method} {:?}", String::from_utf8_lossy(body));
            assert_eq!(
                o.status(),
                Some(400),
                "{what}: {}",
                String::from_utf8_lossy(&o.raw)
            );
            assert!(o.took < Duration::from_millis(900), "{what}: {:?}", o.took);
        }
    }
    // Content-Length together with Transfer-Encoding: refused before anything is sent.
    let o = send(
        gw.addr,
        b"POST /both HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\nContent-Length: 3\r\n\r\nabc",
        false,
        Duration::from_secs(5),
    );
    assert_eq!(o.status(), Some(400));
    assert!(o.took < Duration::from_millis(900), "{:?}", o.took);
    std::thread::sleep(Duration::from_millis(200));
    // The first read of the body is made before anything goes upstream: the upstream saw
    // nothing at all.
    assert_eq!(up.heads(), 0, "{}", up.text());
    assert!(up.text().is_empty(), "{}", up.text());
}

#[test]
fn http11_needs_exactly_one_host_and_a_proper_target() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    let limit = Duration::from_secs(5);
    for raw in [
        &b"GET ! HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET ! HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET example.com HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let o = send(gw.addr, raw, false, limit);
        assert_eq!(o.status(), Some(400), "{:?}", String::from_utf8_lossy(raw));
        assert!(o.took < Duration::from_millis(900));
    }
    assert_eq!(up.heads(), 0, "{}", up.text());
    // HTTP/1.0 may go without Host; absolute form is fine.
    let o = send(gw.addr, b"GET /old HTTP/1.0\r\n\r\n", false, limit);
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
    let o = send(
        gw.addr,
        b"GET http://a/abs HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        false,
        limit,
    );
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
}

#[test]
fn malformed_request_lines_are_400_and_never_rewritten() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    for raw in [
        &b"Extra lineGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /  HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\x01x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let o = send(gw.addr, raw, false, Duration::from_secs(5));
        assert_eq!(o.status(), Some(400), "{:?}", String::from_utf8_lossy(raw));
        assert!(o.took < Duration::from_millis(900));
    }
    assert_eq!(up.heads(), 0, "{}", up.text());
}

#[test]
fn h2c_listener_answers_short_http1_requests_and_bounds_the_preface() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    // 18 bytes, shorter than the preface, no FIN: answered at once.
    let o = send(
        gw.addr,
        b"GET / HTTP/1.0\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
    assert!(o.took < Duration::from_millis(900), "{:?}", o.took);
    // Nothing at all, or the start of the preface only: closed after `preface` (1 s).
    for bytes in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let o = send(gw.addr, bytes, false, Duration::from_secs(10));
        assert!(o.raw.is_empty(), "{:?}", String::from_utf8_lossy(&o.raw));
        assert!(
            o.took >= Duration::from_millis(900) && o.took < Duration::from_secs(4),
            "closed after {:?}",
            o.took
        );
    }
    // HTTP/2 with prior knowledge still works.
    let status = h2_get(gw.addr, &[]).expect("h2 request");
    assert_eq!(status, 200);
}

/// One HTTP/2 (prior knowledge) GET with extra header fields; the status, or the
/// stream error.
fn h2_get(addr: SocketAddr, headers: &[(&str, &[u8])]) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (client, conn) = h2::client::handshake(tcp)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await.map_err(|e| e.to_string())?;
        let mut req = http::Request::builder().uri(format!("http://{addr}/h2"));
        for (k, v) in headers {
            req = req.header(
                *k,
                http::HeaderValue::from_bytes(v).map_err(|e| e.to_string())?,
            );
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let (resp, _) = client.send_request(req, true).map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    })
}

#[test]
fn http2_values_with_outer_whitespace_are_400_and_content_length_is_canonical() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    for v in [&b"  padded  "[..], b"\tv", b"v "] {
        let status = h2_get(gw.addr, &[("x-test", v)]).expect("h2 request");
        assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(v));
    }
    assert_eq!(up.heads(), 0, "{}", up.text());
    // `Content-Length: 010` goes upstream as 10 (HTTP/1.1 here; h2 checks it itself).
    let mut raw =
        b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\nConnection: close\r\n\r\n"
            .to_vec();
    raw.extend_from_slice(b"0123456789");
    let o = send(gw.addr, &raw, false, Duration::from_secs(5));
    assert_eq!(o.status(), Some(200), "{}", String::from_utf8_lossy(&o.raw));
    let seen = up.text().to_ascii_lowercase();
    assert!(seen.contains("content-length: 10\r\n"), "{seen}");
    assert!(!seen.contains("content-length: 010"), "{seen}");
    // A Content-Length that is not a number: 400.
    let o = send(
        gw.addr,
        b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    assert_eq!(o.status(), Some(400));
}

#[test]
fn slow_heads_and_stalled_bodies_get_408_and_idle_connections_close() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    // A partial head on a new connection: 408 after client_header (1 s).
    let o = send(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n",
        false,
        Duration::from_secs(10),
    );
    assert_eq!(o.status(), Some(408), "{}", String::from_utf8_lossy(&o.raw));
    assert!(
        o.took >= Duration::from_millis(900) && o.took < Duration::from_secs(3),
        "{:?}",
        o.took
    );
    // The same after one request on a reused connection.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let first = read_response(&mut s);
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    let t = Instant::now();
    s.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\n")
        .expect("write");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // An idle keep-alive connection is closed after keepalive (2 s), quietly.
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /idle HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let _ = read_response(&mut s);
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        t.elapsed() >= Duration::from_millis(1900) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    // A new connection that sends nothing: closed after client_header (1 s).
    let o = send(gw.addr, b"", false, Duration::from_secs(10));
    assert!(o.raw.is_empty());
    assert!(o.took < Duration::from_secs(4), "{:?}", o.took);
    // A stalled body (5 of 10 bytes): 408 after client_body, not the upstream's 504;
    // the upstream never got a complete request and is not blamed.
    let o = send(
        gw.addr,
        b"POST /stall HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
        false,
        Duration::from_secs(10),
    );
    assert_eq!(o.status(), Some(408), "{}", String::from_utf8_lossy(&o.raw));
    assert!(o.took < Duration::from_secs(4), "{:?}", o.took);
    // And a Content-Length with no body at all.
    let o = send(
        gw.addr,
        b"POST /nobody HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        false,
        Duration::from_secs(10),
    );
    assert_eq!(o.status(), Some(408), "{}", String::from_utf8_lossy(&o.raw));
    let seen = up.text();
    assert_eq!(
        seen.matches("/stall").count(),
        1,
        "never sent twice: {seen}"
    );
    assert_eq!(
        seen.matches("/nobody").count(),
        0,
        "a body that never starts is waited for before anything goes upstream: {seen}"
    );
    assert_eq!(
        gw.metric("gatehouse_upstream_requests_total", "outcome=\"timeout\"")
            .unwrap_or(0.0),
        0.0,
        "the client's stall is not the upstream's timeout"
    );
}

#[test]
fn oversized_heads_are_431_and_an_oversized_upstream_head_is_502() {
    let up = Recorder::start(Answer::Ok);
    let gw = gateway(&up);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..40 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let o = send(gw.addr, many.as_bytes(), false, Duration::from_secs(5));
    assert_eq!(o.status(), Some(431), "{}", String::from_utf8_lossy(&o.raw));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    let o = send(gw.addr, big.as_bytes(), false, Duration::from_secs(5));
    assert_eq!(o.status(), Some(431), "{}", String::from_utf8_lossy(&o.raw));
    assert_eq!(up.heads(), 0, "{}", up.text());

    let huge = Recorder::start(Answer::HugeHead(200_000));
    let gw = gateway(&huge);
    let o = send(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        false,
        Duration::from_secs(5),
    );
    assert_eq!(
        o.status(),
        Some(502),
        "{}",
        String::from_utf8_lossy(&o.raw[..o.raw.len().min(300)])
    );
    assert!(o.raw.len() < 2000, "the huge head is not forwarded");
}

#[test]
fn pipelined_requests_are_answered_in_order_and_each_sent_once() {
    let up = Recorder::start(Answer::Slow(Duration::from_millis(200)));
    let gw = gateway(&up);
    let mut s = TcpStream::connect(gw.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /slow1 HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    let seen = up.text();
    assert_eq!(seen.matches("/slow1").count(), 1, "{seen}");
    assert_eq!(seen.matches("/second").count(), 1, "{seen}");
}

#[test]
fn max_connections_makes_new_connections_wait() {
    let up = Recorder::start(Answer::Ok);
    let gw = Gateway::start_with(
        &format!(
            "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: all, match: {{ path_prefix: / }}, service: s }}\n",
            up.addr
        ),
        "  max_connections: 2\n",
    );
    let open = |path: &str| {
        let mut s = TcpStream::connect(gw.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .expect("write");
        s
    };
    let mut a = open("/a");
    assert!(read_response(&mut a).starts_with(b"HTTP/1.1 200"));
    let mut b = open("/b");
    assert!(read_response(&mut b).starts_with(b"HTTP/1.1 200"));
    assert_eq!(gw.metric("gatehouse_downstream_connections", ""), Some(2.0));
    assert_eq!(
        gw.metric("gatehouse_downstream_connections_limit", ""),
        Some(2.0)
    );
    // A third waits (in the listen backlog) ...
    let mut c = open("/c");
    c.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(c.read(&mut buf).is_err(), "not served while two are open");
    // ... until one closes.
    drop(a);
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(read_response(&mut c).starts_with(b"HTTP/1.1 200"));
}
