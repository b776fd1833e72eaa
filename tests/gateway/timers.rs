//! Long timeouts (5 s and more) run on the patched `pingora-timeout`'s per-thread coarse
//! timers (vendor/pingora-timeout/PATCHES.md): through the gateway (an upstream read,
//! a pooled connection's idle wait) and the timers themselves.

use crate::common::*;
use pingora_timeout::coarse;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A coarse timer fires no earlier than set and at most a resolution (0.1 s) later; the
/// bound here leaves room for a loaded CI machine.
const LATE: Duration = Duration::from_millis(900);

/// The default: one worker thread on a single-threaded runtime, where coarse timers are
/// used (the other tests run two work-stealing threads, where Tokio's timer is).
const ONE_THREAD: &str = "  threads: 1\n";

#[test]
fn a_long_read_timeout_answers_504_on_time() {
    let up = upstreams(1);
    let gw = Gateway::start_with(&format!(
        "services:\n  s:\n    timeouts: {{ read: 5s }}\n    retries: {{ attempts: 0 }}\n    upstreams:\n{}routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        upstream_list(&up, &[])
    ), ONE_THREAD);
    // A pooled connection first, so the timed request also cancels an idle timer.
    assert_eq!(gw.get("/warm").status, 200);
    let started = Instant::now();
    let r = gw.get("/sleep/9000");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(5) + LATE,
        "read timeout of 5 s answered after {took:?}"
    );
}

#[test]
fn a_long_idle_timeout_closes_the_pooled_connection_on_time() {
    // A one-connection upstream that answers one request with keep-alive, then measures
    // how long the gateway keeps the idle connection open.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let upstream = std::thread::spawn(move || -> Result<Duration, String> {
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a request".into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .map_err(|e| e.to_string())?;
        let answered = Instant::now();
        match conn.read(&mut buf) {
            Ok(0) => Ok(answered.elapsed()),
            Ok(_) => Err("a second request on the pooled connection".into()),
            Err(e) => Err(format!("still open after 20 s: {e}")),
        }
    });
    let gw = Gateway::start_with(&format!(
        "services:\n  s:\n    timeouts: {{ idle: 5s }}\n    upstreams: [{{ address: \"{addr}\" }}]\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n"
    ), ONE_THREAD);
    assert_eq!(gw.get("/").status, 200);
    let idle = upstream
        .join()
        .expect("upstream thread")
        .expect("upstream saw the close");
    assert!(
        idle >= Duration::from_secs(5) - Duration::from_millis(50)
            && idle < Duration::from_secs(5) + LATE,
        "idle timeout of 5 s closed the pooled connection after {idle:?}"
    );
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn coarse_timers_fire_no_earlier_than_set_and_within_a_resolution() {
    let rt = current_thread();
    rt.block_on(async {
        let started = Instant::now();
        let sleeps: Vec<_> = [300u64, 300, 450, 600, 600, 750]
            .into_iter()
            .map(|ms| {
                tokio::spawn(async move {
                    coarse::sleep(Duration::from_millis(ms)).await;
                    (ms, started.elapsed())
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(coarse::pending_on_this_thread(), 6);
        for s in sleeps {
            let (ms, took) = s.await.expect("task");
            let set = Duration::from_millis(ms);
            assert!(
                took >= set && took < set + LATE,
                "{ms} ms fired after {took:?}"
            );
        }
        assert_eq!(coarse::pending_on_this_thread(), 0);
    });
}

#[test]
fn cancelled_coarse_timers_free_their_slots() {
    let rt = current_thread();
    rt.block_on(async {
        for _ in 0..10_000 {
            // Registered (polled once), then dropped as the other branch completes.
            tokio::select! {
                biased;
                _ = coarse::sleep(Duration::from_secs(60)) => panic!("fired early"),
                _ = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(coarse::pending_on_this_thread(), 0);
        assert!(coarse::slots_on_this_thread() <= 2, "slots are reused");
        // A timeout wrapped around work that finishes: Ok, and nothing left behind.
        let r = pingora_timeout::tokio_timeout(Duration::from_secs(60), async { 7 }).await;
        assert_eq!(r.ok(), Some(7));
        assert_eq!(coarse::pending_on_this_thread(), 0);
    });
}

#[test]
fn coarse_timers_survive_their_scanner_runtime_being_dropped() {
    // The first runtime starts this thread's scanning task and is then dropped with it;
    // a second runtime on the same thread must get a scanner of its own.
    let first = current_thread();
    first.block_on(async {
        let t = Instant::now();
        coarse::sleep(Duration::from_millis(200)).await;
        assert!(t.elapsed() >= Duration::from_millis(200));
    });
    drop(first);
    let second = current_thread();
    second.block_on(async {
        let t = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            coarse::sleep(Duration::from_millis(200)),
        )
        .await
        .expect("a coarse timer on a new runtime fires");
        assert!(t.elapsed() >= Duration::from_millis(200));
    });
}

#[test]
fn coarse_sleep_falls_back_to_tokio_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let t = Instant::now();
        tokio::spawn(coarse::sleep(Duration::from_millis(200)))
            .await
            .expect("task");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(200) + LATE);
        assert_eq!(coarse::slots_on_this_thread(), 0, "no coarse slot used");
    });
}
