//! Per-route header rules (`request_headers`, `response_headers`): remove, set, add.

use super::template::{self, Parsed, Template, TemplateVars};
use crate::config::error::ConfigError;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `request_headers:` / `response_headers:` as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    /// Replace the header (all existing values) with this value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append a value, keeping existing ones.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Delete the header.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Where compiled rules write. The gateway implements this for Pingora's
/// `RequestHeader` / `ResponseHeader`; it is implemented here for `http::HeaderMap`.
pub trait HeaderSink {
    /// Replace every value of `name` with `value`.
    fn insert(&mut self, name: HeaderName, value: HeaderValue);
    /// Add `value` after any existing values of `name`.
    fn append(&mut self, name: HeaderName, value: HeaderValue);
    /// Delete every value of `name`.
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderSink for HeaderMap {
    fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::insert(self, name, value);
    }
    fn append(&mut self, name: HeaderName, value: HeaderValue) {
        HeaderMap::append(self, name, value);
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}

/// Compiled header rules: names parsed, literal values pre-built, templates pre-split.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
}

#[derive(Debug, Clone)]
enum Value {
    Static(HeaderValue),
    Template(Template),
}

impl Value {
    fn render(&self, vars: &dyn TemplateVars) -> Option<HeaderValue> {
        match self {
            Value::Static(v) => Some(v.clone()),
            Value::Template(t) => t.render(vars),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Set,
    Add,
    Remove,
}

/// Headers that describe the connection or the message framing. Pingora owns them;
/// changing them from config would desynchronise the framing (request smuggling,
/// truncated bodies) or break upgrades, so they are refused outright.
const MANAGED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

fn check_name(name: &str, op: Op) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    if MANAGED.contains(&parsed.as_str()) {
        return Err(format!(
            "{name} is a hop-by-hop or framing header managed by the proxy; it cannot be set, added or removed"
        ));
    }
    // A request needs exactly one Host; replacing it (virtual-hosted upstreams) is fine.
    if parsed == http::header::HOST && op != Op::Set {
        return Err("Host can only be `set` (a request must carry exactly one Host header)".into());
    }
    Ok(parsed)
}

/// Compile one `request_headers` / `response_headers` block. `path` is the block's own
/// path (`routes[2].request_headers`); errors point below it
/// (`routes[2].request_headers.set.X-User`). With `allow_templates == false` any
/// `{variable}` is an error (braces still need `{{`/`}}`). All problems are reported,
/// not just the first.
pub fn build_header_rules(
    raw: &RawHeaderRules,
    path: &str,
    allow_templates: bool,
) -> Result<HeaderRules, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut rules = HeaderRules::default();

    for (i, name) in raw.remove.iter().enumerate() {
        match check_name(name, Op::Remove) {
            Ok(n) if !rules.remove.contains(&n) => rules.remove.push(n),
            Ok(_) => {}
            Err(e) => errors.push(ConfigError::new(format!("{path}.remove[{i}]"), e)),
        }
    }
    for (op, key, map) in [(Op::Set, "set", &raw.set), (Op::Add, "add", &raw.add)] {
        let mut seen: Vec<(HeaderName, &str)> = Vec::new();
        for (name, value) in map {
            let at = format!("{path}.{key}.{name}");
            let parsed_name = match check_name(name, op) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(ConfigError::new(at, e));
                    continue;
                }
            };
            if let Some((_, first)) = seen.iter().find(|(n, _)| *n == parsed_name) {
                errors.push(ConfigError::new(
                    at,
                    format!(
                        "duplicate header (names are case-insensitive; also listed as {first})"
                    ),
                ));
                continue;
            }
            seen.push((parsed_name.clone(), name));
            let value = match template::parse(value, allow_templates) {
                Ok(Parsed::Literal(s)) => match HeaderValue::try_from(s) {
                    Ok(v) => Value::Static(v),
                    Err(_) => {
                        errors.push(ConfigError::new(at, "invalid header value"));
                        continue;
                    }
                },
                Ok(Parsed::Template(t)) => Value::Template(t),
                Err(e) => {
                    errors.push(ConfigError::new(at, e));
                    continue;
                }
            };
            let list = if op == Op::Set {
                &mut rules.set
            } else {
                &mut rules.add
            };
            list.push((parsed_name, value));
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

impl HeaderRules {
    /// True when there is nothing to do (lets the proxy skip the phase cheaply).
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Apply in a fixed order: remove, then set, then add — so `remove: [X]` plus
    /// `add: {X: v}` yields exactly `X: v`, and `set` + `add` yields both values.
    ///
    /// A `set` whose template cannot be rendered (missing client IP or claim, or a
    /// value with CR/LF or other control characters) *removes* the header instead:
    /// `set` means the gateway owns that header, so a client-supplied `X-User` must not
    /// survive just because the request had no token. An `add` that cannot be rendered
    /// adds nothing.
    pub fn apply(&self, headers: &mut impl HeaderSink, vars: &dyn TemplateVars) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            match value.render(vars) {
                Some(v) => headers.insert(name.clone(), v),
                None => headers.remove(name),
            }
        }
        for (name, value) in &self.add {
            if let Some(v) = value.render(vars) {
                headers.append(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
