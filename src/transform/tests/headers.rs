use crate::transform::headers::*;
use crate::transform::TemplateVars;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::net::IpAddr;

struct Vars {
    ip: Option<IpAddr>,
    sub: Option<&'static str>,
}

impl TemplateVars for Vars {
    fn request_id(&self) -> &str {
        "req-1"
    }
    fn client_ip(&self) -> Option<IpAddr> {
        self.ip
    }
    fn host(&self) -> &str {
        "api.example.com"
    }
    fn method(&self) -> &str {
        "POST"
    }
    fn path(&self) -> &str {
        "/v1/users"
    }
    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "sub" => self.sub.map(Cow::Borrowed),
            "org.id" => Some(Cow::Owned(42.to_string())),
            _ => None,
        }
    }
}

fn vars() -> Vars {
    Vars {
        ip: "10.1.2.3".parse().ok(),
        sub: Some("alice"),
    }
}

fn rules(yaml: &str) -> HeaderRules {
    let raw: RawHeaderRules = serde_yaml::from_str(yaml).unwrap();
    build_header_rules(&raw, "routes[0].request_headers", true).unwrap()
}

fn errors(yaml: &str, templates: bool) -> Vec<String> {
    let raw: RawHeaderRules = serde_yaml::from_str(yaml).unwrap();
    let errs = build_header_rules(&raw, "routes[2].request_headers", templates).unwrap_err();
    errs.iter().map(ToString::to_string).collect()
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in pairs {
        m.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

fn all<'a>(m: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    m.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn remove_then_set_then_add() {
    let r = rules(
        "{ set: { X-Env: prod, X-Both: one }, add: { X-Both: two, X-Gone: new }, remove: [Cookie, X-Gone] }",
    );
    let mut h = map(&[
        ("cookie", "a=1"),
        ("x-env", "dev"),
        ("x-env", "test"),
        ("x-gone", "old"),
        ("x-both", "client"),
        ("accept", "*/*"),
    ]);
    r.apply(&mut h, &vars());
    assert!(h.get("cookie").is_none());
    assert_eq!(all(&h, "x-env"), ["prod"]);
    assert_eq!(all(&h, "x-both"), ["one", "two"]);
    assert_eq!(all(&h, "x-gone"), ["new"]);
    assert_eq!(all(&h, "accept"), ["*/*"]);
    assert!(!r.is_empty());
    assert!(rules("{}").is_empty());
}

#[test]
fn every_variable() {
    let r = rules(
        r#"set:
             A: "{request_id}"
             B: "ip={client_ip}"
             C: "{host}"
             D: "{method} {path}"
             E: "Bearer {jwt.sub}/{jwt.org.id} {{x}}""#,
    );
    let mut h = HeaderMap::new();
    r.apply(&mut h, &vars());
    assert_eq!(all(&h, "a"), ["req-1"]);
    assert_eq!(all(&h, "b"), ["ip=10.1.2.3"]);
    assert_eq!(all(&h, "c"), ["api.example.com"]);
    assert_eq!(all(&h, "d"), ["POST /v1/users"]);
    assert_eq!(all(&h, "e"), ["Bearer alice/42 {x}"]);
}

#[test]
fn missing_variable_leaves_header_unset() {
    let r = rules(
        r#"{ set: { X-User: "{jwt.sub}", X-Ip: "{client_ip}" }, add: { X-Tag: "u={jwt.sub}" } }"#,
    );
    // The client tried to spoof X-User; with no claim the header must be gone.
    let mut h = map(&[("x-user", "admin"), ("x-tag", "kept")]);
    r.apply(
        &mut h,
        &Vars {
            ip: None,
            sub: None,
        },
    );
    assert!(h.get("x-user").is_none());
    assert!(h.get("x-ip").is_none());
    assert_eq!(all(&h, "x-tag"), ["kept"]);
}

#[test]
fn claim_cannot_inject_headers() {
    let r = rules(r#"{ set: { X-User: "{jwt.sub}" }, add: { X-Add: "{jwt.sub}" } }"#);
    for evil in [
        "alice\r\nX-Admin: true",
        "alice\nX-Admin: 1",
        "a\rb",
        "nul\0",
    ] {
        let mut h = map(&[("x-user", "spoofed")]);
        r.apply(
            &mut h,
            &Vars {
                ip: None,
                sub: Some(evil),
            },
        );
        assert!(h.get("x-user").is_none(), "{evil:?}");
        assert!(h.get("x-add").is_none(), "{evil:?}");
        assert!(h.get("x-admin").is_none(), "{evil:?}");
    }
}

#[test]
fn invalid_config_reported_with_paths() {
    let errs = errors(
        r#"
        set: { "X User": a, X-User: "{jwt}", X-Ok: "a\r\nb", Bad: "x}" }
        add: { "": a }
        remove: ["Bad:Name", Cookie]
        "#,
        true,
    );
    assert_eq!(
        errs,
        [
            r#"routes[2].request_headers.remove[0]: invalid header name "Bad:Name""#,
            r#"routes[2].request_headers.set.Bad: unmatched `}` (write `}}` for a literal brace)"#,
            r#"routes[2].request_headers.set.X User: invalid header name "X User""#,
            "routes[2].request_headers.set.X-Ok: invalid header value: control character 0x0d is not allowed",
            "routes[2].request_headers.set.X-User: unknown variable {jwt} (valid: request_id, client_ip, host, method, path, jwt.<claim>)",
            r#"routes[2].request_headers.add.: invalid header name """#,
        ]
    );
}

#[test]
fn hop_by_hop_and_host() {
    let errs = errors(
        "{ set: { Connection: close, Host: ok.example, Content-Length: '0' }, add: { Host: x, TE: trailers }, remove: [Transfer-Encoding, Upgrade, keep-alive, Host] }",
        true,
    );
    let has = |p: &str, m: &str| errs.iter().any(|e| e.starts_with(p) && e.contains(m));
    assert!(has(
        "routes[2].request_headers.remove[0]: Transfer-Encoding is a hop-by-hop",
        ""
    ));
    assert!(has(
        "routes[2].request_headers.remove[1]: Upgrade",
        "hop-by-hop"
    ));
    assert!(has(
        "routes[2].request_headers.remove[2]: keep-alive",
        "hop-by-hop"
    ));
    assert!(has(
        "routes[2].request_headers.remove[3]",
        "Host can only be `set`"
    ));
    assert!(has(
        "routes[2].request_headers.set.Connection",
        "hop-by-hop"
    ));
    assert!(has(
        "routes[2].request_headers.set.Content-Length",
        "framing"
    ));
    assert!(has(
        "routes[2].request_headers.add.Host",
        "Host can only be `set`"
    ));
    assert!(has("routes[2].request_headers.add.TE", "hop-by-hop"));
    assert_eq!(errs.len(), 8, "{errs:?}");
    // Host may be replaced deliberately.
    let r = rules("{ set: { Host: backend.internal } }");
    let mut h = map(&[("host", "api.example.com")]);
    r.apply(&mut h, &vars());
    assert_eq!(all(&h, "host"), ["backend.internal"]);
}

#[test]
fn case_insensitive_duplicates_and_no_templates() {
    let errs = errors("{ set: { X-A: '1', x-a: '2' } }", true);
    assert_eq!(
        errs,
        ["routes[2].request_headers.set.x-a: duplicate header (names are case-insensitive; also listed as X-A)"]
    );
    let errs = errors(r#"{ set: { X-Req: "{request_id}" } }"#, false);
    assert!(errs[0].starts_with(
        "routes[2].request_headers.set.X-Req: variable {request_id} is not available here"
    ));
    let raw: RawHeaderRules =
        serde_yaml::from_str(r#"{ set: { X-Json: '{{"a":1}}', X-N: 5 } }"#).unwrap();
    let r = build_header_rules(&raw, "p", false).unwrap();
    let mut h = HeaderMap::new();
    r.apply(&mut h, &vars());
    assert_eq!(all(&h, "x-json"), [r#"{"a":1}"#]);
    assert_eq!(all(&h, "x-n"), ["5"]);
    assert!(serde_yaml::from_str::<RawHeaderRules>("{ sett: {} }").is_err());
}
