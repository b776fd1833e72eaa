//! Consumers and every way to authenticate: API keys, basic auth, JWTs from cookies and
//! query strings, forward auth against a service the test starts, methods combined in
//! order, consumer rate limits and `require_groups`.

use crate::common::*;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "consumers-test-secret-0123456789abcdef";
const KEY_A: &str = "key-of-partner-a-7f3k2m9q";
const KEY_B: &str = "key-of-app-b-x81nd0sv2";

fn sha256_hex(s: &str) -> String {
    let out = run_cli(&["hash-key", s], &[]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn token(sub: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// What the echo upstream saw.
fn seen(r: &Response) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn consumers_yaml() -> String {
    let pw = bcrypt::hash("correct horse", 4).unwrap();
    format!(
        r#"
jwt:
  main:
    algorithms: [HS256]
    secret: "{SECRET}"
    claims_to_headers: {{ sub: X-User-ID }}
    token_from: [header, "cookie:session", "query:access_token"]
consumers:
  partner-a: {{ groups: [partners, paying], api_keys: ["{}"] }}
  app-b: {{ groups: [apps], api_keys: ["{}"], basic: {{ username: bob, password_hash: '{pw}' }} }}
"#,
        sha256_hex(KEY_A),
        sha256_hex(KEY_B)
    )
}

fn get_with(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> Response {
    request(gw.addr, "GET", target, headers, b"").expect("request")
}

#[test]
fn api_keys_from_a_header_or_the_query_name_the_consumer_and_never_reach_the_upstream() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  \
         - {{ name: keyed, match: {{ path_prefix: /keyed }}, service: s, auth: [{{ api_key: {{ header: X-Api-Key, query: api_key }} }}] }}\n  \
         - {{ name: public, match: {{ path_prefix: / }}, service: s }}\n",
        consumers_yaml(),
        up[0].addr()
    ));
    let r = get_with(&gw, "/keyed/x", &[("x-api-key", KEY_A)]);
    let j = seen(&r);
    assert_eq!(j["headers"]["x-consumer"], "partner-a");
    assert_eq!(j["headers"]["x-consumer-groups"], "partners,paying");
    assert!(j["headers"].get("x-api-key").is_none(), "{j}");

    let r = get_with(&gw, &format!("/keyed/q?a=1&api_key={KEY_B}&b=2"), &[]);
    let j = seen(&r);
    assert_eq!(j["headers"]["x-consumer"], "app-b");
    assert_eq!(
        j["path"], "/keyed/q?a=1&b=2",
        "the key is taken off the query"
    );

    // A wrong key and an unknown one look the same; no key at all is another reason.
    for key in [&KEY_A[..KEY_A.len() - 1], "nope"] {
        let r = get_with(&gw, "/keyed/x", &[("x-api-key", key)]);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "invalid_api_key");
    }
    let r = get_with(&gw, "/keyed/x", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_credentials");
    assert_eq!(r.header("www-authenticate"), Some("ApiKey"));

    // Identity headers from a client are never believed, on any route.
    let r = get_with(&gw, "/open", &[("x-consumer", "partner-a")]);
    assert!(seen(&r)["headers"].get("x-consumer").is_none());

    assert_eq!(
        gw.metric(
            "gatehouse_auth_failures_total",
            "reason=\"invalid_api_key\",route=\"keyed\""
        )
        .or_else(|| gw.metric(
            "gatehouse_auth_failures_total",
            "route=\"keyed\",reason=\"invalid_api_key\""
        )),
        Some(2.0),
        "{}",
        gw.metrics()
    );
    // The access log never holds a key, even one sent in the query string.
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log();
    assert!(log.contains("\"route\":\"keyed\""), "{log}");
    assert!(!log.contains(KEY_A) && !log.contains(KEY_B), "{log}");
}

#[test]
fn basic_auth_and_methods_combined_in_order() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  \
         - {{ name: kept, match: {{ path_prefix: /kept }}, service: s, auth: [basic], keep_credentials: true }}\n  \
         - {{ name: any, match: {{ path_prefix: / }}, service: s, auth: [{{ jwt: main }}, api_key, basic] }}\n",
        consumers_yaml(),
        up[0].addr()
    ));
    // Each method on its own.
    let r = get_with(
        &gw,
        "/x",
        &[("authorization", &basic("bob", "correct horse"))],
    );
    let j = seen(&r);
    assert_eq!(j["headers"]["x-consumer"], "app-b");
    assert!(
        j["headers"].get("authorization").is_none(),
        "credential removed: {j}"
    );
    let r = get_with(
        &gw,
        "/x",
        &[("authorization", &format!("Bearer {}", token("alice")))],
    );
    let j = seen(&r);
    assert_eq!(j["headers"]["x-user-id"], "alice");
    assert!(
        j["headers"].get("x-consumer").is_none(),
        "a JWT names no consumer"
    );
    let r = get_with(&gw, "/x", &[("x-api-key", KEY_A)]);
    assert_eq!(seen(&r)["headers"]["x-consumer"], "partner-a");

    // Refused credentials: wrong password and unknown user look the same.
    for auth in [basic("bob", "wrong"), basic("eve", "correct horse")] {
        let r = get_with(&gw, "/x", &[("authorization", &auth)]);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], "invalid_credentials");
    }
    let r = get_with(&gw, "/x", &[("authorization", "Bearer not.a.jwt")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "malformed_token");
    // Nothing at all: every method's challenge.
    let r = get_with(&gw, "/x", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_credentials");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer, ApiKey, Basic realm=\"gatehouse\"")
    );
    // A refused method does not stop a later one: a bad key with a good password passes.
    let r = get_with(
        &gw,
        "/x",
        &[
            ("x-api-key", "wrong"),
            ("authorization", &basic("bob", "correct horse")),
        ],
    );
    assert_eq!(seen(&r)["headers"]["x-consumer"], "app-b");
    // keep_credentials forwards the credential.
    let r = get_with(
        &gw,
        "/kept",
        &[("authorization", &basic("bob", "correct horse"))],
    );
    assert!(seen(&r)["headers"]["authorization"]
        .as_str()
        .unwrap()
        .starts_with("Basic "));
}

#[test]
fn jwts_from_a_cookie_or_the_query_string() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  \
         - {{ name: r, match: {{ path_prefix: / }}, service: s, auth: main }}\n",
        consumers_yaml(),
        up[0].addr()
    ));
    let t = token("carol");
    let r = get_with(
        &gw,
        "/c",
        &[("cookie", &format!("theme=dark; session={t}"))],
    );
    assert_eq!(seen(&r)["headers"]["x-user-id"], "carol");
    let r = get_with(&gw, &format!("/q?access_token={t}&x=1"), &[]);
    let j = seen(&r);
    assert_eq!(j["headers"]["x-user-id"], "carol");
    assert_eq!(j["path"], "/q?x=1");
    let r = get_with(&gw, "/q?access_token=bad.token.here", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "malformed_token");
    let r = get_with(&gw, "/none", &[]);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, "missing_token".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !gw.log().contains(&t),
        "a token from the query string is never logged"
    );
}

/// A forward-auth service: `Bearer good` → 200 with `X-User-Id`; `Bearer deny` → 403
/// with its own body; `Bearer hang` → no answer for 5 s; anything else → 401.
struct AuthService {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl AuthService {
    fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut auth = String::new();
                        let mut uri = String::new();
                        let mut line = String::new();
                        let mut first = true;
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() && !first {
                                break;
                            }
                            first = false;
                            if let Some((k, v)) = l.split_once(':') {
                                match k.to_ascii_lowercase().as_str() {
                                    "authorization" => auth = v.trim().to_string(),
                                    "x-forwarded-uri" => uri = v.trim().to_string(),
                                    _ => {}
                                }
                            }
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let resp = match auth.as_str() {
                            "Bearer good" => format!(
                                "HTTP/1.1 200 OK\r\nx-user-id: u-42\r\nx-seen-uri: {uri}\r\ncontent-length: 0\r\n\r\n"
                            ),
                            "Bearer deny" => {
                                let body = r#"{"why":"account suspended"}"#;
                                format!(
                                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nwww-authenticate: Bearer realm=\"corp\"\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                            }
                            "Bearer hang" => {
                                std::thread::sleep(Duration::from_secs(5));
                                return;
                            }
                            _ => "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_string(),
                        };
                        if conn.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        AuthService { addr, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[test]
fn forward_auth_allows_denies_times_out_and_caches() {
    let up = upstreams(1);
    let svc = AuthService::start();
    let dead = free_port();
    let gw = Gateway::start(&format!(
        r#"
forward_auth:
  ext: {{ url: "http://{}/check", timeout: 300ms, copy_headers: [X-User-Id] }}
  cached: {{ url: "http://{}/check", timeout: 300ms, copy_headers: [X-User-Id], cache_ttl: 1s }}
  down: {{ url: "http://127.0.0.1:{dead}/check", timeout: 300ms }}
services:
  s: {{ upstreams: [{{ address: "{}" }}] }}
routes:
  - {{ name: cached, match: {{ path_prefix: /cached }}, service: s, auth: [{{ forward: cached }}] }}
  - {{ name: down, match: {{ path_prefix: /down }}, service: s, auth: [{{ forward: down }}] }}
  - {{ name: lenient, match: {{ path_prefix: /lenient }}, service: s, auth: [{{ forward: down, on_error: allow }}] }}
  - {{ name: ext, match: {{ path_prefix: / }}, service: s, auth: [{{ forward: ext }}] }}
"#,
        svc.addr,
        svc.addr,
        up[0].addr()
    ));
    // Allowed: the service's X-User-Id is copied, the client's own is not believed.
    let r = get_with(
        &gw,
        "/a?x=1",
        &[("authorization", "Bearer good"), ("x-user-id", "spoofed")],
    );
    let j = seen(&r);
    assert_eq!(j["headers"]["x-user-id"], "u-42", "{j}");
    // Denied: the service's status, body and challenge reach the client.
    let r = get_with(&gw, "/a", &[("authorization", "Bearer deny")]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"why":"account suspended"}"#);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"corp\""));
    let r = get_with(&gw, "/a", &[]);
    assert_eq!(r.status, 401);
    // Hanging: 503 within the timeout.
    let t = Instant::now();
    let r = get_with(&gw, "/a", &[("authorization", "Bearer hang")]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "auth_unavailable");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Down: 503, or through on a route that says on_error: allow.
    let r = get_with(&gw, "/down", &[("authorization", "Bearer good")]);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (503, "auth_unavailable".into())
    );
    let r = get_with(&gw, "/lenient", &[("authorization", "Bearer good")]);
    assert_eq!(r.status, 200);

    // Cached: one call for repeats within the TTL, per credential, another after it.
    let before = svc.calls();
    for _ in 0..3 {
        let r = get_with(&gw, "/cached", &[("authorization", "Bearer good")]);
        assert_eq!(seen(&r)["headers"]["x-user-id"], "u-42");
    }
    assert_eq!(svc.calls() - before, 1);
    let r = get_with(&gw, "/cached", &[("authorization", "Bearer deny")]);
    assert_eq!(r.status, 403);
    let r = get_with(&gw, "/cached", &[("authorization", "Bearer deny")]);
    assert_eq!(r.status, 403);
    assert_eq!(svc.calls() - before, 2, "a denial is cached too");
    std::thread::sleep(Duration::from_millis(1200));
    let r = get_with(&gw, "/cached", &[("authorization", "Bearer good")]);
    assert_eq!(r.status, 200);
    assert_eq!(svc.calls() - before, 3, "asked again after the TTL");
}

#[test]
fn consumer_limits_and_required_groups() {
    let up = upstreams(1);
    let gw = Gateway::start(&format!(
        "{}forward_auth:\n  open: {{ url: \"http://127.0.0.1:{}/\", timeout: 200ms }}\n\
         rate_limits:\n  policies:\n    per-consumer: {{ key: consumer, limit: 2, window: 1m }}\n    \
         consumers-only: {{ key: consumer, limit: 100, window: 1s, fallback: refuse }}\n\
         services:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  \
         - {{ name: partners, match: {{ path_prefix: /partners }}, service: s, auth: [api_key], require_groups: [partners] }}\n  \
         - {{ name: strict, match: {{ path_prefix: /strict }}, service: s, auth: [{{ forward: open, on_error: allow }}], rate_limit: [consumers-only] }}\n  \
         - {{ name: limited, match: {{ path_prefix: / }}, service: s, auth: [api_key], rate_limit: [per-consumer] }}\n",
        consumers_yaml(),
        free_port(),
        up[0].addr()
    ));
    for _ in 0..2 {
        assert_eq!(get_with(&gw, "/x", &[("x-api-key", KEY_A)]).status, 200);
    }
    let r = get_with(&gw, "/x", &[("x-api-key", KEY_A)]);
    assert_eq!(r.status, 429);
    // Another consumer has its own bucket.
    assert_eq!(get_with(&gw, "/x", &[("x-api-key", KEY_B)]).status, 200);
    // Groups.
    assert_eq!(
        get_with(&gw, "/partners", &[("x-api-key", KEY_A)]).status,
        200
    );
    let r = get_with(&gw, "/partners", &[("x-api-key", KEY_B)]);
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, "forbidden".into())
    );
    // A consumer-keyed policy with fallback: refuse lets no anonymous request through.
    let r = get_with(&gw, "/strict", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn bad_consumer_configs_are_refused_with_their_paths() {
    let dir = scratch_dir("consumers-check");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        r#"
listen: [{ address: "127.0.0.1:1" }]
consumers:
  a: { groups: [ops], api_keys: [not-a-digest], basic: { username: a, password_hash: "letmein" } }
forward_auth:
  ext: { url: "http://127.0.0.1:1/" }
services:
  s: { upstreams: [{ address: "127.0.0.1:1" }] }
routes:
  - { name: g, match: { path_prefix: /g }, service: s, auth: [basic], require_groups: [admins] }
  - { name: f, match: { path_prefix: /f }, service: s, auth: [{ forward: nowhere }] }
  - { name: k, match: { path_prefix: / }, service: s, auth: [api_key] }
"#,
    )
    .unwrap();
    let out = run_cli(&["-c", file.to_str().unwrap(), "-t"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "consumers.a.api_keys[0]",
        "consumers.a.basic.password_hash",
        "routes[0].require_groups[0]: no consumer is in group \"admins\"",
        "routes[1].auth[0].forward: unknown forward_auth service \"nowhere\"",
        "routes[2].auth[0]: api_key: no consumer has an API key",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }
    assert!(!err.contains("letmein"), "{err}");
}

#[test]
fn a_consumers_file_is_read_again_on_reload_and_a_bad_one_keeps_the_old() {
    let up = upstreams(1);
    let dir = scratch_dir("consumers-file");
    let file = dir.join("consumers.yaml");
    std::fs::write(
        &file,
        format!("a: {{ api_keys: [\"{}\"] }}\n", sha256_hex(KEY_A)),
    )
    .unwrap();
    let gw = Gateway::start(&format!(
        "consumers_file: {}\nservices:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  \
         - {{ name: k, match: {{ path_prefix: / }}, service: s, auth: [api_key] }}\n",
        file.display(),
        up[0].addr()
    ));
    assert_eq!(get_with(&gw, "/", &[("x-api-key", KEY_A)]).status, 200);
    assert_eq!(get_with(&gw, "/", &[("x-api-key", KEY_B)]).status, 401);
    // The main config is unchanged; only the consumers file moves.
    write_atomically(
        &file,
        &format!("b: {{ api_keys: [\"{}\"] }}\n", sha256_hex(KEY_B)),
    );
    gw.signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || {
        get_with(&gw, "/", &[("x-api-key", KEY_B)]).status == 200
    }));
    assert_eq!(get_with(&gw, "/", &[("x-api-key", KEY_A)]).status, 401);
    // A broken file is refused and the consumers in force stay.
    write_atomically(&file, "b: { api_keys: [broken] }\n");
    let reloads = gw
        .metric("gatehouse_config_reloads_total", "result=\"error\"")
        .unwrap_or(0.0);
    gw.signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("gatehouse_config_reloads_total", "result=\"error\"")
            .unwrap_or(0.0)
            > reloads
    }));
    assert_eq!(get_with(&gw, "/", &[("x-api-key", KEY_B)]).status, 200);
}
