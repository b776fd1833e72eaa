use super::*;
use crate::upstream::config::{Balance, HashKey, DEFAULT_TIMEOUTS};
use std::time::Duration;

fn load(yaml: &str) -> Result<Config, Vec<String>> {
    let env = |name: &str| match name {
        "UPSTREAM_PORT" => Some("9001".to_string()),
        _ => None,
    };
    Config::from_yaml(yaml, Path::new("test.yaml"), &env)
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
}

const GOOD: &str = r#"
listen: [{ address: "127.0.0.1:8080" }]
admin: { address: "127.0.0.1:9091" }
server: { threads: 2, grace_period: 2s, trusted_proxies: [10.0.0.0/8, 127.0.0.1] }
services:
  users:
    upstreams:
      - { address: "127.0.0.1:${UPSTREAM_PORT}", weight: 3 }
      - { address: "127.0.0.1:9002" }
    balance: weighted
    health_check: { type: http, path: /health, interval: 1s, timeout: 200ms }
    timeouts: { connect: 250ms }
    retries: { attempts: 2 }
routes:
  - name: users
    match: { host: API.example.com, path_prefix: /api/users/, methods: [get, POST] }
    service: users
    strip_prefix: true
"#;

#[test]
fn good_config_is_normalised() {
    let c = load(GOOD).unwrap();
    let svc = &c.services["users"];
    assert_eq!(svc.upstreams[0].address, "127.0.0.1:9001");
    assert_eq!(svc.upstreams[0].weight, 3);
    assert_eq!(svc.balance, Balance::Weighted);
    assert_eq!(svc.timeouts.connect, Duration::from_millis(250));
    assert_eq!(svc.timeouts.read, DEFAULT_TIMEOUTS.read);
    assert_eq!(svc.retries, 2);
    let r = &c.routes[0];
    assert_eq!(r.host.as_deref(), Some("api.example.com"));
    assert_eq!(r.path_prefix, "/api/users");
    assert_eq!(r.methods, vec![http::Method::GET, http::Method::POST]);
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(c.server.grace_period, Duration::from_secs(2));
    assert!(
        c.server.work_stealing,
        "two threads: one work-stealing runtime unless asked"
    );
    let one = GOOD.replace("threads: 2,", "threads: 1,");
    assert!(
        !load(&one).unwrap().server.work_stealing,
        "one thread: a single-threaded runtime unless asked"
    );
    let per_thread = GOOD.replace("threads: 2,", "threads: 2, work_stealing: false,");
    assert!(!load(&per_thread).unwrap().server.work_stealing);
    let stealing = GOOD.replace("threads: 2,", "threads: 1, work_stealing: true,");
    assert!(load(&stealing).unwrap().server.work_stealing);
    let bad = GOOD.replace("threads: 2,", "threads: 2, work_stealing: sometimes,");
    let errs = load(&bad).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("work_stealing")), "{errs:?}");
}

#[test]
fn every_error_is_reported_with_its_path() {
    let bad = r#"
listen: [{ address: "nonsense" }]
bogus: 1
server: { access_log: { format: xml } }
services:
  users:
    upstreams: [{ address: "127.0.0.1:9001", weight: 0 }]
    balance: fastest
    health_check: { type: http, path: health, expect_status: 999 }
  empty: { upstreams: [] }
routes:
  - { name: a, match: { path_prefix: /a, methods: [FETCH] }, service: user }
  - { name: a, match: { path_prefix: b }, service: users }
  - { name: c, match: { path_prefx: /c }, service: users }
"#;
    let errors = load(bad).unwrap_err();
    let expect = [
        "listen[0].address: invalid address",
        "bogus: unknown key",
        "server.access_log.format: unknown format \"xml\"",
        "services.users.upstreams[0].weight: must be between 1 and 1000",
        "services.users.balance: unknown balance \"fastest\" (valid: round_robin",
        "services.users.health_check.path: must be an absolute path",
        "services.users.health_check.expect_status:",
        "services.empty.upstreams: at least one upstream",
        "routes[0].service: unknown service \"user\" (known: users, empty)",
        "routes[0].match.methods[0]: unknown method \"FETCH\"",
        "routes[1].name: duplicate route name",
        "routes[1].match.path_prefix: must be a path",
        "routes[2].match.path_prefx: unknown field `path_prefx`, expected one of",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn unset_variable_is_an_error_with_path() {
    let yaml = GOOD.replace("${UPSTREAM_PORT}", "${NOT_SET_ANYWHERE}");
    let errors = load(&yaml).unwrap_err();
    assert!(
        errors[0].starts_with("services.users.upstreams[0].address: environment variable"),
        "{errors:?}"
    );
}

#[test]
fn hash_key_only_with_consistent_hash() {
    let yaml = GOOD.replace(
        "balance: weighted",
        "balance: weighted\n    hash_key: client_ip",
    );
    let errors = load(&yaml).unwrap_err();
    assert_eq!(
        errors,
        vec!["services.users.hash_key: only applies to balance: consistent_hash"]
    );
    let yaml = GOOD.replace(
        "balance: weighted",
        "balance: consistent_hash\n    hash_key: header:X-User",
    );
    let c = load(&yaml).unwrap();
    assert!(matches!(c.services["users"].hash_key, HashKey::Header(_)));
}

#[test]
fn invalid_yaml_names_the_line() {
    let errors = load("listen: [\n  - {").unwrap_err();
    assert!(errors[0].starts_with("line "), "{errors:?}");
}

mod env;
mod units;

#[test]
fn a_section_with_errors_still_declares_its_names() {
    // A bad Redis URL is one error: the route naming the section's policy is not also
    // told the policy is unknown.
    let section =
        "rate_limits:\n  store: redis\n  redis: { url: \"http//nope\" }\n  policies:\n    \
                   per-key: { key: \"header:X-Api-Key\", limit: 5, window: 1s }\nroutes:";
    let yaml = GOOD.replace("routes:", section) + "    rate_limit: [per-key]\n";
    let errors = load(&yaml).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("rate_limits.redis.url: invalid redis url"),
        "{errors:?}"
    );
}

#[test]
fn client_timeouts_limits_and_max_connections() {
    use crate::config::server::{ClientTimeouts, HeadLimits};
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.timeouts, ClientTimeouts::default());
    assert_eq!(c.server.timeouts.client_header, Duration::from_secs(10));
    assert_eq!(c.server.limits, HeadLimits::default());
    assert_eq!(c.server.limits.request_headers, 100);
    assert_eq!(c.server.max_connections, None);

    let set = GOOD.replace(
        "threads: 2,",
        "threads: 2, timeouts: { client_header: 2s, client_body: 5s, send: 7s, keepalive: 15s, \
         preface: 3s }, limits: { request_headers: 50, request_head: 16KiB, response_head: \
         32KiB }, max_connections: 1000,",
    );
    let c = load(&set).unwrap();
    let t = c.server.timeouts;
    assert_eq!(
        (
            t.client_header,
            t.client_body,
            t.send,
            t.keepalive,
            t.preface
        ),
        (
            Duration::from_secs(2),
            Duration::from_secs(5),
            Duration::from_secs(7),
            Duration::from_secs(15),
            Duration::from_secs(3)
        )
    );
    assert_eq!(
        (
            c.server.limits.request_headers,
            c.server.limits.request_head,
            c.server.limits.response_head
        ),
        (50, 16 * 1024, 32 * 1024)
    );
    assert_eq!(c.server.max_connections, Some(1000));

    // Every bad value at once, each with its path.
    let bad = GOOD.replace(
        "threads: 2,",
        "threads: 2, timeouts: { client_header: 1ms, keepalive: 0s, nap: 1s }, limits: { \
         request_headers: 1000, request_head: 10, response_head: 2MiB }, max_connections: 0,",
    );
    let errs = load(&bad).unwrap_err();
    // An unknown key fails the section's shape; fix it and the values are checked.
    assert!(errs.iter().any(|e| e.contains("nap")), "{errs:?}");
    let bad = bad.replace(", nap: 1s", "");
    let errs = load(&bad).unwrap_err();
    for path in [
        "server.timeouts.client_header",
        "server.timeouts.keepalive",
        "server.limits.request_headers",
        "server.limits.request_head",
        "server.limits.response_head",
        "server.max_connections",
    ] {
        assert!(errs.iter().any(|e| e.contains(path)), "{path}: {errs:?}");
    }
}

#[test]
fn admin_tokens_are_checked() {
    let line = r#"admin: { address: "127.0.0.1:9091" }"#;
    assert!(GOOD.contains(line));
    assert!(load(GOOD).unwrap().admin_token.is_none());
    let set = |extra: &str| {
        GOOD.replace(
            line,
            &format!(r#"admin: {{ address: "127.0.0.1:9091", {extra} }}"#),
        )
    };
    let c = load(&set("token: 0123456789abcdef0123")).unwrap();
    let token = c.admin_token.unwrap();
    assert_eq!(token.0, b"0123456789abcdef0123");
    let shown = format!("{token:?}");
    assert!(
        shown.contains("redacted") && !shown.contains("0123"),
        "{shown}"
    );
    for (extra, path) in [
        ("token: short", "admin.token"),
        ("token: 0123456789abcdef0123, token_file: /x", "admin.token"),
        ("token_file: /nonexistent/admin.token", "admin.token_file"),
    ] {
        let errs = load(&set(extra)).unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "{extra}: {errs:?}"
        );
        assert!(
            !errs.iter().any(|e| e.contains("0123456789abcdef0123")),
            "{errs:?}"
        );
    }
}
