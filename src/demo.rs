//! A small echo upstream for `gatehouse demo` and for the integration tests.
//!
//! Plain blocking HTTP/1.1 on std threads (one per connection, keep-alive), so it
//! shares nothing with the gateway's runtime. It answers every request with JSON
//! describing what it received, and understands a few paths that tests steer it with:
//!
//! - `/health` → 200, or 503 while [`EchoServer::set_healthy`] is false
//! - `…/status/NNN` → that status
//! - `…/sleep/MS` → answers after MS milliseconds
//! - `…/etag/…` → with `ETag: "v1"` and a fixed `Last-Modified` (validators for caches);
//!   `304` without a body when the request's `If-None-Match` names `"v1"`
//!
//! It keeps the times of its `/health` requests ([`EchoServer::health_checks`]) and a
//! line per other request ([`EchoServer::seen`]: method, target, body length, and
//! whether it was a mirrored copy), the last 1,000 of each.
//!
//! Meant for loopback demos and tests, not for production traffic.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

struct Shared {
    name: String,
    healthy: AtomicBool,
    stopped: AtomicBool,
    /// When non-zero, every request (but `/health`) gets this status.
    forced_status: AtomicU16,
    /// When set, requests are held (up to 30 s) instead of answered.
    hang: AtomicBool,
    requests: AtomicU64,
    conns: Mutex<Vec<TcpStream>>,
    health_checks: Mutex<std::collections::VecDeque<std::time::Instant>>,
    seen: Mutex<std::collections::VecDeque<String>>,
}

/// Keep the last 1,000 of a log.
fn push_bounded<T>(log: &Mutex<std::collections::VecDeque<T>>, item: T) {
    if let Ok(mut l) = log.lock() {
        if l.len() >= 1000 {
            l.pop_front();
        }
        l.push_back(item);
    }
}

/// A running echo server; stops (and closes its connections) on drop.
pub struct EchoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Bind `addr` (use port 0 for a free port) and serve in background threads.
    pub fn start(name: &str, addr: &str) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            stopped: AtomicBool::new(false),
            forced_status: AtomicU16::new(0),
            hang: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            health_checks: Mutex::default(),
            seen: Mutex::default(),
        });
        let s = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("echo-{name}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    if let Ok(clone) = conn.try_clone() {
                        if let Ok(mut list) = s.conns.lock() {
                            list.push(clone);
                        }
                    }
                    let s = s.clone();
                    let _ = thread::Builder::new()
                        .name("echo-conn".into())
                        .spawn(move || serve(conn, &s));
                }
            })?;
        Ok(EchoServer {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// When `/health` was asked (the last 1,000 times).
    pub fn health_checks(&self) -> Vec<std::time::Instant> {
        self.shared
            .health_checks
            .lock()
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Requests other than `/health` (the last 1,000): `METHOD TARGET BODY_BYTES`, with
    /// ` mirror` appended for a mirrored copy.
    pub fn seen(&self) -> Vec<String> {
        self.shared
            .seen
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What `/health` answers: 200 when true, 503 when false.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Answer every request (but `/health`) with `status`, or normally with `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared
            .forced_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Hold requests without answering (up to 30 s each) while true.
    pub fn set_hanging(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::SeqCst);
    }

    /// Stop accepting, close every open connection, and release the port.
    pub fn stop(&mut self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees `stopped` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        if let Ok(mut list) = self.shared.conns.lock() {
            for c in list.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(conn: TcpStream, s: &Shared) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut out = write_half;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers
                    .entry(k.trim().to_ascii_lowercase())
                    .and_modify(|old: &mut String| {
                        old.push_str(", ");
                        old.push_str(v.trim());
                    })
                    .or_insert_with(|| v.trim().to_string());
            }
        }
        let body = match read_body(&mut reader, &headers) {
            Some(b) => b,
            None => return,
        };
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        s.requests.fetch_add(1, Ordering::SeqCst);
        let path = target.split('?').next().unwrap_or("/");
        let mut status = 200u16;
        let mut segs = path.split('/').peekable();
        while let Some(seg) = segs.next() {
            match (seg, segs.peek().and_then(|n| n.parse::<u64>().ok())) {
                ("status", Some(code)) if (200..600).contains(&code) => status = code as u16,
                ("sleep", Some(ms)) => thread::sleep(Duration::from_millis(ms.min(60_000))),
                _ => {}
            }
        }
        let etag_path = path.split('/').any(|seg| seg == "etag");
        if path == "/health" {
            push_bounded(&s.health_checks, std::time::Instant::now());
            if !s.healthy.load(Ordering::SeqCst) {
                status = 503;
            }
        } else {
            push_bounded(
                &s.seen,
                format!(
                    "{method} {target} {}{}",
                    body.len(),
                    if headers.contains_key("x-gatehouse-mirror") {
                        " mirror"
                    } else {
                        ""
                    }
                ),
            );
            if etag_path
                && status == 200
                && headers
                    .get("if-none-match")
                    .is_some_and(|v| v.contains("\"v1\""))
            {
                status = 304;
            }
            let forced = s.forced_status.load(Ordering::SeqCst);
            if forced != 0 {
                status = forced;
            }
            let start = std::time::Instant::now();
            while s.hang.load(Ordering::SeqCst)
                && !s.stopped.load(Ordering::SeqCst)
                && start.elapsed() < Duration::from_secs(30)
            {
                thread::sleep(Duration::from_millis(10));
            }
        }
        let payload = serde_json::json!({
            "upstream": s.name,
            "method": method,
            "path": target,
            "headers": headers,
            "body_bytes": body.len(),
        });
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let close = headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        // The standard reason phrase: the gateway passes a non-standard one through.
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Unknown");
        let validators = if etag_path {
            "etag: \"v1\"\r\nlast-modified: Tue, 01 Dec 2026 00:00:00 GMT\r\n"
        } else {
            ""
        };
        let body = if status == 304 { Vec::new() } else { body };
        let length = if status == 304 {
            String::new()
        } else {
            format!("content-length: {}\r\n", body.len())
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{length}x-upstream: {}\r\n{validators}{}\r\n",
            s.name,
            if close { "connection: close\r\n" } else { "" }
        );
        let send_body = method != "HEAD";
        if out.write_all(head.as_bytes()).is_err()
            || (send_body && out.write_all(&body).is_err())
            || out.flush().is_err()
            || close
        {
            return;
        }
    }
}

fn read_body(reader: &mut impl BufRead, headers: &BTreeMap<String, String>) -> Option<Vec<u8>> {
    if let Some(len) = headers.get("content-length") {
        let len: usize = len.parse().ok()?;
        let mut body = vec![0; len.min(64 << 20)];
        reader.read_exact(&mut body).ok()?;
        return Some(body);
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if n == 0 {
                // trailers until the blank line
                loop {
                    let mut t = String::new();
                    reader.read_line(&mut t).ok()?;
                    if t.trim().is_empty() {
                        return Some(body);
                    }
                }
            }
            let start = body.len();
            body.resize(start + n, 0);
            reader.read_exact(&mut body[start..]).ok()?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).ok()?;
            if body.len() > 64 << 20 {
                return None;
            }
        }
    }
    Some(Vec::new())
}
