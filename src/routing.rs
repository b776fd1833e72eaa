//! The compiled route table (`request_filter`).
//!
//! Routes are compiled once per config load into one segment trie per exact host (plus
//! one for every other host). A lookup walks the request path's segments once, so its
//! cost depends on the path's depth, not on how many routes there are; "first match in
//! file order" is kept by storing route indices and taking the smallest that matches.
//!
//! Path prefixes match on segment boundaries: `/api/users` matches `/api/users` and
//! `/api/users/42`, never `/api/usersX`. Empty and `.` segments are ignored, segments with
//! percent-escapes are decoded before comparing, and a `..` segment (literal or encoded)
//! makes the request a 400: the gateway never routes a path an upstream would resolve
//! to somewhere else.

use crate::config::RouteConfig;
use http::Method;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Position in the file (and in [`RouteTable::routes`]).
    pub index: usize,
    pub name: Arc<str>,
    /// Index into the runtime's service list.
    pub service: usize,
    pub service_name: Arc<str>,
    host: Option<HostPattern>,
    /// Segments in the prefix; what `strip_prefix` removes.
    prefix_segments: usize,
    pub strip_prefix: bool,
    /// Bit set over [`METHODS`]; 0 = any method.
    methods: u16,
}

#[derive(Debug)]
enum HostPattern {
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`.
    Suffix(Box<str>),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
        }
    }
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
    Method::CONNECT,
];

fn method_bit(m: &Method) -> u16 {
    METHODS
        .iter()
        .position(|x| x == m)
        .map_or(0x8000, |i| 1 << i)
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Routes whose prefix ends at this node, ascending (file order).
    routes: Vec<u32>,
}

impl Node {
    fn insert(&mut self, segments: &[&str], idx: u32) {
        let mut node = self;
        for s in segments {
            node = node.children.entry((*s).into()).or_default();
        }
        node.routes.push(idx);
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Match<'a> {
    Found(&'a Route),
    /// A route matched host and path but not the method: the value for `Allow`.
    MethodNotAllowed(String),
    NotFound,
    /// A `..` segment or an undecodable escape.
    BadPath,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_host: HashMap<Box<str>, Node>,
    other_hosts: Node,
}

impl RouteTable {
    /// Compile routes; `service_index` maps a service name to its runtime index.
    pub fn build(configs: &[RouteConfig], service_index: &dyn Fn(&str) -> usize) -> Self {
        let mut table = RouteTable::default();
        let mut segs: Vec<Vec<&str>> = Vec::with_capacity(configs.len());
        for rc in configs {
            let s: Vec<&str> = rc
                .path_prefix
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            let host = rc.host.as_deref().map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostPattern::Suffix(suffix.into()),
                None => HostPattern::Exact(h.into()),
            });
            table.routes.push(Route {
                index: table.routes.len(),
                name: rc.name.as_str().into(),
                service: service_index(&rc.service),
                service_name: rc.service.as_str().into(),
                host,
                prefix_segments: s.len(),
                strip_prefix: rc.strip_prefix,
                methods: rc.methods.iter().fold(0, |acc, m| acc | method_bit(m)),
            });
            segs.push(s);
        }
        let exact_hosts: Vec<Box<str>> = table
            .routes
            .iter()
            .filter_map(|r| match &r.host {
                Some(HostPattern::Exact(h)) => Some(h.clone()),
                _ => None,
            })
            .collect();
        for host in exact_hosts {
            if table.by_host.contains_key(&host) {
                continue;
            }
            let mut root = Node::default();
            for (i, r) in table.routes.iter().enumerate() {
                if r.host.as_ref().is_none_or(|p| p.matches(&host)) {
                    root.insert(&segs[i], i as u32);
                }
            }
            table.by_host.insert(host, root);
        }
        for (i, r) in table.routes.iter().enumerate() {
            if !matches!(r.host, Some(HostPattern::Exact(_))) {
                table.other_hosts.insert(&segs[i], i as u32);
            }
        }
        table
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Find the first route (in file order) for this host, path and method.
    /// `host` must already be lower-case and without a port (see [`normalise_host`]).
    pub fn lookup(&self, host: &str, path: &str, method: &Method) -> Match<'_> {
        let root = self.by_host.get(host).unwrap_or(&self.other_hosts);
        let want = method_bit(method);
        let mut best: Option<u32> = None;
        let mut allow: u16 = 0;
        let mut visit = |node: &Node| {
            for &idx in &node.routes {
                if best.is_some_and(|b| b < idx) {
                    break;
                }
                let r = &self.routes[idx as usize];
                if !r.host.as_ref().is_none_or(|p| p.matches(host)) {
                    continue;
                }
                if r.methods == 0 || r.methods & want != 0 {
                    best = Some(idx);
                    break;
                }
                allow |= r.methods;
            }
        };
        visit(root);
        let mut node = root;
        for seg in path_segments(path) {
            let Some(seg) = seg else {
                return Match::BadPath;
            };
            match node.children.get(&*seg) {
                Some(child) => {
                    node = child;
                    visit(node);
                }
                None => break,
            }
        }
        match best {
            Some(i) => Match::Found(&self.routes[i as usize]),
            None if allow != 0 => Match::MethodNotAllowed(allow_header(allow)),
            None => Match::NotFound,
        }
    }
}

/// The path's segments for matching: empty and `.` segments skipped, escapes decoded.
/// `None` marks a segment that must not be routed (`..`, a bad escape).
fn path_segments(path: &str) -> impl Iterator<Item = Option<Cow<'_, str>>> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(|s| {
            let seg = if s.contains('%') {
                Cow::Owned(percent_decode(s)?)
            } else {
                Cow::Borrowed(s)
            };
            (seg != ".." && !seg.contains('/')).then_some(seg)
        })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn allow_header(bits: u16) -> String {
    let mut names: Vec<&str> = METHODS
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, m)| m.as_str())
        .collect();
    // A GET route also answers HEAD upstream in practice; report what is configured.
    names.dedup();
    names.join(", ")
}

/// The path the upstream sees: the route's prefix removed when it asks for it.
/// `/api/users/42?x=1` with prefix `/api/users` → `/42?x=1`; the prefix itself → `/`.
pub fn strip_prefix<'a>(route: &Route, path_and_query: &'a str) -> Cow<'a, str> {
    if !route.strip_prefix || route.prefix_segments == 0 {
        return Cow::Borrowed(path_and_query);
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut remaining = route.prefix_segments;
    let mut rest = path;
    while remaining > 0 {
        rest = rest.trim_start_matches('/');
        let end = rest.find('/').unwrap_or(rest.len());
        if &rest[..end] != "." {
            remaining -= 1;
        }
        rest = &rest[end..];
    }
    if rest.is_empty() {
        Cow::Owned(format!("/{query}"))
    } else if query.is_empty() {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(format!("{rest}{query}"))
    }
}

/// Lower-case a `Host` value and drop its port (`API.example.com:8080` → `api.example.com`).
pub fn normalise_host(host: &str) -> Cow<'_, str> {
    let h = if host.starts_with('[') {
        // [::1]:8080
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if h.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(name: &str, host: Option<&str>, prefix: &str, methods: &[Method]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            methods: methods.to_vec(),
            service: "svc".into(),
            strip_prefix: true,
            auth: None,
            require_claims: vec![],
            rate_limit: vec![],
        }
    }

    fn found<'a>(m: Match<'a>) -> Option<&'a str> {
        match m {
            Match::Found(r) => Some(&r.name),
            _ => None,
        }
    }

    #[test]
    fn segment_boundaries_and_file_order() {
        let t = RouteTable::build(
            &[
                rc("users", None, "/api/users", &[]),
                rc("api", None, "/api", &[]),
                rc("root", None, "/", &[]),
            ],
            &|_| 0,
        );
        let get = Method::GET;
        assert_eq!(found(t.lookup("x", "/api/users", &get)), Some("users"));
        assert_eq!(found(t.lookup("x", "/api/users/42", &get)), Some("users"));
        assert_eq!(found(t.lookup("x", "/api/usersX", &get)), Some("api"));
        assert_eq!(found(t.lookup("x", "/api//users/1", &get)), Some("users"));
        assert_eq!(found(t.lookup("x", "/other", &get)), Some("root"));
        // earlier route wins even when a later one is more specific
        let t = RouteTable::build(
            &[
                rc("api", None, "/api", &[]),
                rc("users", None, "/api/users", &[]),
            ],
            &|_| 0,
        );
        assert_eq!(found(t.lookup("x", "/api/users/1", &get)), Some("api"));
    }

    #[test]
    fn hosts_methods_and_405() {
        let t = RouteTable::build(
            &[
                rc("a", Some("api.example.com"), "/v1", &[Method::GET]),
                rc("w", Some("*.example.com"), "/v1", &[Method::POST]),
                rc("any", None, "/public", &[]),
            ],
            &|_| 0,
        );
        assert_eq!(
            found(t.lookup("api.example.com", "/v1/x", &Method::GET)),
            Some("a")
        );
        assert_eq!(
            found(t.lookup("api.example.com", "/v1/x", &Method::POST)),
            Some("w")
        );
        assert_eq!(
            found(t.lookup("b.example.com", "/v1", &Method::POST)),
            Some("w")
        );
        assert_eq!(found(t.lookup("example.com", "/v1", &Method::POST)), None);
        assert_eq!(
            found(t.lookup("other.org", "/public/a", &Method::PUT)),
            Some("any")
        );
        match t.lookup("api.example.com", "/v1", &Method::DELETE) {
            Match::MethodNotAllowed(allow) => assert_eq!(allow, "GET, POST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.lookup("other.org", "/v1", &Method::GET),
            Match::NotFound
        ));
    }

    #[test]
    fn dot_segments_and_escapes() {
        let t = RouteTable::build(&[rc("users", None, "/api/users", &[])], &|_| 0);
        let get = Method::GET;
        assert!(matches!(
            t.lookup("h", "/api/users/../admin", &get),
            Match::BadPath
        ));
        assert!(matches!(
            t.lookup("h", "/api/%2e%2E/admin", &get),
            Match::BadPath
        ));
        assert!(matches!(
            t.lookup("h", "/api/users/%zz", &get),
            Match::BadPath
        ));
        assert_eq!(found(t.lookup("h", "/api/%75sers/1", &get)), Some("users"));
        assert_eq!(found(t.lookup("h", "/./api/users", &get)), Some("users"));
    }

    #[test]
    fn strip_prefix_keeps_query() {
        let t = RouteTable::build(&[rc("users", None, "/api/users", &[])], &|_| 0);
        let r = &t.routes()[0];
        assert_eq!(strip_prefix(r, "/api/users/42?x=1"), "/42?x=1");
        assert_eq!(strip_prefix(r, "/api/users"), "/");
        assert_eq!(strip_prefix(r, "/api/users?x=1"), "/?x=1");
        assert_eq!(strip_prefix(r, "/api//users/a/b"), "/a/b");
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalise_host("API.Example.com:8080"), "api.example.com");
        assert_eq!(normalise_host("[::1]:8080"), "[::1]");
        assert!(matches!(normalise_host("plain"), Cow::Borrowed("plain")));
    }
}
