//! A real DNS server for the discovery tests: dnsmasq on a free loopback port, answering
//! for names under `test.` only. A records come from files in a directory that dnsmasq
//! watches (a change is served within about a second, no signal); SRV records are
//! command-line options, so changing them restarts dnsmasq on the same port.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Dns {
    pub addr: SocketAddr,
    dir: PathBuf,
    hosts: PathBuf,
    srv: Vec<String>,
    ttl: u32,
    child: Option<Child>,
}

impl Dns {
    /// Whether dnsmasq is installed. Missing, the test fails unless
    /// `GATEHOUSE_SKIP_DNS_TESTS=1` says skipping is intended.
    pub fn available() -> bool {
        let ok = Command::new("dnsmasq").arg("--version").output().is_ok()
            || std::path::Path::new("/usr/sbin/dnsmasq").exists();
        if !ok {
            assert!(
                std::env::var_os("GATEHOUSE_SKIP_DNS_TESTS").is_some(),
                "dnsmasq is not installed (apt-get install dnsmasq-base, or set GATEHOUSE_SKIP_DNS_TESTS=1)"
            );
            eprintln!("dnsmasq not installed: skipping (GATEHOUSE_SKIP_DNS_TESTS)");
        }
        ok
    }

    /// Start answering with record TTLs of `ttl` seconds.
    pub fn start(dir: &std::path::Path, ttl: u32) -> Dns {
        let hosts = dir.join("hosts.d");
        std::fs::create_dir_all(&hosts).expect("hosts dir");
        let port = free_udp_port();
        let mut dns = Dns {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            hosts,
            srv: Vec::new(),
            ttl,
            child: None,
        };
        dns.spawn();
        dns
    }

    /// Serve `name` (under `test`) with exactly these IPv4 addresses.
    pub fn set_a(&self, name: &str, ips: &[&str]) {
        let text: String = ips.iter().map(|ip| format!("{ip} {name}\n")).collect();
        // Written beside, then renamed: dnsmasq never reads half a file.
        let tmp = self.hosts.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write hosts");
        std::fs::rename(&tmp, self.hosts.join(name)).expect("rename hosts");
    }

    /// Replace the SRV records (`(name, target, port, priority, weight)`), restarting.
    pub fn set_srv(&mut self, records: &[(&str, &str, u16, u16, u16)]) {
        self.srv = records
            .iter()
            .map(|(n, t, p, prio, w)| format!("--srv-host={n},{t},{p},{prio},{w}"))
            .collect();
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&mut self) {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let log = std::fs::File::create(self.dir.join("dnsmasq.log")).expect("log");
        let child = Command::new(dnsmasq())
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--log-facility=-",
            ])
            .arg(format!("--user={user}"))
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!("--hostsdir={}", self.hosts.display()))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .args(&self.srv)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dnsmasq");
        self.child = Some(child);
        // Up once it answers a query (any answer).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "dnsmasq did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers a query for `probe.test`.
    fn answers(&self) -> bool {
        let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        // A query for probe.test A, id 0x1234.
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["probe", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut buf = [0u8; 512];
        sock.send_to(&q, self.addr).is_ok() && sock.recv_from(&mut buf).is_ok()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn dnsmasq() -> &'static str {
    if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    }
}

fn free_udp_port() -> u16 {
    // A port free for both UDP and TCP (dnsmasq serves both).
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
