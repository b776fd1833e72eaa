//! The route trie: compiled once per config load, looked up once per request.

use super::conditions::{Conditions, HeaderMemo, RequestView};
use super::config::RouteConfig;
use http::Method;
use std::borrow::Cow;
use std::collections::HashMap;

/// The trie's hasher: foldhash, randomly seeded per table.
type Hasher = foldhash::fast::RandomState;

/// What a route matches on: host, path prefix and methods, compiled.
#[derive(Debug)]
pub struct RouteMatch {
    host: Option<HostPattern>,
    /// The normalised prefix (`/api/users`), for building the trie.
    prefix: Box<str>,
    /// Segments in the prefix; what `strip_prefix` removes.
    prefix_segments: usize,
    /// Bit set over [`METHODS`]; 0 = any method.
    methods: u16,
    /// Headers, query, cookies, path regex: checked only on candidates by path.
    conditions: Option<std::sync::Arc<Conditions>>,
}

impl RouteMatch {
    pub fn new(c: &RouteConfig) -> Self {
        let host = c.host.as_deref().map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.into()),
            None => HostPattern::Exact(h.into()),
        });
        RouteMatch {
            host,
            prefix: c.path_prefix.as_str().into(),
            prefix_segments: segments(&c.path_prefix).count(),
            methods: c.methods.iter().fold(0, |acc, m| acc | method_bit(m)),
            conditions: c.conditions.clone(),
        }
    }

    /// The route's conditions beyond host, prefix and method.
    pub fn conditions(&self) -> Option<&Conditions> {
        self.conditions.as_deref()
    }
}

fn segments(prefix: &str) -> impl Iterator<Item = &str> {
    prefix.split('/').filter(|s| !s.is_empty())
}

/// What the table stores: anything that knows its [`RouteMatch`].
pub trait Routable {
    fn route_match(&self) -> &RouteMatch;
}

impl Routable for RouteMatch {
    fn route_match(&self) -> &RouteMatch {
        self
    }
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
    children: HashMap<Box<str>, Node, Hasher>,
    /// Routes whose prefix ends at this node, ascending (file order).
    routes: Vec<u32>,
}

impl Node {
    fn insert<'a>(&mut self, segments: impl Iterator<Item = &'a str>, idx: u32) {
        let mut node = self;
        for s in segments {
            node = node.children.entry(s.into()).or_default();
        }
        node.routes.push(idx);
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Match {
    /// The route's position in the table (file order).
    Found(usize),
    /// A route matched host and path but not the method: the value for `Allow`.
    MethodNotAllowed(String),
    NotFound,
    /// A `..` segment or an undecodable escape.
    BadPath,
}

#[derive(Debug)]
pub struct RouteTable<R> {
    routes: Box<[R]>,
    by_host: HashMap<Box<str>, Node, Hasher>,
    other_hosts: Node,
}

impl<R: Routable> RouteTable<R> {
    /// Compile the routes (in file order: the first match wins).
    pub fn build(routes: Vec<R>) -> Self {
        let routes = routes.into_boxed_slice();
        let mut by_host: HashMap<Box<str>, Node, Hasher> = HashMap::default();
        let mut other_hosts = Node::default();
        let matchers: Vec<&RouteMatch> = routes.iter().map(Routable::route_match).collect();
        for m in &matchers {
            let Some(HostPattern::Exact(host)) = &m.host else {
                continue;
            };
            if by_host.contains_key(host) {
                continue;
            }
            let mut root = Node::default();
            for (i, r) in matchers.iter().enumerate() {
                if r.host.as_ref().is_none_or(|p| p.matches(host)) {
                    root.insert(segments(&r.prefix), i as u32);
                }
            }
            by_host.insert(host.clone(), root);
        }
        for (i, r) in matchers.iter().enumerate() {
            if !matches!(r.host, Some(HostPattern::Exact(_))) {
                other_hosts.insert(segments(&r.prefix), i as u32);
            }
        }
        RouteTable {
            routes,
            by_host,
            other_hosts,
        }
    }

    pub fn routes(&self) -> &[R] {
        &self.routes
    }

    pub fn get(&self, index: usize) -> Option<&R> {
        self.routes.get(index)
    }

    /// [`RouteTable::lookup_request`] for a request with no headers and no query.
    pub fn lookup(&self, host: &str, path: &str, method: &Method) -> Match {
        let headers = http::HeaderMap::new();
        let req = RequestView {
            path,
            query: None,
            headers: &headers,
        };
        self.lookup_request(host, &req, method)
    }

    /// Find the first route (in file order) for this host, request and method: the
    /// trie picks candidates by path; a candidate's conditions (headers, query,
    /// cookies, path regex) must hold, then its methods decide between it and a 405.
    /// `host` must already be lower-case and without a port (see [`normalise_host`]).
    pub fn lookup_request<'a>(
        &'a self,
        host: &str,
        req: &RequestView<'a>,
        method: &Method,
    ) -> Match {
        let path = req.path;
        let mut memo = HeaderMemo::default();
        let root = self.by_host.get(host).unwrap_or(&self.other_hosts);
        let want = method_bit(method);
        let mut best: Option<u32> = None;
        let mut allow: u16 = 0;
        let mut visit = |node: &Node| {
            for &idx in &node.routes {
                if best.is_some_and(|b| b < idx) {
                    break;
                }
                let r = self.routes[idx as usize].route_match();
                if !r.host.as_ref().is_none_or(|p| p.matches(host)) {
                    continue;
                }
                if r.conditions
                    .as_ref()
                    .is_some_and(|c| !c.hold(req, &mut memo))
                {
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
            Some(i) => Match::Found(i as usize),
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

/// The path the upstream sees with the route's prefix removed.
/// `/api/users/42?x=1` with prefix `/api/users` → `/42?x=1`; the prefix itself → `/`.
pub fn strip_prefix<'a>(route: &RouteMatch, path_and_query: &'a str) -> Cow<'a, str> {
    if route.prefix_segments == 0 {
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
