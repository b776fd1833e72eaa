//! Upstream response framing and connection reuse after Pingora hands the response header
//! over (the `read_resp_header_parts` patch, README "Pingora patches": the upstream
//! session keeps only the status, version and framing headers). The client gets every
//! header the upstream sent; a body delimited by Content-Length or chunked arrives
//! whole; a connection is reused unless the upstream said `Connection: close` or answered
//! in HTTP/1.0 (even when it keeps the socket open, as the raw upstream here does).
//!
//! Header names: both heads are parsed without the map of each name's original spelling
//! (the `discard_header_case` patch); the upstream and the client get canonical names,
//! every value, and repeated fields in their order.
//!
//! Also the `write_header_and_body` patch (a response header and its Content-Length body
//! written downstream with vectored writes, uncopied) and the `take_body` patch (larger
//! reads of a sized or close-delimited upstream body handed over, uncopied): large bodies
//! that reach the gateway in one piece, in several, or ended by the upstream closing,
//! arrive whole, byte for byte, and the client's connection stays usable for the next
//! request.

use crate::common::*;
use crate::recorder::{Answer, Recorder};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// An upstream answering by path, each body naming the connection it came on.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                thread::spawn(move || serve(conn, n));
            }
        });
        Upstream { addr, accepted }
    }

    /// A gateway config sending every path to this upstream.
    fn routes(&self) -> String {
        format!(
            "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
            self.addr
        )
    }
}

fn answer(path: &str, n: u64) -> String {
    let body = format!("conn-{n}");
    let len = body.len();
    let common = "X-Upstream-Note: kept\r\nServer: raw-upstream\r\nCache-Control: no-store";
    match path {
        "/chunked" => format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{common}\r\n\r\n\
             5\r\nconn-\r\n{:x}\r\n{n}\r\n0\r\n\r\n",
            n.to_string().len()
        ),
        "/close" => {
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n{common}\r\n\r\n{body}")
        }
        "/http10" => format!("HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n{common}\r\n\r\n{body}"),
        // Names spelt oddly, one of them twice.
        "/case" => format!(
            "HTTP/1.1 200 OK\r\ncontent-LENGTH: {len}\r\nx-MiXeD-Case: one\r\n\
             X-MIXED-CASE: two\r\ncontent-TYPE: text/plain\r\n\r\n{body}"
        ),
        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{common}\r\n\r\n{body}"),
    }
}

fn serve(mut conn: TcpStream, n: u64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            if path.starts_with("/big") {
                if send_big(&mut conn, &path).is_err() || path == "/big-close" {
                    return;
                }
                continue;
            }
            // Never closes: the gateway must not reuse a connection on its own account.
            if conn.write_all(answer(&path, n).as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// A body of `len` bytes that shows any byte lost, repeated or moved.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((i * 7 + i / 26) % 26) as u8)
        .collect()
}

/// The body length of a `/big…` path (see [`send_big`]).
fn big_len(path: &str) -> usize {
    if path == "/big-trickle" {
        200_000
    } else {
        70_000
    }
}

/// `/big-at-once`: 70,000 bytes, header and body in one write (the gateway reads them as
/// a header with part of the body, then the rest). `/big-trickle`: 200,000 bytes, the
/// header with the first 1,000, then the rest in three writes 10 ms apart.
/// `/big-close`: 70,000 bytes delimited by closing the connection (no Content-Length).
fn send_big(conn: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let len = big_len(path);
    let body = pattern(len);
    if path == "/big-close" {
        let mut out =
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Upstream-Note: big\r\n\r\n".to_vec();
        out.extend_from_slice(&body);
        return conn.write_all(&out);
    }
    let mut out =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nX-Upstream-Note: big\r\n\r\n")
            .into_bytes();
    if path == "/big-at-once" {
        out.extend_from_slice(&body);
        return conn.write_all(&out);
    }
    out.extend_from_slice(&body[..1000]);
    conn.write_all(&out)?;
    for part in body[1000..].chunks(66_334) {
        thread::sleep(Duration::from_millis(10));
        conn.write_all(part)?;
    }
    Ok(())
}

/// Append what one read of `conn` gives to `buf`; the connection must not have closed
/// (`while_`: where in the response it was).
fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>, path: &str, while_: &str) {
    let mut chunk = [0u8; 8192];
    let k = conn.read(&mut chunk).expect("read");
    assert!(
        k > 0,
        "{path}: the connection closed {while_} ({} bytes read)",
        buf.len()
    );
    buf.extend_from_slice(&chunk[..k]);
}

/// One GET on a kept-alive client connection: the status line, the header block and the
/// body (exactly Content-Length bytes, or the chunks of a chunked body).
fn get_on(conn: &mut TcpStream, path: &str) -> (String, String, Vec<u8>) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: gateway.test\r\n\r\n").as_bytes())
        .expect("send");
    let mut raw = Vec::new();
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        read_more(conn, &mut raw, path, "before the header ended");
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.lines().next().unwrap_or("").to_string();
    let mut body = raw.split_off(end + 4);
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = Vec::new();
        loop {
            // One chunk: its size line, its bytes and CRLF (the last: "0" CRLF CRLF).
            let line_end = loop {
                if let Some(i) = body.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(conn, &mut body, path, "inside a chunk size");
            };
            let size = usize::from_str_radix(&String::from_utf8_lossy(&body[..line_end]), 16)
                .unwrap_or_else(|e| panic!("{path}: bad chunk size: {e}"));
            while body.len() < line_end + 2 + size + 2 {
                read_more(conn, &mut body, path, "inside a chunk");
            }
            assert_eq!(
                &body[line_end + 2 + size..line_end + 4 + size],
                b"\r\n",
                "{path}"
            );
            decoded.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
            body.drain(..line_end + 4 + size);
            if size == 0 {
                assert!(body.is_empty(), "{path}: bytes past the chunked body");
                return (status, head.to_ascii_lowercase(), decoded);
            }
        }
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{path}: no Content-Length in {head}"));
    while body.len() < len {
        read_more(conn, &mut body, path, "inside the body");
    }
    assert_eq!(body.len(), len, "{path}: bytes past the body");
    (status, head.to_ascii_lowercase(), body)
}

#[test]
fn large_bodies_arrive_whole_and_the_client_connection_stays_usable() {
    let up = Upstream::start();
    let gw = Gateway::start(&up.routes());
    let mut conn = TcpStream::connect(gw.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    for (path, len) in [
        ("/big-at-once", 70_000),
        ("/big-trickle", 200_000),
        ("/cl", 6),
        ("/big-at-once", 70_000),
        ("/big-trickle", 200_000),
        ("/big-close", 70_000),
        ("/big-at-once", 70_000),
    ] {
        let (status, head, body) = get_on(&mut conn, path);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert_eq!(body.len(), len, "{path}");
        if len == 6 {
            assert_eq!(body, b"conn-1", "{path}");
        } else {
            assert!(
                body == pattern(len),
                "{path}: the body differs from what was sent"
            );
            assert!(head.contains("x-upstream-note: big"), "{path}: {head}");
        }
    }
    // One client connection carried them all; the upstream closed one of its
    // connections to end a body, so two.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        gw.metric("gatehouse_requests_total", "status=\"200\""),
        Some(7.0)
    );
}

/// The same bodies to a client over TLS (HTTP/1.1, one connection): the vectored write
/// goes through the TLS stream's own vectored write.
#[test]
fn large_bodies_arrive_whole_over_tls() {
    let up = Upstream::start();
    let dir = scratch_dir("framing-tls");
    let (cert, key) = crate::protocols::self_signed(&dir);
    let tls_port = free_port();
    let gw = Gateway::start_full(
        &up.routes(),
        "",
        &format!(
            "  - address: 127.0.0.1:{tls_port}\n    tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n"
        ),
    );
    let paths = ["/big-at-once", "/big-trickle", "/big-at-once"];
    let mut args = vec![
        "--http1.1".to_string(),
        "--cacert".to_string(),
        cert.clone(),
    ];
    for (i, path) in paths.iter().enumerate() {
        args.push("-o".into());
        args.push(dir.join(format!("body{i}")).display().to_string());
        args.push(format!("https://localhost:{tls_port}{path}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, err) = crate::protocols::curl(&args);
    for (i, path) in paths.iter().enumerate() {
        let got = std::fs::read(dir.join(format!("body{i}"))).unwrap_or_default();
        let len = big_len(path);
        assert_eq!(got.len(), len, "{path}: {err}\n{}", gw.log());
        assert!(
            got == pattern(len),
            "{path}: the body differs from what was sent"
        );
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn full_headers_reach_the_client_and_framing_headers_still_decide_reuse() {
    let up = Upstream::start();
    let gw = Gateway::start(&up.routes());
    let on = |path: &str, conn: u64| {
        let r = gw.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.text(),
            format!("conn-{conn}"),
            "{path}: body or connection"
        );
        // Every header the upstream sent, not only the ones the session keeps.
        assert_eq!(
            r.header("x-upstream-note"),
            Some("kept"),
            "{path}: {:?}",
            r.headers
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("server"), Some("raw-upstream"), "{path}");
    };

    on("/cl", 1);
    on("/cl", 1);
    // A chunked body ends where its last chunk says: whole, and the connection reused.
    on("/chunked", 1);
    on("/cl", 1);
    // `Connection: close` from the upstream: that connection is not used again.
    on("/close", 1);
    on("/cl", 2);
    on("/cl", 2);
    // An HTTP/1.0 answer (no keep-alive): not reused either.
    on("/http10", 2);
    on("/cl", 3);
    on("/chunked", 3);
    on("/cl", 3);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    assert_eq!(
        gw.metric("gatehouse_requests_total", "status=\"200\""),
        Some(11.0)
    );
}

/// A whole answer (the request said `Connection: close`) as text.
fn raw_exchange(addr: SocketAddr, raw: &str) -> String {
    let answer = exchange_raw(addr, raw.as_bytes()).expect("an answer");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn header_names_arrive_canonical_with_every_value_in_order() {
    let rec = Recorder::start(Answer::Ok);
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "services:\n  rec: {{ upstreams: [{{ address: \"{}\" }}] }}\n  \
         up: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: rec, match: {{ path_prefix: /rec }}, service: rec }}\n  \
         - {{ name: up, match: {{ path_prefix: / }}, service: up }}\n",
        rec.addr, up.addr
    ));

    // The request, as the upstream receives it.
    let answer = raw_exchange(
        gw.addr,
        "GET /rec HTTP/1.1\r\nhOsT: gateway.test\r\nX-ClIeNt-Note: one\r\n\
         ACCEPT: */*\r\ncACHE-control: no-cache\r\nx-client-NOTE: two\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = rec.text();
    for line in [
        "\r\nHost: gateway.test\r\n",
        // Pingora title-cases a list of common names, the others go in lower case.
        "\r\nCache-Control: no-cache\r\n",
        "\r\naccept: */*\r\n",
        "\r\nx-client-note: one\r\nx-client-note: two\r\n",
    ] {
        assert!(
            seen.contains(line),
            "{line:?} not in what the upstream got:\n{seen}"
        );
    }
    assert!(
        !seen.contains("ClIeNt") && !seen.contains("hOsT") && !seen.contains("cACHE"),
        "{seen}"
    );

    // The response, as the client receives it.
    let answer = raw_exchange(
        gw.addr,
        "GET /case HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    for line in [
        "\r\nx-mixed-case: one\r\nx-mixed-case: two\r\n",
        "\r\nContent-Type: text/plain\r\n",
        "\r\nContent-Length: 6\r\n",
    ] {
        assert!(
            format!("{head}\r\n").contains(line),
            "{line:?} not in the client's head:\n{head}"
        );
    }
    assert!(!head.contains("MiXeD") && !head.contains("TYPE"), "{head}");
    assert_eq!(body, "conn-1");
}
