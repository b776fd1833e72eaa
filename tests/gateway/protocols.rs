//! WebSocket through the gateway, TLS with HTTP/2, h2c, and HTTP/2 to upstreams.

use crate::common::*;
use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Read one WebSocket frame: (opcode, payload). Unmasks client frames.
fn read_frame(r: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h)?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b)?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((opcode, payload))
}

/// Write one frame; clients must mask (RFC 6455 §5.3).
fn write_frame(w: &mut impl Write, opcode: u8, payload: &[u8], mask: bool) -> std::io::Result<()> {
    let mut f = vec![0x80 | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    w.write_all(&f)
}

fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// An echo WebSocket server on loopback (one thread per connection).
fn ws_echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut out = conn;
                let mut key = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("sec-websocket-key") {
                            key = v.trim().to_string();
                        }
                    }
                }
                let _ = write!(out, "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n", accept_key(&key));
                while let Ok((op, payload)) = read_frame(&mut reader) {
                    let reply = match op {
                        0x9 => 0xA, // ping -> pong
                        other => other,
                    };
                    if write_frame(&mut out, reply, &payload, false).is_err() || op == 0x8 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn upgrade(
    gw: &Gateway,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: gw.test\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    w.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
            break;
        }
    }
    (code, r, w)
}

#[test]
fn websocket_echo_through_the_gateway_with_auth() {
    let ws = ws_echo_server();
    let secret = "ws-test-secret-0123456789abcdefghij";
    let gw = Gateway::start(&format!(
        r#"
jwt:
  main: {{ algorithms: [HS256], secret: "{secret}" }}
services:
  ws: {{ upstreams: [{{ address: "{ws}" }}], timeouts: {{ read: 300ms, idle: 30s }} }}
routes:
  - {{ name: live, match: {{ path_prefix: /live }}, service: ws, auth: main, websocket: true }}
  - {{ name: plain, match: {{ path_prefix: /plain }}, service: ws }}
"#
    ));
    let out = run_cli(
        &["token", "--secret-env", "WS_SECRET", "--sub", "ws-user"],
        &[("WS_SECRET", secret)],
    );
    let token = format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim());

    // auth runs on the upgrade request
    let (code, _, _) = upgrade(&gw, "/live", &[]);
    assert_eq!(code, 401);
    // a route without websocket: true refuses the upgrade instead of hanging
    let (code, _, _) = upgrade(&gw, "/plain", &[]);
    assert_eq!(code, 403);

    let (code, mut r, mut w) = upgrade(&gw, "/live", &[("authorization", &token)]);
    assert_eq!(code, 101);
    write_frame(&mut w, 0x1, b"hello", true).unwrap();
    assert_eq!(read_frame(&mut r).unwrap(), (0x1, b"hello".to_vec()));
    // quiet for longer than the HTTP read timeout (300ms): the socket stays open
    std::thread::sleep(Duration::from_millis(700));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    write_frame(&mut w, 0x2, &big, true).unwrap();
    let (op, echoed) = read_frame(&mut r).unwrap();
    assert_eq!(op, 0x2);
    assert!(echoed == big, "1 MiB binary frame echoed intact");
    write_frame(&mut w, 0x9, b"are you there", true).unwrap();
    assert_eq!(
        read_frame(&mut r).unwrap(),
        (0xA, b"are you there".to_vec())
    );
    write_frame(&mut w, 0x8, &[0x03, 0xe8], true).unwrap();
    assert_eq!(read_frame(&mut r).unwrap().0, 0x8, "close echoed");
}

#[test]
fn a_websocket_and_a_slow_request_survive_their_upstreams_removal_by_reload() {
    let ws = ws_echo_server();
    let other = ws_echo_server();
    let slow = EchoServer::start("slow", "127.0.0.1:0").unwrap();
    let body = |ws: std::net::SocketAddr, http: &str| {
        format!(
            "services:\n  ws: {{ upstreams: [{{ address: \"{ws}\" }}], drain_timeout: 30s, timeouts: {{ idle: 30s }} }}\n  \
             api: {{ upstreams: [{{ address: \"{http}\" }}], drain_timeout: 30s }}\n\
             routes:\n  - {{ name: live, match: {{ path_prefix: /live }}, service: ws, websocket: true }}\n  \
             - {{ name: api, match: {{ path_prefix: /api }}, service: api }}\n"
        )
    };
    let gw = Gateway::start(&body(ws, &slow.addr().to_string()));
    let (code, mut r, mut w) = upgrade(&gw, "/live", &[]);
    assert_eq!(code, 101);
    write_frame(&mut w, 0x1, b"before", true).unwrap();
    assert_eq!(read_frame(&mut r).unwrap(), (0x1, b"before".to_vec()));
    let addr = gw.addr;
    let slow_req = std::thread::spawn(move || request(addr, "GET", "/api/sleep/1500", &[], b""));
    std::thread::sleep(Duration::from_millis(200));
    // Both upstreams leave their services.
    let fresh = EchoServer::start("fresh", "127.0.0.1:0").unwrap();
    gw.rewrite(&body(other, &fresh.addr().to_string()));
    gw.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(5), || gw.get("/api/x").upstream()
            == "fresh"),
        "new requests go to the new upstream"
    );
    // The WebSocket already open keeps working, on its old upstream.
    for i in 0..5 {
        let msg = format!("after {i}");
        write_frame(&mut w, 0x1, msg.as_bytes(), true).unwrap();
        assert_eq!(read_frame(&mut r).unwrap(), (0x1, msg.into_bytes()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = slow_req.join().unwrap().expect("the slow request");
    assert_eq!(
        done.status, 200,
        "the slow request finished on its removed upstream"
    );
    assert_eq!(done.upstream(), "slow");
    write_frame(&mut w, 0x8, &[0x03, 0xe8], true).unwrap();
    assert_eq!(read_frame(&mut r).unwrap().0, 0x8);
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
}

pub(crate) fn self_signed(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl")
        .status
        .success();
    assert!(ok, "openssl made a test certificate");
    (cert.display().to_string(), key.display().to_string())
}

/// `curl ARGS URL`, printing only "<HTTP version> <status>" (and stderr).
fn curl_version_status(args: &[&str], url: &str) -> (String, String) {
    let fmt = "%{http_version} %{http_code}";
    let mut all = args.to_vec();
    all.extend(["-o", "/dev/null", "-w", fmt, url]);
    curl(&all)
}

pub(crate) fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_with_http2_and_plaintext_h2c() {
    assert!(
        curl_available(),
        "curl with HTTP/2 support is needed (apt-get install curl)"
    );
    let up = upstreams(1);
    let dir = scratch_dir("tls");
    let (cert, key) = self_signed(&dir);
    let tls_port = free_port();
    let gw = Gateway::start_full(
        &one_route(&up[0]),
        "  h2c: true\n",
        &format!(
            "  - address: 127.0.0.1:{tls_port}\n    tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n"
        ),
    );
    let tls_url = format!("https://localhost:{tls_port}/tls");
    // TLS + ALPN h2, with the test certificate as the trust anchor
    let (out, err) = curl_version_status(&["--http2", "--cacert", &cert], &tls_url);
    assert_eq!(out, "2 200", "{err}\n{}", gw.log());
    // HTTP/1.1 over TLS still works
    let (out, _) = curl_version_status(&["--http1.1", "--cacert", &cert], &tls_url);
    assert_eq!(out, "1.1 200");
    // the upstream is told the original scheme
    let (body, _) = curl(&[
        "--http2",
        "--cacert",
        &cert,
        &format!("https://localhost:{tls_port}/proto"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    // h2c with prior knowledge on the plaintext listener, and HTTP/1.1 beside it
    let h2c_url = format!("http://{}/h2c", gw.addr);
    let (out, err) = curl_version_status(&["--http2-prior-knowledge"], &h2c_url);
    assert_eq!(out, "2 200", "{err}");
    assert_eq!(gw.get("/h1").status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http2_to_upstreams() {
    let up = upstreams(1);
    // An h2c-capable upstream: a second gateway in front of the echo server.
    let inner = Gateway::start_with(&one_route(&up[0]), "  h2c: true\n");
    let outer = Gateway::start(&format!(
        "services:\n  h2: {{ http2: true, upstreams: [{{ address: \"{}\" }}] }}\n  h1only: {{ http2: true, retries: {{ attempts: 0 }}, upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: via-h2, match: {{ path_prefix: /h2 }}, service: h2 }}\n  - {{ name: broken, match: {{ path_prefix: /h1only }}, service: h1only }}\n",
        inner.addr,
        up[0].addr()
    ));
    let r = outer.get("/h2/x");
    assert_eq!(r.status, 200, "{}", outer.log());
    assert_eq!(r.json()["path"], "/h2/x");
    // The same setting against an HTTP/1-only server fails: the gateway really speaks h2.
    assert_eq!(outer.get("/h1only/x").status, 502);
}
