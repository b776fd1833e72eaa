//! The `services:` section: raw serde shapes and their validation into
//! [`ServiceConfig`]s (upstreams and how they are found, TLS, balancing, health checks,
//! timeouts, retries, breakers). Validation reads the TLS files but never asks DNS:
//! names are resolved by the runtime.

use super::health_config::{validate_health, RawHealthCheck};
pub use super::health_config::{Adaptive, HealthCheckConfig, HealthKind};
use crate::breaker::{BreakerConfig, RawBreaker};
use crate::config::de::{de, valid_name};
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use crate::tls::{Alpn, UpstreamTls};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    discovery: Option<RawDiscovery>,
    resolve_interval: Option<Dur>,
    drain_timeout: Option<Dur>,
    tls: Option<RawUpstreamTls>,
    balance: Option<String>,
    hash_key: Option<String>,
    health_check: Option<RawHealthCheck>,
    timeouts: Option<RawTimeouts>,
    retries: Option<RawRetries>,
    circuit_breaker: Option<RawBreaker>,
    sticky: Option<RawSticky>,
    /// Speak HTTP/2 (prior knowledge, h2c) to these upstreams.
    #[serde(default)]
    http2: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: String,
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSticky {
    cookie: Option<String>,
    ttl: Option<Dur>,
    secure: Option<bool>,
    http_only: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    dns_srv: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    sni: Option<String>,
    verify: Option<bool>,
    ca_file: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    alpn: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Dur>,
    read: Option<Dur>,
    write: Option<Dur>,
    idle: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetries {
    attempts: u32,
    /// Retries allowed as a fraction of recent requests (0.2 = 20%).
    budget: Option<f64>,
    /// Retries always allowed per second, whatever the ratio.
    min_per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Weighted,
    LeastConnections,
    ConsistentHash,
    Random,
}

impl Balance {
    const NAMES: &'static str = "round_robin, weighted, least_connections, consistent_hash, random";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => Balance::RoundRobin,
            "weighted" => Balance::Weighted,
            "least_connections" => Balance::LeastConnections,
            "consistent_hash" => Balance::ConsistentHash,
            "random" => Balance::Random,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Weighted => "weighted",
            Balance::LeastConnections => "least_connections",
            Balance::ConsistentHash => "consistent_hash",
            Balance::Random => "random",
        }
    }
}

/// What a consistent-hash service hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
    /// A claim of the verified JWT (`jwt.sub`); routes without auth fall back to the IP.
    Claim(String),
}

/// Where one configured upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    /// Every A/AAAA record of the name is a member, re-resolved while the gateway runs.
    Name {
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// As configured; the `upstream` metric label of a fixed address.
    pub address: String,
    pub target: Target,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

/// `sticky:`: the gateway pins a client to the upstream that first answered it with a
/// cookie naming that upstream (opaquely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub cookie: String,
    /// `Max-Age`; without it the cookie lasts for the browser session.
    pub ttl: Option<Duration>,
    pub secure: bool,
    pub http_only: bool,
}

impl StickyConfig {
    /// What follows `name=value` in the `Set-Cookie` header.
    pub fn attributes(&self) -> String {
        let mut a = String::from("; Path=/");
        if let Some(ttl) = self.ttl {
            a.push_str(&format!("; Max-Age={}", ttl.as_secs()));
        }
        if self.secure {
            a.push_str("; Secure");
        }
        if self.http_only {
            a.push_str("; HttpOnly");
        }
        a.push_str("; SameSite=Lax");
        a
    }
}

/// A cookie name (RFC 6265 token, kept to the characters people use).
pub fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub upstreams: Vec<UpstreamConfig>,
    pub balance: Balance,
    pub hash_key: HashKey,
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: Timeouts,
    /// Extra tries after the first one.
    pub retries: u32,
    /// Retries allowed per thousand recent requests, plus a floor per second.
    pub retry_budget_permille: u32,
    pub retry_min_per_second: u32,
    pub circuit_breaker: Option<BreakerConfig>,
    pub http2: bool,
    /// `discovery.dns_srv`: the SRV name whose targets are members.
    pub srv: Option<String>,
    /// The longest a resolved member set is used before it is looked up again (a
    /// record's shorter TTL wins).
    pub resolve_interval: Duration,
    /// How long requests already on a member that left the set may still run.
    pub drain_timeout: Duration,
    pub tls: Option<UpstreamTls>,
    pub sticky: Option<StickyConfig>,
}

impl ServiceConfig {
    /// Whether members come from DNS (and change while the gateway runs).
    pub fn is_dynamic(&self) -> bool {
        self.srv.is_some()
            || self
                .upstreams
                .iter()
                .any(|u| matches!(u.target, Target::Name { .. }))
    }
}

pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    read: Duration::from_secs(30),
    write: Duration::from_secs(30),
    idle: Duration::from_secs(60),
};

/// The valid services, and the names of all declared ones (valid or not), so a route
/// naming a service that has its own errors is not reported a second time.
pub fn validate_services(
    v: Option<Value>,
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, ServiceConfig>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut declared = Vec::new();
    let map = match v {
        Some(Value::Mapping(m)) if !m.is_empty() => m,
        _ => {
            errors.push(ConfigError::new(
                "services",
                "at least one service is required (a map of name -> { upstreams: [...] })",
            ));
            return (out, declared);
        }
    };
    for (k, v) in map {
        let Some(name) = k.as_str().map(str::to_string) else {
            errors.push(ConfigError::new(
                "services",
                "service names must be strings",
            ));
            continue;
        };
        let path = format!("services.{name}");
        declared.push(name.clone());
        if !valid_name(&name) {
            errors.push(ConfigError::new(
                &path,
                "service names use letters, digits, '-', '_' and '.'",
            ));
        }
        let Some(raw) = de::<RawService>(v, &path, errors) else {
            continue;
        };
        if let Some(svc) = validate_service(name.clone(), raw, &path, errors) {
            out.insert(name, svc);
        }
    }
    (out, declared)
}

fn validate_service(
    name: String,
    raw: RawService,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ServiceConfig> {
    let before = errors.len();
    if raw.upstreams.is_empty() && raw.discovery.is_none() {
        errors.push(ConfigError::new(
            format!("{path}.upstreams"),
            "at least one upstream is required (or discovery: { dns_srv: NAME })",
        ));
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    let mut schemes = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let upath = format!("{path}.upstreams[{i}]");
        let weight = u.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            errors.push(ConfigError::new(
                format!("{upath}.weight"),
                "must be between 1 and 1000",
            ));
        }
        match parse_address(&u.address) {
            Ok((scheme, target)) => {
                if upstreams.iter().any(|x| x.target == target) {
                    errors.push(ConfigError::new(
                        format!("{upath}.address"),
                        format!("duplicate upstream {:?}", u.address),
                    ));
                }
                schemes.push((upath, scheme));
                upstreams.push(UpstreamConfig {
                    address: u.address.clone(),
                    target,
                    weight,
                });
            }
            Err(msg) => errors.push(ConfigError::new(format!("{upath}.address"), msg)),
        }
    }
    let srv = raw.discovery.map(|d| {
        let name = d.dns_srv.trim().trim_end_matches('.').to_ascii_lowercase();
        if !valid_host(&name) {
            errors.push(ConfigError::new(
                format!("{path}.discovery.dns_srv"),
                format!(
                    "invalid DNS name {:?} (e.g. _http._tcp.users.service.consul)",
                    d.dns_srv
                ),
            ));
        }
        name
    });
    let tls = validate_tls(raw.tls, &schemes, raw.http2, path, errors);
    let resolve_interval = raw
        .resolve_interval
        .map_or(DEFAULT_RESOLVE_INTERVAL, |d| d.0);
    if resolve_interval < Duration::from_secs(1) {
        errors.push(ConfigError::new(
            format!("{path}.resolve_interval"),
            "must be at least 1s",
        ));
    }
    let drain_timeout = raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0);
    let balance = match raw.balance.as_deref() {
        None => Balance::RoundRobin,
        Some(b) => Balance::parse(b).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                format!("{path}.balance"),
                format!("unknown balance {b:?} (valid: {})", Balance::NAMES),
            ));
            Balance::RoundRobin
        }),
    };
    let hash_key = match raw.hash_key.as_deref() {
        None => HashKey::ClientIp,
        Some(k) => {
            if balance != Balance::ConsistentHash {
                errors.push(ConfigError::new(
                    format!("{path}.hash_key"),
                    "only applies to balance: consistent_hash",
                ));
            }
            parse_hash_key(k).unwrap_or_else(|msg| {
                errors.push(ConfigError::new(format!("{path}.hash_key"), msg));
                HashKey::ClientIp
            })
        }
    };
    let health_check = raw
        .health_check
        .and_then(|h| validate_health(h, &format!("{path}.health_check"), errors));
    let t = raw.timeouts.unwrap_or_default();
    let timeouts = Timeouts {
        connect: t.connect.map_or(DEFAULT_TIMEOUTS.connect, |d| d.0),
        read: t.read.map_or(DEFAULT_TIMEOUTS.read, |d| d.0),
        write: t.write.map_or(DEFAULT_TIMEOUTS.write, |d| d.0),
        idle: t.idle.map_or(DEFAULT_TIMEOUTS.idle, |d| d.0),
    };
    for (field, d) in [
        ("connect", timeouts.connect),
        ("read", timeouts.read),
        ("write", timeouts.write),
    ] {
        if d.is_zero() {
            errors.push(ConfigError::new(
                format!("{path}.timeouts.{field}"),
                "must be greater than 0",
            ));
        }
    }
    let retries = raw.retries.as_ref().map_or(1, |r| r.attempts);
    if retries > 10 {
        errors.push(ConfigError::new(
            format!("{path}.retries.attempts"),
            "must be between 0 and 10",
        ));
    }
    let ratio = raw.retries.as_ref().and_then(|r| r.budget).unwrap_or(0.2);
    if !(0.0..=1.0).contains(&ratio) {
        errors.push(ConfigError::new(
            format!("{path}.retries.budget"),
            "must be a fraction between 0 and 1 (0.2 = retries up to 20% of requests)",
        ));
    }
    let floor = raw
        .retries
        .as_ref()
        .and_then(|r| r.min_per_second)
        .unwrap_or(10);
    let circuit_breaker = raw
        .circuit_breaker
        .map(|b| BreakerConfig::from_raw(b, &format!("{path}.circuit_breaker"), errors));
    let sticky = raw.sticky.map(|s| {
        let cookie = s.cookie.unwrap_or_else(|| "gh_affinity".to_string());
        if !valid_cookie_name(&cookie) {
            errors.push(ConfigError::new(
                format!("{path}.sticky.cookie"),
                format!("invalid cookie name {cookie:?} (letters, digits, _ - .)"),
            ));
        }
        let ttl = s.ttl.map(|d| d.0);
        if ttl.is_some_and(|t| t < Duration::from_secs(1)) {
            errors.push(ConfigError::new(
                format!("{path}.sticky.ttl"),
                "must be at least 1s (leave it out for a browser-session cookie)",
            ));
        }
        StickyConfig {
            cookie,
            ttl,
            secure: s.secure.unwrap_or(false),
            http_only: s.http_only.unwrap_or(true),
        }
    });
    (errors.len() == before).then_some(ServiceConfig {
        name,
        upstreams,
        balance,
        hash_key,
        health_check,
        timeouts,
        retries,
        retry_budget_permille: (ratio * 1000.0).round() as u32,
        retry_min_per_second: floor,
        circuit_breaker,
        http2: raw.http2,
        srv,
        resolve_interval,
        drain_timeout,
        tls,
        sticky,
    })
}

/// `IP:PORT`, `HOST:PORT`, `[V6]:PORT`, optionally behind `http://` or `https://` (which
/// give the port a default). The scheme is returned when one was written.
fn parse_address(address: &str) -> Result<(Option<&'static str>, Target), String> {
    let lower = address.get(..8).unwrap_or(address).to_ascii_lowercase();
    let (scheme, rest, default_port) = if lower.starts_with("https://") {
        (Some("https"), &address[8..], Some(443))
    } else if lower.starts_with("http://") {
        (Some("http"), &address[7..], Some(80))
    } else {
        (None, address, None)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || {
        format!("invalid address {address:?} (expected HOST:PORT, IP:PORT or https://HOST[:PORT])")
    };
    if let Ok(a) = rest.parse::<SocketAddr>() {
        return Ok((scheme, Target::Addr(a)));
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    // A bare IP with the scheme's default port.
    if let (Some(port), Ok(ip)) = (
        default_port,
        rest.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>(),
    ) {
        return Ok((scheme, Target::Addr(SocketAddr::new(ip, port))));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        ),
        None => (rest, default_port.ok_or_else(bad)?),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() || !valid_host(&host) {
        return Err(bad());
    }
    Ok((scheme, Target::Name { host, port }))
}

/// A DNS name: labels of letters, digits, `-` and `_` (SRV names), 1-63 each.
fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `tls:` and the `https://` shorthand: TLS is on for the whole service or off.
fn validate_tls(
    raw: Option<RawUpstreamTls>,
    schemes: &[(String, Option<&'static str>)],
    http2: bool,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<UpstreamTls> {
    let https = schemes.iter().any(|(_, s)| *s == Some("https"));
    for (upath, scheme) in schemes {
        if *scheme == Some("http") && (https || raw.is_some()) {
            errors.push(ConfigError::new(
                format!("{upath}.address"),
                "http:// in a service that speaks TLS (tls: or an https:// upstream): TLS is per service",
            ));
        }
    }
    if raw.is_none() && !https {
        return None;
    }
    let raw = raw.unwrap_or_default();
    let tpath = format!("{path}.tls");
    let alpn = match raw.alpn.as_deref() {
        None | Some("h1") => Alpn::H1,
        Some("h2") => Alpn::H2,
        Some("h2h1") => Alpn::H2H1,
        Some(other) => {
            errors.push(ConfigError::new(
                format!("{tpath}.alpn"),
                format!("unknown alpn {other:?} (valid: h1, h2, h2h1)"),
            ));
            Alpn::H1
        }
    };
    if http2 {
        errors.push(ConfigError::new(
            format!("{path}.http2"),
            "is for plaintext HTTP/2; over TLS use tls.alpn: h2 or h2h1",
        ));
    }
    let sni = raw
        .sni
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase());
    if let Some(s) = &sni {
        if s.parse::<std::net::IpAddr>().is_err() && !valid_host(s) {
            errors.push(ConfigError::new(
                format!("{tpath}.sni"),
                format!("invalid server name {s:?}"),
            ));
        }
    }
    let client = match (&raw.client_cert, &raw.client_key) {
        (Some(c), Some(k)) => Some((c.as_str(), k.as_str())),
        (None, None) => None,
        (Some(_), None) => {
            errors.push(ConfigError::new(
                format!("{tpath}.client_key"),
                "client_cert needs client_key",
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(ConfigError::new(
                format!("{tpath}.client_cert"),
                "client_key needs client_cert",
            ));
            None
        }
    };
    match UpstreamTls::load(
        sni,
        raw.verify.unwrap_or(true),
        raw.ca_file.as_deref(),
        client,
        alpn,
    ) {
        Ok(t) => Some(t),
        Err((field, msg)) => {
            errors.push(ConfigError::new(format!("{tpath}.{field}"), msg));
            None
        }
    }
}

pub fn parse_hash_key(k: &str) -> Result<HashKey, String> {
    const VALID: &str = "valid: client_ip, header:NAME, cookie:NAME, jwt.CLAIM";
    if k == "client_ip" {
        return Ok(HashKey::ClientIp);
    }
    if let Some(c) = k.strip_prefix("jwt.") {
        if c.is_empty() {
            return Err("jwt. needs a claim name, e.g. jwt.sub".to_string());
        }
        return Ok(HashKey::Claim(c.to_string()));
    }
    if let Some(h) = k.strip_prefix("header:") {
        return http::HeaderName::from_bytes(h.trim().as_bytes())
            .map(HashKey::Header)
            .map_err(|_| format!("invalid header name {h:?}"));
    }
    if let Some(c) = k.strip_prefix("cookie:") {
        let c = c.trim();
        if c.is_empty() || c.contains([';', '=', ' ']) {
            return Err(format!("invalid cookie name {c:?}"));
        }
        return Ok(HashKey::Cookie(c.to_string()));
    }
    Err(format!("unknown hash_key {k:?} ({VALID})"))
}
