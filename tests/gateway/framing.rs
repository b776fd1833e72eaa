//! Upstream response framing and connection reuse after Pingora hands the response header
//! over (the `read_resp_header_parts` patch, README "Pingora patches": the upstream
//! session keeps only the status, version and framing headers). The client gets every
//! header the upstream sent; a body delimited by Content-Length or chunked arrives
//! whole; a connection is reused unless the upstream said `Connection: close` or answered
//! in HTTP/1.0 (even when it keeps the socket open, as the raw upstream here does).

use crate::common::*;
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
            // Never closes: the gateway must not reuse a connection on its own account.
            if conn.write_all(answer(&path, n).as_bytes()).is_err() {
                return;
            }
        }
    }
}

#[test]
fn full_headers_reach_the_client_and_framing_headers_still_decide_reuse() {
    let up = Upstream::start();
    let gw = Gateway::start(&format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        up.addr
    ));
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
