//! Request conditions a route may add to host, path prefix and method: headers, query
//! parameters, cookies (each exact, present/absent, or a regex) and a path regex with
//! named captures. Compiled at load; only routes that have them pay for them, and only
//! when the trie has already picked them as candidates by path.

use crate::config::error::ConfigError;
use regex::bytes::Regex as BytesRegex;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `X-Beta: "yes"`, `X-Beta: { present: true }`, `X-Beta: { regex: "^(1|yes)$" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCond {
    Exact(String),
    Rule(RawRule),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    exact: Option<String>,
    present: Option<bool>,
    regex: Option<String>,
}

/// One compiled condition on a value (a header's, a query parameter's, a cookie's).
#[derive(Debug, Clone)]
pub enum Cond {
    Exact(Box<[u8]>),
    /// `true`: the value is there (any value); `false`: it is not.
    Present(bool),
    Regex(BytesRegex),
}

impl Cond {
    fn compile(raw: &RawCond, path: &str, errors: &mut Vec<ConfigError>) -> Option<Cond> {
        let rule = match raw {
            RawCond::Exact(v) => return Some(Cond::Exact(v.as_bytes().into())),
            RawCond::Rule(r) => r,
        };
        let set = [
            rule.exact.is_some(),
            rule.present.is_some(),
            rule.regex.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            errors.push(ConfigError::new(
                path,
                "give exactly one of exact, present, regex (or a plain string for exact)",
            ));
            return None;
        }
        if let Some(v) = &rule.exact {
            return Some(Cond::Exact(v.as_bytes().into()));
        }
        if let Some(p) = rule.present {
            return Some(Cond::Present(p));
        }
        let src = rule.regex.as_deref().unwrap_or_default();
        match BytesRegex::new(src) {
            Ok(r) => Some(Cond::Regex(r)),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{path}.regex"),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                ));
                None
            }
        }
    }

    /// Whether `value` (the first one present, or none) satisfies it.
    pub fn holds(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Cond::Present(want), v) => v.is_some() == *want,
            (Cond::Exact(e), Some(v)) => **e == *v,
            (Cond::Regex(r), Some(v)) => r.is_match(v),
            (_, None) => false,
        }
    }
}

/// One shared copy of each header name conditions use (cloning a `HeaderName` shares
/// its bytes), so a lookup's memo recognises a name by its address. Bounded: past 4,096
/// names (many reloads with changing names) new ones are simply not shared.
fn intern(h: http::HeaderName) -> http::HeaderName {
    static NAMES: std::sync::Mutex<Vec<http::HeaderName>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = names.iter().find(|n| **n == h) {
        return n.clone();
    }
    if names.len() < 4096 {
        names.push(h.clone());
    }
    h
}

/// A regex error on one line (the regex crate's are multi-line with a caret).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A route's compiled conditions beyond host, prefix and method.
#[derive(Debug, Default)]
pub struct Conditions {
    /// Matched against the request path as sent (not decoded), without the query.
    pub path_regex: Option<Regex>,
    pub headers: Box<[(http::HeaderName, Cond)]>,
    pub query: Box<[(Box<str>, Cond)]>,
    pub cookies: Box<[(Box<str>, Cond)]>,
}

/// What conditions look at in a request.
pub struct RequestView<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

/// Header values already looked up during one route lookup: routes that test the same
/// header (a canary flag on many routes) hash its name once.
#[derive(Default)]
pub struct HeaderMemo<'a> {
    seen: smallvec::SmallVec<[Looked<'a>; 4]>,
}

/// A header name and its first value, if any.
type Looked<'a> = (&'a http::HeaderName, Option<&'a [u8]>);

impl<'a> HeaderMemo<'a> {
    fn get(
        &mut self,
        headers: &'a http::HeaderMap,
        name: &'a http::HeaderName,
    ) -> Option<&'a [u8]> {
        // Names are interned at load, so the same name is usually the same bytes.
        let same = |n: &&http::HeaderName| {
            std::ptr::eq(n.as_str().as_ptr(), name.as_str().as_ptr()) || *n == name
        };
        if let Some((_, v)) = self.seen.iter().find(|(n, _)| same(n)) {
            return *v;
        }
        let v = headers.get(name).map(|v| v.as_bytes());
        self.seen.push((name, v));
        v
    }
}

impl Conditions {
    /// Compile `match.path_regex`, `match.headers`, `match.query`, `match.cookies`;
    /// `None` when the route has none of them.
    pub fn compile(
        path_regex: Option<&str>,
        headers: &BTreeMap<String, RawCond>,
        query: &BTreeMap<String, RawCond>,
        cookies: &BTreeMap<String, RawCond>,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Conditions> {
        if path_regex.is_none() && headers.is_empty() && query.is_empty() && cookies.is_empty() {
            return None;
        }
        let path_regex = path_regex.and_then(|src| match Regex::new(src) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(ConfigError::new(
                    format!("{path}.match.path_regex"),
                    format!("invalid regex: {}", one_line(&e.to_string())),
                ));
                None
            }
        });
        let mut hs = Vec::new();
        for (name, raw) in headers {
            let at = format!("{path}.match.headers.{name}");
            let Ok(h) = http::HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(ConfigError::new(&at, "invalid header name"));
                continue;
            };
            let h = intern(h);
            if let Some(c) = Cond::compile(raw, &at, errors) {
                hs.push((h, c));
            }
        }
        let named = |map: &BTreeMap<String, RawCond>, key: &str, errors: &mut Vec<ConfigError>| {
            let mut out = Vec::new();
            for (name, raw) in map {
                let at = format!("{path}.match.{key}.{name}");
                if name.is_empty() {
                    errors.push(ConfigError::new(&at, "empty name"));
                    continue;
                }
                if let Some(c) = Cond::compile(raw, &at, errors) {
                    out.push((Box::<str>::from(name.as_str()), c));
                }
            }
            out.into_boxed_slice()
        };
        let query = named(query, "query", errors);
        let cookies = named(cookies, "cookies", errors);
        Some(Conditions {
            path_regex,
            headers: hs.into_boxed_slice(),
            query,
            cookies,
        })
    }

    /// Whether the request meets every condition.
    pub fn hold<'a>(&'a self, req: &RequestView<'a>, memo: &mut HeaderMemo<'a>) -> bool {
        if let Some(r) = &self.path_regex {
            if !r.is_match(req.path) {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, c)| c.holds(memo.get(req.headers, name)))
            && self.query.iter().all(|(name, c)| {
                let v = req.query.and_then(|q| query_param(q, name));
                c.holds(v.as_deref())
            })
            && self
                .cookies
                .iter()
                .all(|(name, c)| c.holds(cookie(req.headers, name)))
    }
}

/// The first value of query parameter `name` (percent- and `+`-decoded).
pub fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k).as_deref() == Some(name.as_bytes())).then(|| decode(v).unwrap_or_default())
    })
}

fn decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}
