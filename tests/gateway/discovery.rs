//! Service discovery against a real DNS server (dnsmasq on a loopback port): every A
//! record of a name is a member, SRV targets with their priorities and weights, changes
//! followed under load without a failed request, members that leave drain, the last good
//! set kept when DNS is gone; and draining on a reload.

use crate::common::*;
use crate::dns::Dns;
use crate::pki::Pki;
use crate::tls_upstream::{TlsOptions, TlsUpstream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Echo servers on the same port of several loopback addresses (A records carry no port).
fn on_ips(names: &[&str], ips: &[&str]) -> (u16, Vec<EchoServer>) {
    'again: loop {
        let first = EchoServer::start(names[0], &format!("{}:0", ips[0])).expect("bind");
        let port = first.addr().port();
        let mut servers = vec![first];
        for (name, ip) in names.iter().zip(ips).skip(1) {
            match EchoServer::start(name, &format!("{ip}:{port}")) {
                Ok(s) => servers.push(s),
                Err(_) => continue 'again,
            }
        }
        return (port, servers);
    }
}

/// Which upstreams answered `n` requests.
fn spread(gw: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = gw.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        *seen.entry(r.upstream()).or_default() += 1;
    }
    seen
}

/// Requests in a loop from `threads` threads until stopped (at most 20 s); counts
/// failures.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, path: &'static str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, failures, done) = (stop.clone(), failures.clone(), done.clone());
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(20);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                        match request(addr, "GET", path, &[], b"") {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => {
                                eprintln!("load: {} {}", r.status, r.text());
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            done,
            threads,
        }
    }

    /// Stop; (requests, failures).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.done.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

fn service_status(gw: &Gateway, name: &str) -> serde_json::Value {
    gw.status()["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn a_records_are_members_and_changes_move_traffic_under_load() {
    if !Dns::available() {
        return;
    }
    let dir = scratch_dir("dns-a");
    let dns = Dns::start(&dir, 1);
    let (port, ups) = on_ips(&["a", "b", "c"], &["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    dns.set_a("users.test", &["127.0.0.2", "127.0.0.3"]);
    let gw = Gateway::start_with(
        &format!(
            "services:\n  users:\n    upstreams: [{{ address: \"users.test:{port}\" }}]\n    \
             resolve_interval: 1s\n    drain_timeout: 10s\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: users }}\n"
        ),
        &format!("  resolver: [\"{}\"]\n", dns.addr),
    );
    let seen = spread(&gw, "/x", 10);
    assert_eq!(seen.get("a"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");
    let st = service_status(&gw, "users");
    let members = st["upstreams"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{st}");
    assert!(members
        .iter()
        .all(|m| m["source"] == "A" && m["resolved_from"] == "users.test"));
    assert!(st["discovery"]["refreshed"].is_string(), "{st}");

    // Under load: a slow request is on a or b when both leave; it still completes.
    let load = Load::start(gw.addr, "/x", 3);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || request(addr, "GET", "/sleep/1500", &[], b""));
    std::thread::sleep(Duration::from_millis(200));
    dns.set_a("users.test", &["127.0.0.4"]);
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/x").upstream() == "c"),
        "traffic did not move to the new member; gateway log:\n{}",
        gw.log()
    );
    let slow = slow.join().expect("thread").expect("slow request");
    assert_eq!(slow.status, 200, "a request on a member that left finishes");
    assert!(["a", "b"].contains(&slow.upstream().as_str()));
    // Then DNS goes away: the last good set keeps serving.
    let errors_before = gw
        .metric("gatehouse_discovery_errors_total", "service=\"users\"")
        .unwrap_or(0.0);
    drop(dns);
    std::thread::sleep(Duration::from_secs(3));
    let (done, failures) = load.finish();
    assert_eq!(
        failures,
        0,
        "{failures} of {done} requests failed; gateway log:\n{}",
        gw.log()
    );
    assert!(done > 50, "the load ran ({done} requests)");
    let seen = spread(&gw, "/x", 5);
    assert_eq!(seen.get("c"), Some(&5), "{seen:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            gw.metric("gatehouse_discovery_errors_total", "service=\"users\"")
                .unwrap_or(0.0)
                > errors_before
        }),
        "failed lookups are counted"
    );
    assert!(service_status(&gw, "users")["discovery"]["last_error"].is_string());
    assert!(
        ups[2].requests() >= 5,
        "c served the traffic after the change"
    );
}

#[test]
fn srv_targets_by_priority_and_weight_and_surviving_state() {
    if !Dns::available() {
        return;
    }
    let dir = scratch_dir("dns-srv");
    let mut dns = Dns::start(&dir, 1);
    let ups = upstreams(3);
    for (name, u) in ["a", "b", "c"].iter().zip(&ups) {
        dns.set_a(&format!("{name}.test"), &["127.0.0.1"]);
        let _ = u;
    }
    let srv = "_http._tcp.svc.test";
    let port = |i: usize| ups[i].addr().port();
    dns.set_srv(&[
        (srv, "a.test", port(0), 0, 30),
        (srv, "b.test", port(1), 0, 10),
        (srv, "c.test", port(2), 1, 50),
    ]);
    let gw = Gateway::start_with(
        &format!(
            "services:\n  svc:\n    discovery: {{ dns_srv: {srv} }}\n    balance: weighted\n    \
             resolve_interval: 1s\n    circuit_breaker: {{ failures: 2, open_for: 60s }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: svc }}\n"
        ),
        &format!("  resolver: [\"{}\"]\n", dns.addr),
    );
    // Only the best priority class; weights 3:1 over ten full rounds.
    let seen = spread(&gw, "/x", 40);
    assert_eq!(seen.get("a"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("c"), None, "{seen:?}");
    let st = service_status(&gw, "svc");
    assert!(st["upstreams"]
        .as_array()
        .expect("members")
        .iter()
        .all(|m| m["source"] == "SRV" && m["resolved_from"] == srv));

    // b's breaker opens; b stays a member when c joins its priority class.
    ups[1].set_failing(Some(500));
    for _ in 0..8 {
        gw.get("/x");
    }
    ups[1].set_failing(None);
    let breaker_of = |gw: &Gateway, port: u16| -> String {
        service_status(gw, "svc")["upstreams"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|m| m["address"] == format!("127.0.0.1:{port}"))
                    .map(|m| {
                        m["circuit_breaker"]["state"]
                            .as_str()
                            .unwrap_or("")
                            .to_string()
                    })
            })
            .unwrap_or_default()
    };
    assert_eq!(breaker_of(&gw, port(1)), "open");
    dns.set_srv(&[
        (srv, "a.test", port(0), 0, 30),
        (srv, "b.test", port(1), 0, 10),
        (srv, "c.test", port(2), 0, 10),
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/x").upstream() == "c"),
        "c joined"
    );
    assert_eq!(
        breaker_of(&gw, port(1)),
        "open",
        "a surviving member keeps its breaker"
    );

    // Only c left.
    dns.set_srv(&[(srv, "c.test", port(2), 0, 1)]);
    assert!(wait_until(Duration::from_secs(5), || {
        service_status(&gw, "svc")["upstreams"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    }));
    let seen = spread(&gw, "/x", 5);
    assert_eq!(seen.get("c"), Some(&5), "{seen:?}");
}

#[test]
fn an_https_upstream_found_by_name_is_checked_against_that_name() {
    if !Dns::available() {
        return;
    }
    let dir = scratch_dir("dns-tls");
    let dns = Dns::start(&dir, 5);
    dns.set_a("api.test", &["127.0.0.1"]);
    let pki = Pki::new(&dir, "ca");
    let cert = pki.server("api", &["api.test"], 7);
    let up = TlsUpstream::start(TlsOptions {
        name: "api",
        cert: cert.cert(),
        key: cert.key(),
        client_ca: None,
        h2: false,
        bind: "127.0.0.1:0",
    });
    let gw = Gateway::start_with(
        &format!(
            "services:\n  api:\n    upstreams: [{{ address: \"https://api.test:{}\" }}]\n    tls: {{ ca_file: \"{}\" }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: api }}\n",
            up.addr.port(),
            pki.ca()
        ),
        &format!("  resolver: [\"{}\"]\n", dns.addr),
    );
    let r = gw.get("/x");
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.header("x-sni"), Some("api.test"));
}

#[test]
fn a_name_that_does_not_resolve_fails_the_check_and_the_start() {
    if !Dns::available() {
        return;
    }
    let dir = scratch_dir("dns-missing");
    let dns = Dns::start(&dir, 1);
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ address: \"127.0.0.1:{}\" }}]\nserver: {{ resolver: [\"{}\"] }}\n\
             services:\n  ghost: {{ upstreams: [{{ address: \"nowhere.test:80\" }}] }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: ghost }}\n",
            free_port(),
            dns.addr
        ),
    )
    .expect("write");
    let out = run_cli(&["-c", config.to_str().expect("path"), "-t"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("services.ghost: cannot resolve its upstreams: nowhere.test: no such name"),
        "{err}"
    );
}

#[test]
fn upstreams_removed_by_a_reload_drain_within_their_timeout() {
    let ups = upstreams(2);
    let body = |up: &EchoServer| {
        format!(
            "services:\n  s:\n    upstreams: [{{ address: \"{}\" }}]\n    drain_timeout: 800ms\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
            up.addr()
        )
    };
    let gw = Gateway::start(&body(&ups[0]));
    let addr = gw.addr;
    let short = std::thread::spawn(move || request(addr, "GET", "/sleep/400", &[], b""));
    let long = std::thread::spawn(move || request(addr, "GET", "/sleep/2500", &[], b""));
    std::thread::sleep(Duration::from_millis(150));
    gw.rewrite(&body(&ups[1]));
    gw.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/x").upstream() == "b"),
        "new requests go to the new upstream"
    );
    let short = short.join().expect("thread").expect("short request");
    assert_eq!(short.status, 200, "a request within drain_timeout finishes");
    assert_eq!(short.upstream(), "a");
    // Past drain_timeout a request still on the removed upstream is cut when its
    // answer arrives.
    let started = Instant::now();
    let long = long.join().expect("thread");
    assert!(
        long.as_ref().map_or(true, |r| r.status == 502),
        "a request past drain_timeout is cut: {:?}",
        long.map(|r| r.status)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
