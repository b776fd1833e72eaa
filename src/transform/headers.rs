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
