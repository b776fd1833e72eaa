//! The keep-alive pool of upstream connections (the `idle.rs` patch of Pingora's
//! connector, README "Pingora patches"): connections are reused; one the upstream
//! closes is closed by the gateway too and never used for a request; the idle timeout
//! and the pool's size close the rest. The upstream here is a raw HTTP/1.1 server that
//! numbers its connections and records when the gateway closes each one.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    accepted: AtomicU64,
    /// Close (FIN) each connection after its next response...
    close_after_response: AtomicBool,
    /// ...this long after it (the connection is idle in the gateway's pool by then).
    close_delay_ms: AtomicU64,
    /// Hold each response this long (to make the gateway open many connections).
    delay_ms: AtomicU64,
    /// Per connection: when the upstream closed it (if it did), when the gateway did.
    closes: Mutex<Vec<(u64, Option<Instant>, Instant)>>,
}

/// An HTTP/1.1 upstream whose answers name the connection they came on (`conn-N`).
struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let n = st.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let st = st.clone();
                thread::spawn(move || serve(conn, n, &st));
            }
        });
        Upstream { addr, state }
    }

    fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections the gateway closed: (number, upstream closed first at, gateway at).
    fn closed(&self) -> Vec<(u64, Option<Instant>, Instant)> {
        self.state.closes.lock().expect("lock").clone()
    }
}

fn serve(mut conn: TcpStream, n: u64, st: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut we_closed = None;
    loop {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
        if we_closed.is_some() {
            // Bytes after our FIN: a request on a closed connection (never expected).
            buf.clear();
            continue;
        }
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let delay = st.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                thread::sleep(Duration::from_millis(delay));
            }
            let body = format!("conn-{n}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Decided before answering: the test may change the flag once it has the answer.
            let close = st.close_after_response.load(Ordering::SeqCst);
            if conn.write_all(resp.as_bytes()).is_err() {
                return;
            }
            if close {
                let delay = st.close_delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
                we_closed = Some(Instant::now());
            }
        }
    }
    st.closes
        .lock()
        .expect("lock")
        .push((n, we_closed, Instant::now()));
}

fn config(up: &Upstream, idle: &str) -> String {
    format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}], timeouts: {{ idle: {idle} }} }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        up.addr
    )
}

#[test]
fn upstream_connections_are_reused_and_closed_when_the_upstream_closes_them() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, "30s"));

    // Sequential requests: one upstream connection, reused every time.
    for i in 0..20 {
        let r = gw.get(&format!("/seq/{i}"));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "conn-1", "request {i} on the first connection");
    }
    assert_eq!(up.accepted(), 1);

    // The upstream closes its connection 200 ms after the next answer, while it sits
    // in the gateway's pool: the gateway closes its end too without a request to
    // notice it (the sweep), and the next request goes on a new connection, never on
    // the closed one.
    up.state.close_delay_ms.store(200, Ordering::SeqCst);
    up.state.close_after_response.store(true, Ordering::SeqCst);
    assert_eq!(gw.get("/last-on-1").text(), "conn-1");
    up.state.close_after_response.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(5), || up
            .closed()
            .iter()
            .any(|c| c.0 == 1)),
        "the gateway never closed the connection the upstream closed"
    );
    let (_, ours, theirs) = up.closed()[0];
    let lag = theirs.duration_since(ours.expect("the upstream closed first"));
    assert!(
        lag < Duration::from_millis(3500),
        "closed {lag:?} after the upstream"
    );
    for i in 0..5 {
        let r = gw.get(&format!("/after/{i}"));
        assert_eq!(r.status, 200, "request {i} after the close");
        assert_eq!(r.text(), "conn-2");
    }

    // Closed by the upstream right after its answer, or 100 ms later while pooled, and
    // asked for again before a sweep could see it: the gateway finds the EOF when it
    // takes the connection and opens another; the client sees nothing.
    for i in 0..6 {
        let late = i % 2 == 1;
        up.state
            .close_delay_ms
            .store(if late { 100 } else { 0 }, Ordering::SeqCst);
        up.state.close_after_response.store(true, Ordering::SeqCst);
        assert_eq!(gw.get(&format!("/closing/{i}")).status, 200);
        up.state.close_after_response.store(false, Ordering::SeqCst);
        if late {
            thread::sleep(Duration::from_millis(200));
        }
        let r = gw.get(&format!("/next/{i}"));
        assert_eq!(r.status, 200, "the request right after upstream close {i}");
        assert_eq!(r.text(), format!("conn-{}", i + 3), "a new connection");
    }
    assert_eq!(up.accepted(), 8);
    assert_eq!(
        gw.metric("gatehouse_requests_total", "status=\"200\""),
        Some(38.0),
        "every request answered 200, none failed"
    );
}

#[test]
fn idle_upstream_connections_close_after_the_idle_timeout_and_beyond_the_pool_size() {
    let up = Upstream::start();
    let gw = Gateway::start(&config(&up, "300ms"));

    // Idle timeout: the connection is closed by the gateway some 300 ms after its
    // request (the sweep runs every second), and a later request opens a new one.
    assert_eq!(gw.get("/one").text(), "conn-1");
    let released = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !up.closed().is_empty()),
        "an idle connection outlived its idle timeout"
    );
    let after = up.closed()[0].2.duration_since(released);
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(3500),
        "closed {after:?} after release (idle timeout 300 ms, a sweep every second)"
    );
    assert_eq!(gw.get("/two").text(), "conn-2");

    // The pool holds 128 idle connections per thread (Pingora's default size; one
    // thread here): with 140 requests at once on 140 upstream connections, the 12
    // beyond it are closed as they are released, the 128 others stay until their idle
    // timeout.
    let up = Upstream::start();
    let gw = Gateway::start_with(&config(&up, "30s"), "  threads: 1\n");
    up.state.delay_ms.store(400, Ordering::SeqCst);
    let clients: Vec<_> = (0..140)
        .map(|i| {
            let addr = gw.addr;
            thread::spawn(move || get(addr, &format!("/many/{i}")).status)
        })
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(up.accepted(), 140);
    assert!(
        wait_until(Duration::from_secs(5), || up.closed().len() >= 12),
        "only {} of the connections beyond the pool were closed",
        up.closed().len()
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(up.closed().len(), 12, "the pool keeps 128");
    // The kept ones are reused (no new connection for sequential requests).
    up.state.delay_ms.store(0, Ordering::SeqCst);
    for i in 0..10 {
        assert_eq!(gw.get(&format!("/again/{i}")).status, 200);
    }
    assert_eq!(up.accepted(), 140);
}
