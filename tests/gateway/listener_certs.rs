//! Listener certificates: several per listener chosen by SNI (exact, `*.domain`, a
//! default), rotated by SIGHUP under load with no failed request (checked by serial), a
//! malformed replacement refused with the old certificate still served, and the expiry
//! gauge.

use crate::common::*;
use crate::pki::{Issued, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TLS GET to the gateway with this SNI: the serial of the certificate it presented
/// (verified against `ca` for `sni`) and the response status.
fn tls_get(addr: SocketAddr, sni: &str, ca: &Path) -> Result<(String, u16), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET /x HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    // A close without close_notify after the whole answer is fine here.
    let _ = tls.read_to_end(&mut answer);
    let serial = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
        .map(|(_, c)| c.raw_serial_as_string())
        .ok_or("no certificate")?;
    let status = String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no answer: {:?}", String::from_utf8_lossy(&answer)))?;
    Ok((serial, status))
}

fn copy(from: &Issued, cert: &Path, key: &Path) {
    // Key first, then certificate, each replaced whole (as certbot's renewal does).
    write_atomically(key, &std::fs::read_to_string(&from.key).expect("key"));
    write_atomically(cert, &std::fs::read_to_string(&from.cert).expect("cert"));
}

#[test]
fn certificates_by_sni_with_a_default() {
    let dir = scratch_dir("sni");
    let pki = Pki::new(&dir, "ca");
    let api = pki.server("api", &["api.example.test"], 11);
    let wild = pki.server("wild", &["*.apps.example.test"], 22);
    let default = pki.server("default", &["default.example.test"], 33);
    let up = upstreams(1);
    let port = free_port();
    let listen = format!(
        "  - address: 127.0.0.1:{port}\n    tls:\n      \
         - {{ cert: \"{}\", key: \"{}\", server_names: [api.example.test] }}\n      \
         - {{ cert: \"{}\", key: \"{}\", server_names: [\"*.apps.example.test\"] }}\n      \
         - {{ cert: \"{}\", key: \"{}\" }}\n",
        api.cert(),
        api.key(),
        wild.cert(),
        wild.key(),
        default.cert(),
        default.key()
    );
    let gw = Gateway::start_full(&one_route(&up[0]), "", &listen);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let ca = pki.ca_file.clone();
    assert_eq!(
        tls_get(addr, "api.example.test", &ca),
        Ok((api.serial.clone(), 200))
    );
    assert_eq!(
        tls_get(addr, "one.apps.example.test", &ca).map(|r| r.0),
        Ok(wild.serial.clone())
    );
    // Another name gets the default (which this client then refuses: not its name).
    let other = tls_get(addr, "default.example.test", &ca);
    assert_eq!(other.map(|r| r.0), Ok(default.serial.clone()));
    let metrics = gw.metrics();
    for name in ["api.example.test", "*.apps.example.test", "default"] {
        assert!(
            metrics.contains(&format!(
                "gatehouse_tls_certificate_expiry_seconds{{listener=\"127.0.0.1:{port}\",name=\"{name}\"}}"
            )),
            "no expiry gauge for {name}:\n{metrics}"
        );
    }
}

#[test]
fn rotation_by_sighup_under_load_and_a_bad_replacement_kept_out() {
    let dir = scratch_dir("rotate");
    let pki = Pki::new(&dir, "ca");
    let first = pki.server("first", &["gw.example.test"], 101);
    let second = pki.server("second", &["gw.example.test"], 202);
    let cert = dir.join("live.crt");
    let key = dir.join("live.key");
    copy(&first, &cert, &key);
    let up = upstreams(1);
    let port = free_port();
    let listen = format!(
        "  - address: 127.0.0.1:{port}\n    tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        cert.display(),
        key.display()
    );
    let gw = Gateway::start_full(&one_route(&up[0]), "", &listen);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let ca = pki.ca_file.clone();
    assert_eq!(
        tls_get(addr, "gw.example.test", &ca),
        Ok((first.serial.clone(), 200))
    );

    // Load over fresh TLS connections while the files change and SIGHUP lands.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, failures, done, ca) =
                (stop.clone(), failures.clone(), done.clone(), ca.clone());
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    match tls_get(addr, "gw.example.test", &ca) {
                        Ok((_, 200)) => {}
                        other => {
                            eprintln!("tls load: {other:?}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    copy(&second, &cert, &key);
    gw.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(5), || tls_get(
            addr,
            "gw.example.test",
            &ca
        )
        .is_ok_and(|r| r.0 == second.serial)),
        "new handshakes see the new certificate"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let (done, failures) = (done.load(Ordering::SeqCst), failures.load(Ordering::SeqCst));
    assert_eq!(failures, 0, "{failures} of {done} TLS requests failed");
    assert!(done > 20, "the load ran ({done} requests)");
    assert_eq!(
        gw.metric("gatehouse_config_reloads_total", "result=\"ok\""),
        Some(1.0)
    );

    // A malformed certificate: the reload fails, naming the file; the old one serves.
    write_atomically(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    gw.signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("gatehouse_config_reloads_total", "result=\"error\"") == Some(1.0)
    }));
    assert!(gw.log().contains("listen[1].tls.cert"), "{}", gw.log());
    assert_eq!(
        tls_get(addr, "gw.example.test", &ca),
        Ok((second.serial.clone(), 200))
    );
    // A key that is not the certificate's: refused too.
    let third = pki.server("third", &["gw.example.test"], 303);
    write_atomically(&cert, &std::fs::read_to_string(&third.cert).expect("cert"));
    let admin = request(gw.admin, "POST", "/admin/reload", &[], b"").expect("reload");
    assert_eq!(admin.status, 422);
    assert!(
        admin.text().contains("is not the private key"),
        "{}",
        admin.text()
    );
    assert_eq!(
        tls_get(addr, "gw.example.test", &ca).map(|r| r.0),
        Ok(second.serial.clone())
    );
}
