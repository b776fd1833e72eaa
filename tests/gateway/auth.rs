use crate::common::*;
use jsonwebtoken::{jwk::Jwk, Algorithm, EncodingKey, Header};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "integration-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn start(up: &EchoServer) -> Gateway {
    Gateway::start(&format!(
        r#"
jwt:
  main:
    algorithms: [HS256]
    secret: "{SECRET}"
    issuer: https://idp.test
    leeway: 5s
    claims_to_headers: {{ sub: X-User-ID, role: X-User-Role }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: admin, match: {{ path_prefix: /admin }}, service: s, auth: main, require_claims: {{ role: [admin] }} }}
  - {{ name: private, match: {{ path_prefix: /private }}, service: s, auth: main }}
  - {{ name: public, match: {{ path_prefix: / }}, service: s }}
"#,
        up.addr()
    ))
}

#[test]
fn valid_token_reaches_upstream_with_claim_headers_and_spoofs_are_stripped() {
    let up = upstreams(1);
    let gw = start(&up[0]);
    let t = hs256(
        serde_json::json!({"sub": "alice", "role": "admin", "iss": "https://idp.test", "exp": now() + 60}),
    );
    let r = request(
        gw.addr,
        "GET",
        "/private/x",
        &[("authorization", &bearer(&t)), ("x-user-id", "mallory")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &r.json()["headers"];
    assert_eq!(h["x-user-id"], "alice");
    assert_eq!(h["x-user-role"], "admin");

    // A public route never forwards a client's own identity headers either.
    let r = request(
        gw.addr,
        "GET",
        "/pub",
        &[("x-user-id", "mallory"), ("X-User-Role", "admin")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert!(
        h.get("x-user-id").is_none() && h.get("x-user-role").is_none(),
        "{h}"
    );

    // require_claims met
    let r = request(
        gw.addr,
        "GET",
        "/admin",
        &[("authorization", &bearer(&t))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn missing_bad_and_expired_tokens_are_401_and_unmet_claims_403() {
    let up = upstreams(1);
    let gw = start(&up[0]);

    let r = gw.get("/private");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(r.json()["error"], "missing_token");

    let expired =
        hs256(serde_json::json!({"sub": "a", "iss": "https://idp.test", "exp": now() - 60}));
    let r = request(
        gw.addr,
        "GET",
        "/private",
        &[("authorization", &bearer(&expired))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(r.json()["error"], "token_expired");
    assert!(!r.text().contains(&expired), "the token is never echoed");

    let good = hs256(
        serde_json::json!({"sub": "a", "role": "user", "iss": "https://idp.test", "exp": now() + 60}),
    );
    // Change the signature's first character: every bit of it counts (the last one of a
    // 43-character HS256 signature carries 2 padding bits a decoder may ignore).
    let sig = good.rfind('.').unwrap() + 1;
    let mut tampered = good.clone();
    let first = if &good[sig..sig + 1] == "A" { "B" } else { "A" };
    tampered.replace_range(sig..sig + 1, first);
    let r = request(
        gw.addr,
        "GET",
        "/private",
        &[("authorization", &bearer(&tampered))],
        b"",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("bad_signature"))
    );

    let wrong_iss =
        hs256(serde_json::json!({"sub": "a", "iss": "https://evil.test", "exp": now() + 60}));
    let r = request(
        gw.addr,
        "GET",
        "/private",
        &[("authorization", &bearer(&wrong_iss))],
        b"",
    )
    .unwrap();
    assert_eq!(r.json()["error"], "bad_issuer");

    // alg: none is refused whatever its claims say
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(format!(
            r#"{{"sub":"a","iss":"https://idp.test","exp":{}}}"#,
            now() + 60
        )
        .as_bytes())
    );
    let r = request(
        gw.addr,
        "GET",
        "/private",
        &[("authorization", &bearer(&none))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 401);

    // 40 KB of garbage: a 401 (or refused by the HTTP layer), never a crash
    let huge = "a".repeat(40_000);
    let r = request(
        gw.addr,
        "GET",
        "/private",
        &[("authorization", &bearer(&huge))],
        b"",
    );
    if let Ok(r) = r {
        assert!([400, 401, 431].contains(&r.status), "{}", r.status);
    }
    assert_eq!(gw.get("/pub").status, 200, "still serving");

    // valid token, wrong role -> 403
    let r = request(
        gw.addr,
        "GET",
        "/admin",
        &[("authorization", &bearer(&good))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");

    assert_eq!(
        gw.metric(
            "gatehouse_auth_failures_total",
            "reason=\"token_expired\",route=\"private\""
        ),
        Some(1.0)
    );
    assert_eq!(
        gw.metric(
            "gatehouse_auth_failures_total",
            "reason=\"missing_token\",route=\"private\""
        ),
        Some(1.0)
    );
    assert!(!gw.log().contains(&good), "tokens are never logged");
}

#[test]
fn minted_cli_token_is_accepted() {
    let up = upstreams(1);
    let gw = start(&up[0]);
    let out = run_cli(
        &[
            "token",
            "--secret-env",
            "GH_TEST_SECRET",
            "--sub",
            "bob",
            "--claim",
            "iss=https://idp.test",
            "--claim",
            "role=admin",
            "--ttl",
            "10m",
        ],
        &[("GH_TEST_SECRET", SECRET)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let r = request(
        gw.addr,
        "GET",
        "/admin/x",
        &[("authorization", &bearer(&token))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-user-id"], "bob");
}

fn b64(b: &[u8]) -> String {
    use std::fmt::Write;
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
        for i in 0..=c.len() {
            let _ = s.write_char(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// A JWKS endpoint on loopback whose document the test can swap.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<String>>,
}

fn jwks_server() -> JwksServer {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let doc = Arc::new(Mutex::new(String::from("{\"keys\":[]}")));
    let d = doc.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.read(&mut buf);
            let body = d.lock().unwrap().clone();
            let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
        }
    });
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        doc,
    }
}

fn rsa_key(stem: &str) -> EncodingKey {
    let pem = std::fs::read(repo_path(&format!("tests/keys/{stem}_private.pem"))).unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

fn jwks_doc(keys: &[(&str, &str)]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(stem, kid)| {
            let mut k = Jwk::from_encoding_key(&rsa_key(stem), Algorithm::RS256).unwrap();
            k.common.key_id = Some(kid.to_string());
            serde_json::to_value(k).unwrap()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}

fn rs256(stem: &str, kid: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &h,
        &serde_json::json!({"sub": kid, "exp": now() + 60}),
        &rsa_key(stem),
    )
    .unwrap()
}

#[test]
fn gateway_follows_a_jwks_key_rotation() {
    let jwks = jwks_server();
    *jwks.doc.lock().unwrap() = jwks_doc(&[("rsa", "key-a")]);
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        r#"
jwt:
  idp: {{ algorithms: [RS256], jwks_url: "{}", jwks_refresh: 1h, claims_to_headers: {{ sub: X-User-ID }} }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: api, match: {{ path_prefix: / }}, service: s, auth: idp }}
"#,
        jwks.url,
        up[0].addr()
    ));
    let call =
        |t: &str| request(gw.addr, "GET", "/", &[("authorization", &bearer(t))], b"").unwrap();
    let a = rs256("rsa", "key-a");
    assert!(
        wait_until(Duration::from_secs(10), || call(&a).status == 200),
        "first key set fetched"
    );
    assert_eq!(call(&a).json()["headers"]["x-user-id"], "key-a");

    // Rotate: the IdP now publishes only key B. A token with kid B triggers a refresh.
    *jwks.doc.lock().unwrap() = jwks_doc(&[("rsa2", "key-b")]);
    let b = rs256("rsa2", "key-b");
    assert!(
        wait_until(Duration::from_secs(15), || call(&b).status == 200),
        "gateway picked up the rotated key; log:\n{}",
        gw.log()
    );
    // and the retired key no longer works
    assert!(wait_until(Duration::from_secs(5), || call(&a).status == 401));
}

#[test]
fn never_fetched_jwks_answers_503_not_401() {
    let dead = free_port();
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        r#"
jwt:
  idp: {{ algorithms: [RS256], jwks_url: "http://127.0.0.1:{dead}/jwks.json" }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: api, match: {{ path_prefix: / }}, service: s, auth: idp }}
"#,
        up[0].addr()
    ));
    let r = request(
        gw.addr,
        "GET",
        "/",
        &[("authorization", &bearer(&rs256("rsa", "k")))],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "keys_unavailable");
}
