//! HTTP caching rules (a conservative subset of RFC 9111 for a shared cache): which requests
//! may use the cache, which responses may be stored and for how long, and how `Vary`
//! selects a variant. Pure functions over headers, so they are cheap to test.

use super::config::CachePolicy;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The parts of a request the cache looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    /// As the client sent it (`Host` or `:authority`); lower-cased for the key.
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
}

/// Statuses a shared cache may store without explicit freshness (RFC 9110 §15.1,
/// "heuristically cacheable"), minus 206: this cache does not handle ranges.
pub const CACHEABLE_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Most variants kept for one URL: stops `Vary: User-Agent` from turning one URL into
/// thousands of entries and lookups into long scans under the shard lock.
pub const MAX_VARIANTS: usize = 16;

/// What the request side allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Not cacheable at all: go upstream, do not coalesce, do not store.
    Bypass,
    /// May use the cache. `revalidate`: the client asked for a fresh copy (`no-cache`,
    /// `max-age=0`, `Pragma: no-cache`), so it must not be served a stored entry.
    Cacheable { revalidate: bool },
}

/// Classify a request. `Range` requests bypass: an upstream 206 cannot fill the cache, and
/// letting one lead a fill would only make the requests behind it wait for nothing.
/// `Authorization`/`Cookie` bypass (unless `cache_authorized`) both ways: their responses may
/// be personal, and serving them a shared entry could hide what the upstream would say.
pub fn classify_request(policy: &CachePolicy, req: &RequestInfo<'_>) -> RequestClass {
    if *req.method != Method::GET && *req.method != Method::HEAD {
        return RequestClass::Bypass;
    }
    let h = req.headers;
    if h.contains_key(header::RANGE) {
        return RequestClass::Bypass;
    }
    if !policy.cache_authorized
        && (h.contains_key(header::AUTHORIZATION) || h.contains_key(header::COOKIE))
    {
        return RequestClass::Bypass;
    }
    let cc = CacheControl::parse(h);
    if cc.no_store {
        return RequestClass::Bypass;
    }
    let pragma_no_cache = !cc.present
        && h.get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    RequestClass::Cacheable {
        revalidate: cc.no_cache || cc.max_age == Some(0) || pragma_no_cache,
    }
}

/// The cache key of a request, independent of the method so HEAD finds GET's entry: the
/// lower-cased host, then the path and query exactly as sent (no normalisation, so two
/// spellings are two entries rather than one entry serving the wrong resource).
pub fn primary_key(req: &RequestInfo<'_>) -> String {
    let mut key = String::with_capacity(req.host.len() + req.path_and_query.len());
    key.extend(req.host.chars().map(|c| c.to_ascii_lowercase()));
    key.push_str(req.path_and_query);
    key
}

/// How long a response may be served from the cache, from now, or `None` if it must not be
/// stored. The route TTL is the ceiling; upstream freshness can only shorten it.
pub fn response_ttl(
    policy: &CachePolicy,
    req: &RequestInfo<'_>,
    status: u16,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    if *req.method != Method::GET
        || classify_request(policy, req) == RequestClass::Bypass
        || !CACHEABLE_STATUSES.contains(&status)
        || headers.contains_key(header::SET_COOKIE)
        || vary_names(headers.get_all(header::VARY)).is_none()
    {
        return None;
    }
    if let Some(len) = content_length(headers) {
        if len > policy.max_body {
            return None;
        }
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store || cc.no_cache || cc.private {
        return None;
    }
    // Explicit freshness counts from when the origin produced the response, so time spent
    // in caches upstream (`Age`) is used up; the route TTL counts from now.
    let explicit = if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        Some(Duration::from_secs(secs))
    } else if headers.contains_key(header::EXPIRES) {
        Some(expires_lifetime(headers, now)?)
    } else {
        None
    };
    let remaining = match explicit {
        Some(lifetime) => lifetime
            .saturating_sub(Duration::from_secs(upstream_age(headers)))
            .min(policy.ttl),
        None => policy.ttl,
    };
    (!remaining.is_zero()).then_some(remaining)
}

/// `Expires - Date` (or `- now` without a usable `Date`). An unparsable `Expires` (`0`, `-1`)
/// means "already expired" (RFC 9111 §5.3), so `None`. Only IMF-fixdate is understood; the
/// obsolete formats count as unparsable, which errs on the side of not storing.
fn expires_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES).and_then(parse_http_date)?;
    let date = headers
        .get(header::DATE)
        .and_then(parse_http_date)
        .unwrap_or_else(|| now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    expires
        .checked_sub(date)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// The upstream `Age` in seconds (0 if absent or invalid): time the response already spent
/// in caches upstream, which counts against its freshness.
pub fn upstream_age(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// The request header names a response varies on, sorted and de-duplicated. `None` for
/// `Vary: *` or a name that is not a valid header name: such a response matches no future
/// request, so it is not stored.
pub fn vary_names<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in values {
        let value = value.to_str().ok()?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(token.as_bytes()).ok()?);
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// The value a request has for a `Vary` header: all its lines joined, with whitespace around
/// commas removed so `gzip, br` and `gzip,br` share a variant. `None` when absent, which is
/// a different variant from an empty value.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName) -> Option<Box<[u8]>> {
    let mut out: Vec<u8> = Vec::new();
    let mut any = false;
    for value in headers.get_all(name) {
        for part in value.as_bytes().split(|b| *b == b',') {
            if any {
                out.push(b',');
            }
            any = true;
            out.extend_from_slice(part.trim_ascii());
        }
    }
    any.then(|| out.into_boxed_slice())
}

/// The response headers worth storing: hop-by-hop headers (and those named by `Connection`),
/// `Set-Cookie` and `Age` dropped (the cache sends its own `Age`), and `Content-Length`
/// dropped too: the collector sets it from the stored body, since upstream framing
/// (`Transfer-Encoding`) is not replayed.
pub fn storable_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let connection_named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| !is_dropped(name) && !connection_named.contains(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn is_dropped(name: &HeaderName) -> bool {
    const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || *name == header::SET_COOKIE
        || *name == header::AGE
        || *name == header::CONTENT_LENGTH
        || HOP_BY_HOP.contains(&name.as_str())
}

/// The `Cache-Control` directives this cache acts on. Unknown directives are ignored;
/// a malformed delta-seconds counts as 0 (stale), and repeated directives take the minimum.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub present: bool,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            cc.present = true;
            // Not visible ASCII: be conservative, as if the upstream said `no-store`.
            let Ok(value) = value.to_str() else {
                cc.no_store = true;
                continue;
            };
            for directive in split_unquoted(value) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                // `private="Set-Cookie"`/`no-cache="..."` restrict fields; we treat them
                // as restricting the whole response, which is always safe.
                if name.eq_ignore_ascii_case("no-store") {
                    cc.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    cc.no_cache = true;
                } else if name.eq_ignore_ascii_case("private") {
                    cc.private = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    cc.max_age = min_opt(cc.max_age, delta_seconds(arg));
                } else if name.eq_ignore_ascii_case("s-maxage") {
                    cc.s_maxage = min_opt(cc.s_maxage, delta_seconds(arg));
                }
            }
        }
        cc
    }
}

fn min_opt(old: Option<u64>, new: u64) -> Option<u64> {
    Some(old.map_or(new, |o| o.min(new)))
}

fn delta_seconds(arg: Option<&str>) -> u64 {
    match arg {
        Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().unwrap_or(u64::MAX) // only overflow fails: "very long"
        }
        _ => 0,
    }
}

/// Split a header value on commas that are not inside a quoted string.
fn split_unquoted(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// An HTTP-date in any of the three forms RFC 9110 §5.6.7 requires recipients to accept
/// (IMF-fixdate, RFC 850, asctime), as seconds since the epoch.
pub fn parse_http_date(value: &HeaderValue) -> Option<u64> {
    let t = httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}
