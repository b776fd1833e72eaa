//! Forward auth (`forward_auth:`): the allow/deny decision of an auth service of the
//! operator's own, as nginx's `auth_request`, Traefik's forwardAuth and Envoy's
//! ext_authz make it. For each request Gatehouse sends `GET <url>` with the request's
//! method, URI, host, client address and request id in `X-Forwarded-*` / `X-Request-Id`
//! headers plus the request headers the service names (`forward_headers`, default
//! `Authorization` and `Cookie`), within `timeout`:
//!
//! - 2xx: allowed; the `copy_headers` of its answer go onto the upstream request;
//! - 401 or 403: denied; that status, its body (up to 64 KiB), `WWW-Authenticate` and
//!   `Content-Type` go back to the client;
//! - anything else, no answer in time, no connection: the service is unavailable (503,
//!   or let through when the route says `on_error: allow`).
//!
//! With `cache_ttl`, allow and deny decisions are kept per route and credential (the
//! `forward_headers` values) for that long, at most `cache_size` of them: a repeat costs
//! a hash of the credential's tail and a compare of its full bytes.

#[cfg(test)]
mod tests;

use crate::auth::IdentityHasher;
use crate::config::de::{de, valid_name};
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The largest denial body passed on to the client.
const MAX_DENIAL_BODY: usize = 64 * 1024;
/// Bytes of the credential hashed for the cache key (its tail: signatures, random ids).
const HASHED_TAIL: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwardAuth {
    url: String,
    timeout: Option<Dur>,
    #[serde(default)]
    copy_headers: Vec<String>,
    forward_headers: Option<Vec<String>>,
    cache_ttl: Option<Dur>,
    cache_size: Option<usize>,
}

/// One validated `forward_auth:` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthConfig {
    pub name: String,
    pub url: Url,
    pub timeout: Duration,
    /// Headers of a 2xx answer copied onto the upstream request (and stripped from
    /// every client request).
    pub copy_headers: Vec<HeaderName>,
    /// Request headers sent to the service; their values are the cache key.
    pub forward_headers: Vec<HeaderName>,
    pub cache_ttl: Option<Duration>,
    pub cache_size: usize,
}

/// Validate the `forward_auth:` section; returns the services and every declared name.
pub fn validate(
    v: Option<Value>,
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, ForwardAuthConfig>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut declared = Vec::new();
    let map = match v {
        None | Some(Value::Null) => return (out, declared),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            errors.push(ConfigError::new(
                "forward_auth",
                "expected a mapping of name → { url, timeout, copy_headers, … }",
            ));
            return (out, declared);
        }
    };
    for (k, v) in map {
        let Some(name) = k.as_str().map(str::to_string) else {
            errors.push(ConfigError::new("forward_auth", "names must be strings"));
            continue;
        };
        declared.push(name.clone());
        let path = format!("forward_auth.{name}");
        let Some(raw) = de::<RawForwardAuth>(v, &path, errors) else {
            continue;
        };
        let before = errors.len();
        if !valid_name(&name) {
            errors.push(ConfigError::new(
                &path,
                "names use letters, digits, '-', '_' and '.' (1-64 characters)",
            ));
        }
        let url = crate::http_client::parse_url(&raw.url)
            .map_err(|e| errors.push(ConfigError::new(format!("{path}.url"), e)))
            .ok();
        let timeout = raw.timeout.map_or(Duration::from_secs(1), |d| d.0);
        if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(60) {
            errors.push(ConfigError::new(
                format!("{path}.timeout"),
                "must be between 10ms and 60s",
            ));
        }
        let headers = |list: &[String], key: &str, errors: &mut Vec<ConfigError>| {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(h) => out.push(h),
                    Err(_) => errors.push(ConfigError::new(
                        format!("{path}.{key}[{i}]"),
                        format!("invalid header name {h:?}"),
                    )),
                }
            }
            out
        };
        let copy_headers = headers(&raw.copy_headers, "copy_headers", errors);
        let forward_headers = match &raw.forward_headers {
            Some(list) => headers(list, "forward_headers", errors),
            None => vec![http::header::AUTHORIZATION, http::header::COOKIE],
        };
        let cache_size = raw.cache_size.unwrap_or(10_000);
        if raw.cache_ttl.is_some() && cache_size == 0 {
            errors.push(ConfigError::new(
                format!("{path}.cache_size"),
                "must be at least 1 with cache_ttl (omit cache_ttl for no cache)",
            ));
        }
        if let (Some(url), true) = (url, errors.len() == before) {
            out.insert(
                name.clone(),
                ForwardAuthConfig {
                    name,
                    url,
                    timeout,
                    copy_headers,
                    forward_headers,
                    cache_ttl: raw.cache_ttl.map(|d| d.0).filter(|d| !d.is_zero()),
                    cache_size,
                },
            );
        }
    }
    (out, declared)
}

/// What the auth service said.
#[derive(Debug)]
pub enum Decision {
    /// 2xx: the `copy_headers` it answered with.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// 401/403: passed back to the client as is.
    Deny(Arc<Denial>),
}

/// A 401/403 of the auth service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    /// `WWW-Authenticate` and `Content-Type`, when it sent them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// What the request path passes in about the request being checked.
pub struct Request<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub host: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub request_id: &'a HeaderValue,
    pub headers: &'a http::HeaderMap,
}

/// A forward-auth service with its decision cache. Kept across reloads while its
/// settings are unchanged (the cache with it).
pub struct ForwardAuth {
    pub config: ForwardAuthConfig,
    cache: Option<DecisionCache>,
    /// Unix seconds of the last "unavailable" log line (one per 10 s).
    last_warning: std::sync::atomic::AtomicU64,
}

impl ForwardAuth {
    pub fn new(config: &ForwardAuthConfig) -> ForwardAuth {
        ForwardAuth {
            cache: config
                .cache_ttl
                .map(|ttl| DecisionCache::new(ttl, config.cache_size)),
            config: config.clone(),
            last_warning: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether to log that the service is unavailable now (at most once per 10 s).
    pub fn should_warn(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        now >= last + 10
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Ask the service (or the cache). `Err` with what went wrong when it is unavailable.
    pub async fn check(&self, req: &Request<'_>) -> Result<Arc<Decision>, String> {
        let material = self
            .cache
            .as_ref()
            .map(|_| credential(&self.config.forward_headers, req));
        if let (Some(cache), Some(m)) = (&self.cache, &material) {
            if let Some(d) = cache.get(m) {
                return Ok(d);
            }
        }
        let decision = Arc::new(self.ask(req).await?);
        if let (Some(cache), Some(m)) = (&self.cache, material) {
            cache.insert(&m, decision.clone());
        }
        Ok(decision)
    }

    /// The cached decision for this request, if any (benchmarks).
    pub fn cached(&self, req: &Request<'_>) -> Option<Arc<Decision>> {
        self.cache
            .as_ref()?
            .get(&credential(&self.config.forward_headers, req))
    }

    async fn ask(&self, req: &Request<'_>) -> Result<Decision, String> {
        let c = &self.config;
        let client = crate::http_client::shared()?;
        let mut r = client
            .get(c.url.clone())
            .timeout(c.timeout)
            .header("x-forwarded-method", req.method)
            .header("x-forwarded-uri", req.uri)
            .header("x-forwarded-host", req.host)
            .header("x-request-id", req.request_id.clone());
        if let Some(ip) = req.client_ip {
            r = r.header("x-forwarded-for", ip.to_string());
        }
        for name in &c.forward_headers {
            for v in req.headers.get_all(name) {
                r = r.header(name.clone(), v.clone());
            }
        }
        let fetch = async {
            let mut resp = r.send().await.map_err(crate::http_client::describe)?;
            let status = resp.status().as_u16();
            match status {
                200..=299 => {
                    let mut copied = Vec::new();
                    for name in &c.copy_headers {
                        for v in resp.headers().get_all(name) {
                            copied.push((name.clone(), v.clone()));
                        }
                    }
                    Ok(Decision::Allow(copied))
                }
                401 | 403 => {
                    let mut headers = Vec::new();
                    for name in [http::header::WWW_AUTHENTICATE, http::header::CONTENT_TYPE] {
                        if let Some(v) = resp.headers().get(&name) {
                            headers.push((name, v.clone()));
                        }
                    }
                    let mut body = Vec::new();
                    while let Some(chunk) =
                        resp.chunk().await.map_err(crate::http_client::describe)?
                    {
                        if body.len() + chunk.len() > MAX_DENIAL_BODY {
                            return Err(format!("denial body over {MAX_DENIAL_BODY} bytes"));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(Decision::Deny(Arc::new(Denial {
                        status,
                        headers,
                        body: Bytes::from(body),
                    })))
                }
                _ => Err(format!("answered {status}")),
            }
        };
        match tokio::time::timeout(c.timeout, fetch).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", c.timeout)),
        }
    }
}

/// Built on the stack for the usual credential (a token, a session cookie).
type Material = smallvec::SmallVec<[u8; 512]>;

/// The cache key material: the route, then each forwarded header's values, each
/// preceded by a NUL (header values cannot contain one).
fn credential(forward_headers: &[HeaderName], req: &Request<'_>) -> Material {
    let mut m = Material::new();
    m.extend_from_slice(req.route.as_bytes());
    for name in forward_headers {
        m.push(0);
        for v in req.headers.get_all(name) {
            m.push(0);
            m.extend_from_slice(v.as_bytes());
        }
    }
    m
}

struct Entry {
    material: Box<[u8]>,
    decision: Arc<Decision>,
    expires: Instant,
}

/// Decisions by credential: one mutex-guarded map, held for one map operation.
struct DecisionCache {
    map: Mutex<HashMap<u64, Entry, BuildHasherDefault<IdentityHasher>>>,
    ttl: Duration,
    max: usize,
    hasher: RandomState,
}

impl DecisionCache {
    fn new(ttl: Duration, max: usize) -> DecisionCache {
        DecisionCache {
            map: Mutex::new(HashMap::default()),
            ttl,
            max,
            hasher: RandomState::new(),
        }
    }

    fn key(&self, material: &[u8]) -> u64 {
        let tail = &material[material.len().saturating_sub(HASHED_TAIL)..];
        let mut h = self.hasher.build_hasher();
        h.write(tail);
        h.write_usize(material.len());
        h.finish()
    }

    fn get(&self, material: &[u8]) -> Option<Arc<Decision>> {
        let key = self.key(material);
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let e = map.get(&key)?;
        // The full credential must match, byte for byte (constant time for its length).
        (crate::consumers::ct_eq(&e.material, material) && Instant::now() < e.expires)
            .then(|| e.decision.clone())
    }

    fn insert(&self, material: &[u8], decision: Arc<Decision>) {
        let key = self.key(material);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.max {
                if let Some(&k) = map.keys().next() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            key,
            Entry {
                material: material.into(),
                decision,
                expires: now + self.ttl,
            },
        );
    }
}
