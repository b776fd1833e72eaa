//! Reload under load, bad reloads, binary upgrades and graceful shutdown.

use crate::common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A bounded client loop on loopback: requests (paced at most one per millisecond) until
/// stopped, or 60 s / 60,000 requests, recording every answer other than 200.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    handle: Option<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut failures = Vec::new();
            let mut n = 0;
            while !s.load(Ordering::SeqCst)
                && start.elapsed() < Duration::from_secs(60)
                && n < 60_000
            {
                n += 1;
                match request(addr, "GET", path, &[], b"") {
                    Ok(r) if r.status == 200 => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(format!("status {}: {}", r.status, r.text())),
                    Err(e) => failures.push(format!("error: {e}")),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            failures
        });
        Load {
            stop,
            ok,
            handle: Some(handle),
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Wait until `n` more requests succeeded (proof the loop is running).
    fn wait_progress(&self, n: usize) {
        let target = self.ok() + n;
        assert!(
            wait_until(Duration::from_secs(10), || self.ok() >= target),
            "load loop stalled"
        );
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self.handle.take().unwrap().join().unwrap();
        (self.ok(), failures)
    }
}

fn body(up: &[EchoServer], weights: [u32; 2], extra_route: &str) -> String {
    format!(
        "services:\n  s:\n    balance: weighted\n    upstreams:\n{}routes:\n  - {{ name: main, match: {{ path_prefix: /v1 }}, service: s }}\n  - {{ name: {extra_route}, match: {{ path_prefix: /{extra_route} }}, service: s }}\n",
        upstream_list(up, &weights)
    )
}

fn reloads_ok(gw: &Gateway) -> f64 {
    gw.metric("gatehouse_config_reloads_total", "result=\"ok\"")
        .unwrap_or(0.0)
}

#[test]
fn twenty_reloads_under_load_drop_nothing_and_take_effect() {
    let up = upstreams(2);
    let gw = Gateway::start(&body(&up, [3, 1], "alpha"));
    let load = Load::start(gw.addr, "/v1/x");
    load.wait_progress(20);
    for i in 0..20 {
        let (weights, route) = if i % 2 == 0 {
            ([1, 3], "beta")
        } else {
            ([3, 1], "alpha")
        };
        gw.rewrite(&body(&up, weights, route));
        gw.signal("-HUP");
        assert!(
            wait_until(Duration::from_secs(10), || reloads_ok(&gw)
                >= (i + 1) as f64),
            "reload {i} applied; log:\n{}",
            gw.log()
        );
        // the new route answers, the one it replaced is gone
        let gone = if route == "beta" { "/alpha" } else { "/beta" };
        assert_eq!(gw.get(&format!("/{route}")).status, 200);
        assert_eq!(gw.get(gone).status, 404);
    }
    load.wait_progress(20);
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok > 40, "load ran ({ok} requests)");
    // last config: weights 3:1 (i = 19 → alpha) — the split follows the reloaded weights
    let a = (0..40).filter(|_| gw.get("/v1").upstream() == "a").count();
    assert_eq!(a, 30, "weights 3:1 after the last reload");
}

#[test]
fn bad_reload_keeps_the_old_config_and_counts_the_error() {
    let up = upstreams(2);
    let gw = Gateway::start(&body(&up, [1, 1], "alpha"));
    gw.rewrite("services:\n  s: { upstreams: [] }\nroutes:\n  - { name: x, match: { path_prefix: /x }, service: nope }\n");
    gw.signal("-HUP");
    assert!(wait_until(Duration::from_secs(10), || {
        gw.metric("gatehouse_config_reloads_total", "result=\"error\"") == Some(1.0)
    }));
    assert_eq!(gw.get("/alpha").status, 200, "old routes still serve");
    assert_eq!(gw.get("/x").status, 404);
    let log = gw.log();
    assert!(
        log.contains("routes[0].service: unknown service \"nope\""),
        "{log}"
    );

    // The admin endpoint reports the errors too.
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 422);
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains("services.s.upstreams: at least one upstream"),
        "{errors}"
    );

    // A good file then applies, via the admin endpoint.
    gw.rewrite(&body(&up, [1, 1], "gamma"));
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.get("/gamma").status, 200);
}

#[test]
fn reload_keeps_health_and_reports_settings_needing_an_upgrade() {
    let mut up = upstreams(2);
    let hc = "    health_check: { type: http, path: /health, interval: 100ms, timeout: 200ms, healthy_after: 1, unhealthy_after: 1 }\n";
    let with_hc = |route: &str, ups: &[EchoServer]| {
        format!(
            "services:\n  s:\n{hc}    upstreams:\n{}routes:\n  - {{ name: {route}, match: {{ path_prefix: / }}, service: s }}\n",
            upstream_list(ups, &[])
        )
    };
    let gw = Gateway::start(&with_hc("one", &up));
    let b = up[1].addr().to_string();
    up[1].stop();
    assert!(wait_until(Duration::from_secs(5), || gw
        .upstream_healthy("s", &b)
        == Some(false)));
    // A reload that changes only a route keeps the upstream's learned health: no traffic
    // goes to the dead upstream after the swap.
    gw.rewrite(&with_hc("two", &up));
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        gw.upstream_healthy("s", &b),
        Some(false),
        "health state carried over"
    );
    assert!((0..10).all(|_| gw.get("/").upstream() == "a"));

    // Changing the listen address is reported as needing an upgrade; the rest applies.
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let moved = text.replacen(
        &format!("127.0.0.1:{}", gw.addr.port()),
        &format!("127.0.0.1:{}", free_port()),
        1,
    );
    write_atomically(&gw.config, &moved.replace("name: two", "name: three"));
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["needs_upgrade"][0], "listen");
    assert_eq!(gw.status()["routes"][0]["name"], "three");
    assert_eq!(gw.get("/").status, 200, "still on the old socket");
}

#[test]
fn compression_turned_on_by_reload_waits_for_an_upgrade() {
    // No route compresses at start, so the proxy sets up no compression module; a
    // reload that turns compression on says so, applies the rest and keeps answering.
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let path = format!("/{}", "x".repeat(2000));
    let gzip = [("accept-encoding", "gzip")];
    let r = request(gw.addr, "GET", &path, &gzip, b"").unwrap();
    assert_eq!((r.status, r.header("content-encoding")), (200, None));

    let on = one_route(&up[0]).replace(
        "{ name: r, match: { path_prefix: / }, service: s }",
        "{ name: zipped, match: { path_prefix: / }, service: s, compression: true }",
    );
    assert!(on.contains("compression: true"), "{on}");
    gw.rewrite(&on);
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["needs_upgrade"],
        serde_json::json!(["routes[].compression (off for every route at start)"])
    );
    assert_eq!(gw.status()["routes"][0]["name"], "zipped");
    let r = request(gw.addr, "GET", &path, &gzip, b"").unwrap();
    assert_eq!((r.status, r.header("content-encoding")), (200, None));
    assert!(gw.log().contains("routes[].compression"), "{}", gw.log());
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let up = upstreams(1);
    let mut gw = Gateway::start(&one_route(&up[0]));
    let addr = gw.addr;
    let slow = std::thread::spawn(move || request(addr, "GET", "/sleep/800", &[], b""));
    assert!(wait_until(Duration::from_secs(5), || up[0].requests() == 1));
    let t = Instant::now();
    gw.signal("-TERM");
    let r = slow.join().unwrap().expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let st = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits after grace + timeout");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "exit took {:?}",
        t.elapsed()
    );
    let _ = st;
}

#[test]
fn a_connection_accepted_before_a_graceful_stop_still_gets_its_first_answer() {
    use std::io::{Read, Write};
    // Around a graceful upgrade the old process stops accepting while clients are
    // connecting: a connection it accepted whose request was still on the way must be
    // answered (a client may not retry a request on a fresh connection), while an idle
    // kept-alive connection is closed (clients retry on those).
    let up = upstreams(1);
    // A grace period that a loaded machine cannot outlast between the signal and the
    // answer (the shared header's 1 s is for fast tests).
    let mut gw = Gateway::start_edited(&one_route(&up[0]), |h| {
        h.replace("grace_period: 1s", "grace_period: 4s")
    });
    let mut kept = std::net::TcpStream::connect(gw.addr).expect("connect");
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(keepalive_get(&mut kept, "/"), 200);
    let mut fresh = std::net::TcpStream::connect(gw.addr).expect("connect");
    fresh
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // Let the gateway accept it and start reading its (not yet sent) request.
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("-TERM");
    // The idle keep-alive connection closes once the stop is broadcast...
    let mut rest = Vec::new();
    kept.read_to_end(&mut rest)
        .expect("the idle connection is closed, not left to time out");
    assert!(rest.is_empty(), "nothing more on the idle connection");
    // ...the listeners are shut by then; give the service time to finish its clean-up.
    std::thread::sleep(Duration::from_millis(300));
    fresh
        .write_all(b"GET / HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    fresh
        .read_to_end(&mut answer)
        .expect("answered, then closed");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "answer: {answer:?}");
    assert!(
        answer.contains("\r\nconnection: close\r\n"),
        "no keep-alive while stopping: {answer:?}"
    );
    assert!(
        gw.wait_exit(Duration::from_secs(10)).is_some(),
        "exits after its grace period"
    );
}

/// Daemonized gatehouse processes started from one config, killed at the end.
struct Daemons {
    pid_file: std::path::PathBuf,
    config: String,
    seen: Vec<u32>,
}

impl Daemons {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for pid in self.seen.iter().copied().chain(self.pid()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // and any process of this test's config the pid file did not name
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.config])
            .status();
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn three_binary_upgrades_under_load_fail_no_request() {
    let up = upstreams(1);
    let dir = scratch_dir("upgrade");
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!(
            "{}  error_log: {}/error.log\n{}",
            // Production-like drain times (the shared header's 1 s + 1 s is for fast tests):
            // requests the old process accepted last must finish even on a loaded machine.
            header_yaml(&dir, port, admin_port, "")
                .replace("grace_period: 1s", "grace_period: 3s")
                .replace("shutdown_timeout: 1s", "shutdown_timeout: 3s"),
            dir.display(),
            one_route(&up[0])
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let mut daemons = Daemons {
        pid_file: dir.join("gatehouse.pid"),
        config: cfg.clone(),
        seen: vec![],
    };
    let st = Command::new(BIN).args(["-c", &cfg, "-d"]).status().unwrap();
    assert!(st.success());
    assert!(wait_until(Duration::from_secs(10), || daemons
        .pid()
        .is_some_and(alive)));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || request(
        addr,
        "GET",
        "/",
        &[],
        b""
    )
    .is_ok()));

    let load = Load::start(addr, "/");
    load.wait_progress(10);
    for round in 0..3 {
        let old = daemons.pid().unwrap();
        daemons.seen.push(old);
        // The new process waits on upgrade_sock for the listening sockets...
        let mut new = Command::new(BIN)
            .args(["-c", &cfg, "-u", "-d"])
            .spawn()
            .unwrap();
        // ...which the old one sends on SIGQUIT.
        std::thread::sleep(Duration::from_millis(200)); // let the new process bind upgrade_sock
        send_signal(old, "-QUIT");
        assert!(
            new.wait().unwrap().success(),
            "upgrade {round}: new process took over"
        );
        assert!(
            wait_until(Duration::from_secs(10), || daemons
                .pid()
                .is_some_and(|p| p != old && alive(p))),
            "upgrade {round}: pid file names the new process"
        );
        // the admin listener moved too
        assert_eq!(
            request(admin, "GET", "/healthz", &[], b"").unwrap().status,
            200
        );
        load.wait_progress(10);
        assert!(
            wait_until(Duration::from_secs(15), || !alive(old)),
            "upgrade {round}: old process exits after its grace period"
        );
    }
    let (ok, failures) = load.finish();
    // Stop the daemons while the pid file still names the last one.
    drop(daemons);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        failures.first()
    );
}

#[test]
fn reload_keeps_rate_limit_buckets_and_breaker_state() {
    let up = upstreams(2);
    // The second config also changes the service (its read timeout), so the service is
    // rebuilt and the breaker must travel with the upstream's state.
    let cfg = |route: &str| {
        let read = if route == "one" { "10s" } else { "20s" };
        format!(
            "rate_limits:\n  policies:\n    few: {{ key: client_ip, limit: 3, window: 1m }}\nservices:\n  s:\n    circuit_breaker: {{ failures: 2, open_for: 1m }}\n    retries: {{ attempts: 1 }}\n    timeouts: {{ read: {read} }}\n    upstreams:\n{}routes:\n  - {{ name: {route}, match: {{ path_prefix: /limited }}, service: s, rate_limit: [few] }}\n  - {{ name: open, match: {{ path_prefix: / }}, service: s }}\n",
            upstream_list(&up, &[])
        )
    };
    let gw = Gateway::start(&cfg("one"));
    for _ in 0..3 {
        assert_eq!(gw.get("/limited").status, 200);
    }
    assert_eq!(gw.get("/limited").status, 429);
    // open b's breaker
    up[1].set_failing(Some(500));
    for _ in 0..6 {
        let _ = gw.get("/x");
    }
    let b = format!("upstream=\"{}\"", up[1].addr());
    assert_eq!(gw.metric("gatehouse_circuit_state", &b), Some(1.0));

    gw.rewrite(&cfg("renamed"));
    let r = request(gw.admin, "POST", "/admin/reload", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.status()["routes"][0]["name"], "renamed");
    assert_eq!(
        gw.get("/limited").status,
        429,
        "the bucket survived the reload"
    );
    assert_eq!(
        gw.metric("gatehouse_circuit_state", &b),
        Some(1.0),
        "the breaker too"
    );
}

/// Write-type system calls the process has made so far (`syscw` in `/proc/PID/io`).
fn write_syscalls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("syscw in /proc/PID/io")
}

/// One GET on a kept-alive connection; the status (responses carry Content-Length).
fn keepalive_get(s: &mut std::net::TcpStream, target: &str) -> u16 {
    use std::io::{Read, Write};
    s.write_all(format!("GET {target} HTTP/1.1\r\nhost: gateway.test\r\n\r\n").as_bytes())
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    s.read_exact(&mut vec![0; len]).expect("response body");
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

#[test]
fn proxied_requests_do_not_wake_the_timer_driver() {
    // Each request registers an upstream read timeout. Unless a shorter timer is
    // pending, Tokio's time driver is woken for it with an eventfd write (~1 per request
    // when requests come one at a time); the gateway keeps a 1 s tick pending instead.
    // One worker thread (with more, Pingora's per-thread runtimes wake each other for
    // connections handed across them), access log off: nothing else to write.
    let up = upstreams(1);
    let gw = Gateway::start_with(
        &one_route(&up[0]),
        "  threads: 1\n  access_log: { format: off }\n",
    );
    let mut conn = std::net::TcpStream::connect(gw.addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    // Warm-up: the worker thread has served requests, the upstream connection is pooled.
    for _ in 0..10 {
        assert_eq!(keepalive_get(&mut conn, "/warm"), 200);
    }
    let before = write_syscalls(gw.pid());
    for i in 0..200 {
        assert_eq!(keepalive_get(&mut conn, &format!("/n/{i}")), 200);
    }
    let writes = write_syscalls(gw.pid()) - before;
    assert!(
        writes < 20,
        "{writes} write system calls for 200 proxied requests (see {})",
        gw.dir.display()
    );
}
