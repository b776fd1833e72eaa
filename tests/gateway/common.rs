//! Test harness: boot the real `gatehouse` binary on free loopback ports against real
//! upstream servers, and talk to it over plain TCP.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use gatehouse::demo::EchoServer;

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A free loopback port (bound then released), never one this test process was handed
/// before: the OS may give a just-released port out again, and two ports of one config
/// that came out equal made a test fail with "duplicate listen address".
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 1000 tries");
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Poll `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// For echo-upstream answers: which upstream served it.
    pub fn upstream(&self) -> String {
        self.header("x-upstream").unwrap_or("").to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("host: gateway.test\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
    {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    exchange(addr, &raw, method == "HEAD")
}

/// Send `raw` bytes on a fresh connection and read until the gateway closes it (the
/// request must say so: `Connection: close`, or HTTP/1.0 without keep-alive).
pub fn exchange(addr: SocketAddr, raw: &[u8], head: bool) -> std::io::Result<Response> {
    parse_response(&exchange_raw(addr, raw)?, head)
}

/// Like [`exchange`], the answer's bytes as they came (header names as spelt).
pub fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    Ok(answer)
}

pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, &[], b"").expect("GET")
}

fn parse_response(raw: &[u8], head: bool) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = HashMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let rest = &raw[end + 4..];
    let body = if head {
        Vec::new()
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        rest.get(..len).ok_or_else(|| bad("short body"))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A running gatehouse process with its config file, killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// The generated listen/admin/server part, kept for [`Gateway::rewrite`].
    header: String,
}

impl Gateway {
    /// Start with `body` (services, routes, …) under a generated header: listen,
    /// admin, and server settings with per-test pid/upgrade paths. `server_extra` is
    /// added under `server:`.
    pub fn start(body: &str) -> Gateway {
        Self::start_with(body, "")
    }

    pub fn start_with(body: &str, server_extra: &str) -> Gateway {
        Self::start_full(body, server_extra, "")
    }

    /// Like `start_with`, with more `listen` entries (YAML list items).
    pub fn start_full(body: &str, server_extra: &str, extra_listen: &str) -> Gateway {
        Self::launch(body, server_extra, |header| {
            header.replacen("\nadmin:", &format!("\n{extra_listen}admin:"), 1)
        })
    }

    /// Like `start`, with the generated header changed by `edit` first (e.g. a setting
    /// of its own, such as `grace_period`, given another value).
    pub fn start_edited(body: &str, edit: impl FnOnce(String) -> String) -> Gateway {
        Self::launch(body, "", edit)
    }

    fn launch(body: &str, server_extra: &str, edit: impl FnOnce(String) -> String) -> Gateway {
        let dir = scratch_dir("gw");
        let port = free_port();
        let admin_port = free_port();
        let header = edit(header_yaml(&dir, port, admin_port, server_extra));
        let config = dir.join("gatehouse.yaml");
        std::fs::write(&config, format!("{header}\n{body}\n")).expect("write config");
        let log = std::fs::File::create(dir.join("gatehouse.log")).expect("log file");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn gatehouse");
        let gw = Gateway {
            child,
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            admin: format!("127.0.0.1:{admin_port}").parse().expect("addr"),
            dir,
            config,
            header,
        };
        gw.wait_ready();
        gw
    }

    /// Replace the config body (services, routes, …), keeping listen/admin/server.
    pub fn rewrite(&self, body: &str) {
        write_atomically(&self.config, &format!("{}\n{body}\n", self.header));
    }

    /// Send a signal (`-HUP`, `-TERM`, …) to the gateway process.
    pub fn signal(&self, sig: &str) {
        send_signal(self.child.id(), sig);
    }

    /// Wait for the process to exit; `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn wait_ready(&self) {
        let ok = wait_until(Duration::from_secs(20), || {
            request(self.admin, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
                && TcpStream::connect(self.addr).is_ok()
        });
        assert!(ok, "gateway did not come up; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gatehouse.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, target: &str) -> Response {
        get(self.addr, target)
    }

    pub fn admin_get(&self, path: &str) -> Response {
        get(self.admin, path)
    }

    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").text()
    }

    /// The value of one metric sample, matched by name and a label substring.
    pub fn metric(&self, name: &str, labels: &str) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn status(&self) -> serde_json::Value {
        self.admin_get("/admin/status").json()
    }

    /// Whether `/admin/status` reports `upstream` of `service` as healthy.
    pub fn upstream_healthy(&self, service: &str, upstream: &str) -> Option<bool> {
        let st = self.status();
        st["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == service)?["upstreams"]
            .as_array()?
            .iter()
            .find(|u| u["address"] == upstream)?["healthy"]
            .as_bool()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The listen/admin/server part of a test config: two worker threads unless
/// `server_extra` sets `threads`.
pub fn header_yaml(dir: &Path, port: u16, admin_port: u16, server_extra: &str) -> String {
    let threads = if server_extra.contains("threads:") {
        ""
    } else {
        "  threads: 2\n"
    };
    format!(
        "listen:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\n\
         server:\n{threads}  pid_file: {dir}/gatehouse.pid\n  upgrade_sock: {dir}/upgrade.sock\n  \
         grace_period: 1s\n  shutdown_timeout: 1s\n{server_extra}",
        dir = dir.display()
    )
}

/// Write via a temporary file and rename, so a reload never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

pub fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `gatehouse -c FILE -t` on `yaml` must fail and name every one of `wants` (each a
/// `path: message` start) in its errors.
pub fn assert_config_errors(yaml: &str, wants: &[&str]) {
    let dir = scratch_dir("cfg-errors");
    let cfg = dir.join("g.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let out = run_cli(&["-c", cfg.to_str().expect("path"), "-t"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted:\n{yaml}");
    for want in wants {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run `gatehouse` with arguments and wait for it.
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run gatehouse")
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A config body with one service `s` on `up` and one route `r` for every path.
pub fn one_route(up: &EchoServer) -> String {
    format!(
        "services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        up.addr()
    )
}

/// Start `n` echo upstreams named a, b, c… on free ports.
pub fn upstreams(n: usize) -> Vec<EchoServer> {
    (0..n)
        .map(|i| {
            let name = ((b'a' + i as u8) as char).to_string();
            EchoServer::start(&name, "127.0.0.1:0").expect("start echo upstream")
        })
        .collect()
}

/// `- { address: "127.0.0.1:P", weight: W }` lines for a services block.
pub fn upstream_list(servers: &[EchoServer], weights: &[u32]) -> String {
    servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "      - {{ address: \"{}\", weight: {} }}\n",
                s.addr(),
                weights.get(i).copied().unwrap_or(1)
            )
        })
        .collect()
}

/// A real `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Serve TLS only, with this certificate and key.
    tls: Option<(String, String)>,
}

impl RedisServer {
    /// Whether Redis tests can run. A missing `redis-server` fails the test unless
    /// `GATEHOUSE_SKIP_REDIS_TESTS=1` says skipping is intended: CI must not pass
    /// quietly without them.
    pub fn available() -> bool {
        let ok = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok();
        if !ok {
            assert!(
                std::env::var_os("GATEHOUSE_SKIP_REDIS_TESTS").is_some(),
                "redis-server is not installed (apt-get install redis-server, or set GATEHOUSE_SKIP_REDIS_TESTS=1)"
            );
            eprintln!("redis-server not installed: skipping (GATEHOUSE_SKIP_REDIS_TESTS)");
        }
        ok
    }

    pub fn free_port() -> u16 {
        free_port()
    }

    pub fn start(port: u16) -> RedisServer {
        let mut s = RedisServer {
            port,
            child: None,
            tls: None,
        };
        s.restart();
        s
    }

    /// Redis over TLS only (`rediss://`), with this certificate and key.
    pub fn start_tls(port: u16, cert: &str, key: &str) -> RedisServer {
        let mut s = RedisServer {
            port,
            child: None,
            tls: Some((cert.to_string(), key.to_string())),
        };
        s.restart();
        s
    }

    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", cert, "--tls-key-file", key])
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        if self.tls.is_some() {
            // Up once it accepts connections (a plain PING gets no answer over TLS).
            while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not listen");
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}
