//! HTTPS and mutual-TLS upstreams, HTTP/2 over TLS, health checks over TLS, and `-t` on
//! bad TLS files. The upstreams are the tests' own rustls servers with certificates made
//! at test time.

use crate::common::*;
use crate::pki::Pki;
use crate::tls_upstream::{TlsOptions, TlsUpstream};
use std::time::Duration;

fn tls_upstream(name: &str, pki: &Pki, names: &[&str], serial: u64) -> TlsUpstream {
    let c = pki.server(name, names, serial);
    TlsUpstream::start(TlsOptions {
        name,
        cert: c.cert(),
        key: c.key(),
        client_ca: None,
        h2: false,
        bind: "127.0.0.1:0",
    })
}

fn service(name: &str, upstreams: &[String], tls: &str) -> String {
    let list: String = upstreams
        .iter()
        .map(|u| format!("      - {{ address: \"{u}\" }}\n"))
        .collect();
    format!("  {name}:\n    upstreams:\n{list}    retries: {{ attempts: 2 }}\n    tls: {tls}\n")
}

fn route(name: &str, prefix: &str, service: &str) -> String {
    format!("  - {{ name: {name}, match: {{ path_prefix: {prefix} }}, service: {service}, strip_prefix: true }}\n")
}

/// `tls_error` attempts of a service, summed over its upstreams.
fn tls_errors(gw: &Gateway, service: &str) -> f64 {
    gw.metrics()
        .lines()
        .filter(|l| l.starts_with("gatehouse_upstream_requests_total{"))
        .filter(|l| {
            l.contains(&format!("service=\"{service}\"")) && l.contains("outcome=\"tls_error\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn verified_https_upstreams_and_every_kind_of_bad_certificate() {
    let dir = scratch_dir("upstream-tls");
    let pki = Pki::new(&dir, "good");
    let other = Pki::new(&dir, "other");
    let good = tls_upstream("good", &pki, &["localhost", "127.0.0.1"], 1);
    let wrong_ca = tls_upstream("wrong-ca", &other, &["localhost"], 2);
    let wrong_name = tls_upstream("wrong-name", &pki, &["elsewhere.test"], 3);
    let expired = {
        let c = pki.expired_server("expired", &["localhost"], 4);
        TlsUpstream::start(TlsOptions {
            name: "expired",
            cert: c.cert(),
            key: c.key(),
            client_ca: None,
            h2: false,
            bind: "127.0.0.1:0",
        })
    };
    let ca = pki.ca();
    let verify = format!("{{ ca_file: \"{ca}\", sni: localhost }}");
    let at = |u: &TlsUpstream| vec![u.addr.to_string()];
    let body = format!(
        "services:\n{}{}{}{}{}{}routes:\n{}{}{}{}{}{}",
        service("good", &at(&good), &verify),
        service(
            "ip",
            &[format!("https://{}", good.addr)],
            &format!("{{ ca_file: \"{ca}\" }}")
        ),
        service("wrongca", &at(&wrong_ca), &verify),
        service("wrongname", &at(&wrong_name), &verify),
        service("expired", &at(&expired), &verify),
        service(
            "unverified",
            &at(&wrong_ca),
            &format!("{{ verify: false, ca_file: \"{ca}\", sni: localhost }}")
        ),
        route("good", "/good", "good"),
        route("ip", "/ip", "ip"),
        route("wrongca", "/wrongca", "wrongca"),
        route("wrongname", "/wrongname", "wrongname"),
        route("expired", "/expired", "expired"),
        route("unverified", "/unverified", "unverified"),
    );
    let gw = Gateway::start(&body);

    let r = gw.get("/good/x");
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.header("x-upstream"), Some("good"));
    assert_eq!(r.header("x-sni"), Some("localhost"), "SNI as configured");
    // An IP address (and the https:// shorthand): no SNI sent, the IP SAN is checked.
    let r = gw.get("/ip/x");
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.header("x-sni"), Some(""));

    for (path, svc) in [
        ("/wrongca/x", "wrongca"),
        ("/wrongname/x", "wrongname"),
        ("/expired/x", "expired"),
    ] {
        let r = gw.get(path);
        assert_eq!(r.status, 502, "{path}");
        assert_eq!(r.json()["error"], "upstream_failed", "{path}");
        assert!(tls_errors(&gw, svc) >= 1.0, "{svc}: no tls_error counted");
    }
    assert_eq!(wrong_ca.requests(), 0);
    assert_eq!(wrong_name.requests(), 0);
    assert_eq!(expired.requests(), 0);
    // verify: false takes the certificate it is given.
    let r = gw.get("/unverified/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream"), Some("wrong-ca"));

    let log = gw.log();
    for reason in ["UnknownIssuer", "not valid for name", "expired"] {
        assert!(log.contains(reason), "no log line naming {reason}:\n{log}");
    }
    assert!(
        log.contains("TLS with upstream"),
        "the log names the upstream:\n{log}"
    );
}

#[test]
fn a_tls_failure_is_retried_on_another_upstream() {
    let dir = scratch_dir("upstream-tls-retry");
    let pki = Pki::new(&dir, "ca");
    let good = tls_upstream("good", &pki, &["localhost"], 1);
    let expired = {
        let c = pki.expired_server("expired", &["localhost"], 2);
        TlsUpstream::start(TlsOptions {
            name: "expired",
            cert: c.cert(),
            key: c.key(),
            client_ca: None,
            h2: false,
            bind: "127.0.0.1:0",
        })
    };
    let body = format!(
        "services:\n  s:\n    upstreams:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n    \
         balance: round_robin\n    retries: {{ attempts: 1 }}\n    tls: {{ ca_file: \"{}\", sni: localhost }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        expired.addr,
        good.addr,
        pki.ca()
    );
    let gw = Gateway::start(&body);
    for _ in 0..6 {
        // POST too: nothing reached the expired upstream, so any method goes elsewhere.
        let r = request(gw.addr, "POST", "/x", &[], b"abc").expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some("good"));
    }
    assert!(
        tls_errors(&gw, "s") >= 3.0,
        "{}\n{}",
        gw.metrics(),
        gw.log()
    );
}

#[test]
fn mutual_tls_and_http2_over_tls() {
    let dir = scratch_dir("upstream-mtls");
    let pki = Pki::new(&dir, "ca");
    let server = pki.server("mtls", &["localhost"], 1);
    let client = pki.client("gatehouse-client", 2);
    let mtls = TlsUpstream::start(TlsOptions {
        name: "mtls",
        cert: server.cert(),
        key: server.key(),
        client_ca: Some(pki.ca()),
        h2: true,
        bind: "127.0.0.1:0",
    });
    let h2 = {
        let c = pki.server("h2", &["api.test"], 3);
        TlsUpstream::start(TlsOptions {
            name: "h2",
            cert: c.cert(),
            key: c.key(),
            client_ca: None,
            h2: true,
            bind: "127.0.0.1:0",
        })
    };
    let ca = pki.ca();
    let body = format!(
        "services:\n{}{}{}routes:\n{}{}{}",
        service(
            "with-cert",
            &[mtls.addr.to_string()],
            &format!(
                "{{ ca_file: \"{ca}\", sni: localhost, client_cert: \"{}\", client_key: \"{}\" }}",
                client.cert(),
                client.key()
            )
        ),
        service(
            "without-cert",
            &[mtls.addr.to_string()],
            &format!("{{ ca_file: \"{ca}\", sni: localhost }}")
        ),
        service(
            "h2",
            &[format!("127.0.0.1:{}", h2.addr.port())],
            &format!("{{ ca_file: \"{ca}\", sni: api.test, alpn: h2h1 }}")
        ),
        route("with", "/with", "with-cert"),
        route("without", "/without", "without-cert"),
        route("h2", "/h2", "h2"),
    );
    let gw = Gateway::start(&body);

    let r = gw.get("/with/x");
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.header("x-client-cert"), Some("yes"));
    assert_eq!(r.header("x-alpn"), Some("http/1.1"), "alpn h1 by default");
    let before = mtls.requests();
    let r = gw.get("/without/x");
    assert_eq!(r.status, 502, "a client without a certificate is refused");
    assert_eq!(
        mtls.requests(),
        before,
        "the refused client's request never arrived"
    );
    assert!(tls_errors(&gw, "without-cert") >= 1.0);

    // HTTP/2 by ALPN, SNI set by config on an IP upstream.
    for _ in 0..3 {
        let r = gw.get("/h2/x");
        assert_eq!(r.status, 200, "{}", gw.log());
        assert_eq!(r.header("x-alpn"), Some("h2"));
        assert_eq!(r.header("x-sni"), Some("api.test"));
    }
    // Pooled: three requests, one connection.
    assert_eq!(h2.handshakes(), 1, "h2 connections are reused");
}

#[test]
fn health_checks_use_the_service_tls_settings() {
    let dir = scratch_dir("upstream-tls-health");
    let pki = Pki::new(&dir, "ca");
    let other = Pki::new(&dir, "other");
    let up = tls_upstream("up", &pki, &["localhost"], 1);
    let hc = "health_check: { type: http, path: /health, interval: 100ms, timeout: 500ms, healthy_after: 1, unhealthy_after: 1 }";
    let body = format!(
        "services:\n  trusted:\n    upstreams: [{{ address: \"{p}\" }}]\n    tls: {{ ca_file: \"{}\", sni: localhost }}\n    {hc}\n  \
         untrusted:\n    upstreams: [{{ address: \"{p}\" }}]\n    tls: {{ ca_file: \"{}\", sni: localhost }}\n    {hc}\n\
         routes:\n  - {{ name: a, match: {{ path_prefix: /a }}, service: trusted }}\n  - {{ name: b, match: {{ path_prefix: /b }}, service: untrusted }}\n",
        pki.ca(),
        other.ca(),
        p = up.addr
    );
    let gw = Gateway::start(&body);
    let label = up.addr.to_string();
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .upstream_healthy("untrusted", &label)
            == Some(false)),
        "a check that cannot verify the certificate fails"
    );
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .upstream_healthy("trusted", &label)
            == Some(true)),
        "a check over verified TLS passes"
    );
    assert!(
        up.requests() >= 1,
        "the trusted check made HTTP requests over TLS"
    );
    assert_eq!(gw.get("/b/x").status, 503);
    assert_eq!(gw.get("/a/x").status, 200);
}

#[test]
fn check_rejects_bad_tls_files_naming_the_path() {
    let dir = scratch_dir("upstream-tls-check");
    let pki = Pki::new(&dir, "ca");
    let a = pki.client("a", 1);
    let b = pki.client("b", 2);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let config = dir.join("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ address: \"127.0.0.1:1\" }}]\n\
             services:\n  \
               missing: {{ upstreams: [{{ address: \"localhost:1\" }}], tls: {{ ca_file: \"{d}/nope.pem\" }} }}\n  \
               malformed: {{ upstreams: [{{ address: \"localhost:1\" }}], tls: {{ ca_file: \"{g}\" }} }}\n  \
               mismatch: {{ upstreams: [{{ address: \"localhost:1\" }}], tls: {{ client_cert: \"{ac}\", client_key: \"{bk}\" }} }}\n  \
               half: {{ upstreams: [{{ address: \"localhost:1\" }}], tls: {{ client_cert: \"{ac}\" }} }}\n  \
               mixed: {{ upstreams: [{{ address: \"https://localhost:1\" }}, {{ address: \"http://localhost:2\" }}] }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: missing }}\n",
            d = dir.display(),
            g = garbage.display(),
            ac = a.cert(),
            bk = b.key()
        ),
    )
    .expect("write config");
    let out = run_cli(&["-c", config.to_str().expect("path"), "-t"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "services.missing.tls.ca_file: cannot read",
        "services.malformed.tls.ca_file:",
        "services.mismatch.tls.client_key:",
        "is not the private key of the certificate",
        "services.half.tls.client_key: client_cert needs client_key",
        "services.mixed.upstreams[1].address: http:// in a service that speaks TLS",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        err.contains("nope.pem") && err.contains("garbage.pem"),
        "{err}"
    );
}
