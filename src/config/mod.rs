//! Configuration: file → YAML tree → `${VAR}` expansion → raw serde structs → a
//! validated [`Config`].
//!
//! Every stage collects *all* of its errors, each with the path of the value it concerns
//! (`routes[2].service: unknown service "user" (known: orders, users)`), so an operator
//! fixes a file in one pass. Sections are deserialized one element at a time for the same
//! reason: serde stops at the first error, we do not.

pub mod env;
pub mod raw;
pub mod units;

use crate::auth::{self, RawJwt, Verifier};
use crate::breaker::BreakerConfig;
use crate::cache::CachePolicy;
use crate::ratelimit::{self, Policies, RawRateLimits, Store};
use crate::transform::{Cors, HeaderRules, IpRules};
use ipnet::IpNet;
use raw::*;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One problem in the config file, with the path of the value it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All errors of one load, printed one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration. Everything in here has been checked; building the
/// runtime from it cannot fail on user input.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Vec<Listener>,
    pub admin: Option<SocketAddr>,
    pub server: ServerSettings,
    /// By name, sorted (BTreeMap) so status output and metrics are stable.
    pub services: BTreeMap<String, ServiceConfig>,
    /// In file order: first match wins.
    pub routes: Vec<RouteConfig>,
    /// Per route (same index): compiled header rules, CORS, IP rules, cache, flags.
    pub route_extras: Vec<Arc<RouteExtras>>,
    /// The `jwt:` section as written (compared on reload to keep unchanged verifiers).
    pub jwt_raw: BTreeMap<String, RawJwt>,
    /// The verifiers built from it (keys loaded, so `-t` checks key files too).
    pub verifiers: HashMap<String, Arc<Verifier>>,
    /// The `rate_limits:` section as written (a reload keeps the store unless its
    /// settings changed).
    pub rate_limits_raw: RawRateLimits,
    pub policies: Arc<Policies>,
    /// A fresh store for these settings; connects lazily, so building it is cheap.
    pub rate_store: Arc<Store>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// As written, because Pingora hands sockets over on upgrade by exact bind string.
    pub address: String,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
    Off,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Where a daemon's stderr (logs) goes; `None` = discarded once daemonized.
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_body: Option<u64>,
    pub access_log: AccessLogFormat,
    pub h2c: bool,
    /// One multi-threaded runtime whose threads steal work (Pingora's default), or one
    /// single-threaded runtime per thread. Unset: single-threaded with `threads: 1`
    /// (~7% less CPU per proxied request than a one-worker multi-threaded runtime, bare
    /// Pingora ~3%), work stealing with more threads: Pingora then hands each new
    /// connection and each pooled connection's idle watch to a random thread, so I/O
    /// readiness and pool hand-overs cross threads (an `eventfd` wake-up each), and two
    /// single-threaded runtimes took 10-18% more CPU per request than one stealing one.
    pub work_stealing: bool,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// As configured; also the `upstream` metric label.
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    Tcp,
    Http {
        path: String,
        host: Option<String>,
        expect_status: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-case; `*.example.com` matches any sub-domain.
    pub host: Option<String>,
    /// Normalised: starts with `/`, no trailing `/` (except the root itself).
    pub path_prefix: String,
    /// Empty = any method.
    pub methods: Vec<http::Method>,
    pub service: String,
    pub strip_prefix: bool,
    /// The name of a `jwt:` verifier; `None` = public route.
    pub auth: Option<String>,
    /// Claim name → accepted values (any one of them).
    pub require_claims: Vec<(String, Vec<String>)>,
    /// Rate-limit policy names, all of which must allow.
    pub rate_limit: Vec<String>,
}

/// The compiled traffic policies of one route.
#[derive(Debug, Default)]
pub struct RouteExtras {
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    pub cors: Option<Cors>,
    pub ip_rules: Option<IpRules>,
    pub cache: Option<CachePolicy>,
    pub compression: bool,
    pub websocket: bool,
}

pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    read: Duration::from_secs(30),
    write: Duration::from_secs(30),
    idle: Duration::from_secs(60),
};

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "server",
    "jwt",
    "rate_limits",
    "services",
    "routes",
];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl Config {
    /// Read, expand and validate a config file from disk.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
            )])
        })?;
        Self::from_yaml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parse and validate config text; `lookup` resolves `${VAR}` references.
    pub fn from_yaml(
        text: &str,
        source: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut tree: Value = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(file)".into());
            ConfigErrors(vec![ConfigError::new(at, format!("invalid YAML: {e}"))])
        })?;
        let mut errors = Vec::new();
        env::expand_tree(&mut tree, "", lookup, &mut errors);
        let config = validate(tree, source, &mut errors);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// Deserialize one value, appending serde's inner path to `path` on error.
fn de<T: DeserializeOwned>(v: Value, path: &str, errors: &mut Vec<ConfigError>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let full = match inner.as_str() {
                "." | "" => path.to_string(),
                p if p.starts_with('[') => format!("{path}{p}"),
                p => format!("{path}.{p}"),
            };
            errors.push(ConfigError::new(full, e.into_inner().to_string()));
            None
        }
    }
}

fn validate(tree: Value, source: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let Value::Mapping(mut top) = tree else {
        errors.push(ConfigError::new(
            "(file)",
            "expected a mapping with listen, services and routes",
        ));
        return None;
    };
    for key in top.keys() {
        let name = key.as_str().unwrap_or("?");
        if !TOP_LEVEL_KEYS.contains(&name) {
            errors.push(ConfigError::new(
                name,
                format!("unknown key (valid: {})", TOP_LEVEL_KEYS.join(", ")),
            ));
        }
    }
    let mut take = |k: &str| top.remove(k);

    let listen = validate_listen(take("listen"), errors);
    let admin = take("admin").and_then(|v| de::<RawAdmin>(v, "admin", errors));
    let admin = admin.and_then(|a| match a.address.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(ConfigError::new(
                "admin.address",
                format!("invalid address {:?} (expected IP:PORT)", a.address),
            ));
            None
        }
    });
    if let Some(admin) = admin {
        if listen.iter().any(|l| l.address.parse() == Ok(admin)) {
            errors.push(ConfigError::new(
                "admin.address",
                "must differ from every listen address",
            ));
        }
    }
    let server = match take("server") {
        Some(v) => de::<RawServer>(v, "server", errors).unwrap_or_default(),
        None => RawServer::default(),
    };
    let server = validate_server(server, errors);
    let (jwt_raw, verifiers) = validate_jwt(take("jwt"), errors);
    let rate_limits_raw = match take("rate_limits") {
        None | Some(Value::Null) => RawRateLimits::default(),
        Some(v) => de::<RawRateLimits>(v, "rate_limits", errors).unwrap_or_default(),
    };
    let policies = ratelimit::build_policies(&rate_limits_raw).unwrap_or_else(|e| {
        errors.extend(e);
        Policies::default()
    });
    let rate_store = match ratelimit::build_store(&rate_limits_raw) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            for err in e {
                if !errors.contains(&err) {
                    errors.push(err);
                }
            }
            None
        }
    };
    let (services, declared) = validate_services(take("services"), errors);
    let known = Known {
        services: &declared,
        jwt: &jwt_raw,
        policies: &policies,
    };
    let (routes, route_extras) = validate_routes(take("routes"), &known, errors);
    let rate_store = rate_store?;

    Some(Config {
        source: source.to_path_buf(),
        listen,
        admin,
        server,
        services,
        routes,
        route_extras,
        jwt_raw,
        verifiers,
        rate_limits_raw,
        policies: Arc::new(policies),
        rate_store,
    })
}

/// Names a route may refer to.
struct Known<'a> {
    /// Every declared service, valid or not (so one bad service is reported once).
    services: &'a [String],
    jwt: &'a BTreeMap<String, RawJwt>,
    policies: &'a Policies,
}

fn validate_jwt(
    v: Option<Value>,
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, RawJwt>, HashMap<String, Arc<Verifier>>) {
    let mut raw = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(name) = k.as_str().map(str::to_string) else {
                    errors.push(ConfigError::new("jwt", "verifier names must be strings"));
                    continue;
                };
                if !valid_name(&name) {
                    errors.push(ConfigError::new(
                        format!("jwt.{name}"),
                        "verifier names use letters, digits, '-', '_' and '.'",
                    ));
                }
                if let Some(r) = de::<RawJwt>(v, &format!("jwt.{name}"), errors) {
                    raw.insert(name, r);
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(
            "jwt",
            "expected a map of verifier name -> { algorithms, secret | public_key_file | jwks_url, ... }",
        )),
    }
    let verifiers = match auth::build_verifiers(&raw) {
        Ok(v) => v,
        Err(e) => {
            errors.extend(e);
            HashMap::new()
        }
    };
    (raw, verifiers)
}

fn validate_listen(v: Option<Value>, errors: &mut Vec<ConfigError>) -> Vec<Listener> {
    let items = match v {
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        _ => {
            errors.push(ConfigError::new(
                "listen",
                "at least one listener is required (a list of { address: IP:PORT })",
            ));
            return vec![];
        }
    };
    let mut out: Vec<Listener> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("listen[{i}]");
        let Some(raw) = de::<RawListen>(item, &path, errors) else {
            continue;
        };
        if raw.address.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!("invalid address {:?} (expected IP:PORT)", raw.address),
            ));
            continue;
        }
        if out.iter().any(|l| l.address == raw.address) {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!("duplicate listen address {:?}", raw.address),
            ));
        }
        let tls = raw.tls.map(|t| {
            for (field, file) in [("cert", &t.cert), ("key", &t.key)] {
                if !Path::new(file).is_file() {
                    errors.push(ConfigError::new(
                        format!("{path}.tls.{field}"),
                        format!("file {file:?} does not exist"),
                    ));
                }
            }
            TlsFiles {
                cert: t.cert,
                key: t.key,
            }
        });
        out.push(Listener {
            address: raw.address,
            tls,
        });
    }
    out
}

fn validate_server(raw: RawServer, errors: &mut Vec<ConfigError>) -> ServerSettings {
    let threads = raw.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 || threads > 1024 {
        errors.push(ConfigError::new(
            "server.threads",
            "must be between 1 and 1024",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match parse_net(p) {
            Some(n) => trusted_proxies.push(n),
            None => errors.push(ConfigError::new(
                format!("server.trusted_proxies[{i}]"),
                format!("invalid CIDR or IP {p:?} (e.g. 10.0.0.0/8, 192.0.2.7, ::1/128)"),
            )),
        }
    }
    let access_log = match raw.access_log.as_ref().map(|a| a.format.as_str()) {
        None | Some("json") => AccessLogFormat::Json,
        Some("text") => AccessLogFormat::Text,
        Some("off") => AccessLogFormat::Off,
        Some(other) => {
            errors.push(ConfigError::new(
                "server.access_log.format",
                format!("unknown format {other:?} (valid: json, text, off)"),
            ));
            AccessLogFormat::Json
        }
    };
    if let Some(log) = &raw.error_log {
        let dir = Path::new(log)
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if !dir.is_none_or(Path::is_dir) {
            errors.push(ConfigError::new(
                "server.error_log",
                format!("the directory of {log:?} does not exist"),
            ));
        }
    }
    if let Some(units::Size(0)) = raw.max_request_body {
        errors.push(ConfigError::new(
            "server.max_request_body",
            "must be greater than 0 (omit it for no limit)",
        ));
    }
    ServerSettings {
        threads,
        pid_file: raw
            .pid_file
            .unwrap_or_else(|| "/tmp/gatehouse.pid".to_string()),
        upgrade_sock: raw
            .upgrade_sock
            .unwrap_or_else(|| "/tmp/gatehouse_upgrade.sock".to_string()),
        error_log: raw.error_log,
        grace_period: raw.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: raw.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
        trusted_proxies,
        max_request_body: raw.max_request_body.map(|s| s.0),
        access_log,
        h2c: raw.h2c,
        work_stealing: raw.work_stealing.unwrap_or(threads > 1),
    }
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// The valid services, and the names of all declared ones (valid or not), so a route
/// naming a service that has its own errors is not reported a second time.
fn validate_services(
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

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_service(
    name: String,
    raw: RawService,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ServiceConfig> {
    let before = errors.len();
    if raw.upstreams.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.upstreams"),
            "at least one upstream is required",
        ));
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let upath = format!("{path}.upstreams[{i}]");
        let weight = u.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            errors.push(ConfigError::new(
                format!("{upath}.weight"),
                "must be between 1 and 1000",
            ));
        }
        match resolve(&u.address) {
            Ok(addr) => {
                if upstreams.iter().any(|x| x.addr == addr) {
                    errors.push(ConfigError::new(
                        format!("{upath}.address"),
                        format!("duplicate upstream {:?}", u.address),
                    ));
                }
                upstreams.push(UpstreamConfig {
                    address: u.address.clone(),
                    addr,
                    weight,
                });
            }
            Err(msg) => errors.push(ConfigError::new(format!("{upath}.address"), msg)),
        }
    }
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
    let circuit_breaker = raw.circuit_breaker.map(|b| {
        let cfg = BreakerConfig {
            failures: b.failures.unwrap_or(5),
            open_for: b.open_for.map_or(Duration::from_secs(30), |d| d.0),
            half_open_requests: b.half_open_requests.unwrap_or(1),
            successes_to_close: b.successes_to_close.unwrap_or(2),
        };
        for (field, v) in [
            ("failures", cfg.failures),
            ("half_open_requests", cfg.half_open_requests),
            ("successes_to_close", cfg.successes_to_close),
        ] {
            if !(1..=1000).contains(&v) {
                errors.push(ConfigError::new(
                    format!("{path}.circuit_breaker.{field}"),
                    "must be between 1 and 1000",
                ));
            }
        }
        if cfg.open_for < Duration::from_millis(10) {
            errors.push(ConfigError::new(
                format!("{path}.circuit_breaker.open_for"),
                "must be at least 10ms",
            ));
        }
        cfg
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
    })
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !address.contains(':') {
        return Err(format!("invalid address {address:?} (expected HOST:PORT)"));
    }
    match address.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address:?} resolved to no address")),
        Err(e) => Err(format!("cannot resolve {address:?}: {e}")),
    }
}

fn parse_hash_key(k: &str) -> Result<HashKey, String> {
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

fn validate_health(
    h: RawHealthCheck,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<HealthCheckConfig> {
    let before = errors.len();
    let kind = match h.kind.as_str() {
        "tcp" => {
            for (field, set) in [
                ("path", h.path.is_some()),
                ("host", h.host.is_some()),
                ("expect_status", h.expect_status.is_some()),
            ] {
                if set {
                    errors.push(ConfigError::new(
                        format!("{path}.{field}"),
                        "only applies to type: http",
                    ));
                }
            }
            HealthKind::Tcp
        }
        "http" => {
            let p = h.path.unwrap_or_else(|| "/".to_string());
            if !p.starts_with('/') || p.contains(char::is_whitespace) {
                errors.push(ConfigError::new(
                    format!("{path}.path"),
                    format!("must be an absolute path such as /health, got {p:?}"),
                ));
            }
            let expect_status = h.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                errors.push(ConfigError::new(
                    format!("{path}.expect_status"),
                    "must be an HTTP status between 100 and 599",
                ));
            }
            HealthKind::Http {
                path: p,
                host: h.host,
                expect_status,
            }
        }
        other => {
            errors.push(ConfigError::new(
                format!("{path}.type"),
                format!("unknown health check type {other:?} (valid: http, tcp)"),
            ));
            HealthKind::Tcp
        }
    };
    let interval = h.interval.map_or(Duration::from_secs(5), |d| d.0);
    if interval < Duration::from_millis(50) {
        errors.push(ConfigError::new(
            format!("{path}.interval"),
            "must be at least 50ms",
        ));
    }
    let timeout = h.timeout.map_or(Duration::from_secs(1), |d| d.0);
    if timeout.is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.timeout"),
            "must be greater than 0",
        ));
    }
    let healthy_after = h.healthy_after.unwrap_or(2);
    let unhealthy_after = h.unhealthy_after.unwrap_or(3);
    for (field, n) in [
        ("healthy_after", healthy_after),
        ("unhealthy_after", unhealthy_after),
    ] {
        if !(1..=100).contains(&n) {
            errors.push(ConfigError::new(
                format!("{path}.{field}"),
                "must be between 1 and 100",
            ));
        }
    }
    (errors.len() == before).then_some(HealthCheckConfig {
        kind,
        interval,
        timeout,
        healthy_after,
        unhealthy_after,
    })
}

fn validate_routes(
    v: Option<Value>,
    known: &Known,
    errors: &mut Vec<ConfigError>,
) -> (Vec<RouteConfig>, Vec<Arc<RouteExtras>>) {
    let (services, jwt) = (known.services, known.jwt);
    let items = match v {
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        _ => {
            errors.push(ConfigError::new(
                "routes",
                "at least one route is required (a list of { name, match, service })",
            ));
            return (vec![], vec![]);
        }
    };
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let mut extras = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(raw) = de::<RawRoute>(item, &path, errors) else {
            continue;
        };
        let before = errors.len();
        if !valid_name(&raw.name) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                "route names use letters, digits, '-', '_' and '.' (1-64 characters)",
            ));
        } else if !names.insert(raw.name.clone()) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate route name {:?}", raw.name),
            ));
        }
        if !services.contains(&raw.service) {
            errors.push(ConfigError::new(
                format!("{path}.service"),
                format!(
                    "unknown service {:?} (known: {})",
                    raw.service,
                    services.join(", ")
                ),
            ));
        }
        let m = raw.matcher;
        let host = m.host.map(|h| h.trim().to_ascii_lowercase());
        if let Some(h) = &host {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if bare.is_empty()
                || !bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
            {
                errors.push(ConfigError::new(
                    format!("{path}.match.host"),
                    format!("invalid host {h:?} (e.g. api.example.com or *.example.com)"),
                ));
            }
        }
        let prefix = m.path_prefix.unwrap_or_else(|| "/".to_string());
        if !prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
            errors.push(ConfigError::new(
                format!("{path}.match.path_prefix"),
                format!("must be a path starting with '/', got {prefix:?}"),
            ));
        }
        let path_prefix = normalise_prefix(&prefix);
        let mut methods = Vec::new();
        for (j, name) in m.methods.unwrap_or_default().iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                if let Ok(method) = http::Method::from_bytes(upper.as_bytes()) {
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
            } else {
                errors.push(ConfigError::new(
                    format!("{path}.match.methods[{j}]"),
                    format!("unknown method {name:?} (valid: {})", METHODS.join(", ")),
                ));
            }
        }
        if let Some(a) = &raw.auth {
            if !jwt.contains_key(a) {
                let known: Vec<&str> = jwt.keys().map(String::as_str).collect();
                errors.push(ConfigError::new(
                    format!("{path}.auth"),
                    format!("unknown jwt verifier {a:?} (known: {})", known.join(", ")),
                ));
            }
        }
        for (j, name) in raw.rate_limit.iter().enumerate() {
            if !known.policies.contains(name) {
                let names: Vec<&str> = known.policies.iter().map(|p| &*p.name).collect();
                errors.push(ConfigError::new(
                    format!("{path}.rate_limit[{j}]"),
                    format!(
                        "unknown rate-limit policy {name:?} (known: {})",
                        names.join(", ")
                    ),
                ));
            }
        }
        let mut require_claims = Vec::new();
        for (claim, values) in raw.require_claims.unwrap_or_default() {
            let values = values.into_vec();
            if raw.auth.is_none() {
                errors.push(ConfigError::new(
                    format!("{path}.require_claims"),
                    "needs auth: a route without a verifier has no claims",
                ));
                break;
            }
            if values.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.require_claims.{claim}"),
                    "list at least one accepted value",
                ));
            }
            require_claims.push((claim, values));
        }
        let rules = |raw: &Option<crate::transform::RawHeaderRules>, key: &str| {
            raw.as_ref().map_or(Ok(HeaderRules::default()), |r| {
                crate::transform::build_header_rules(r, &format!("{path}.{key}"), true)
            })
        };
        let extra = RouteExtras {
            request_headers: collect(rules(&raw.request_headers, "request_headers"), errors)
                .unwrap_or_default(),
            response_headers: collect(rules(&raw.response_headers, "response_headers"), errors)
                .unwrap_or_default(),
            cors: raw.cors.as_ref().and_then(|c| {
                collect(
                    crate::transform::build_cors(c, &format!("{path}.cors")),
                    errors,
                )
            }),
            ip_rules: collect(
                crate::transform::build_ip_rules(
                    raw.allow_ips.as_deref(),
                    raw.deny_ips.as_deref(),
                    &path,
                ),
                errors,
            )
            .flatten(),
            cache: raw
                .cache
                .as_ref()
                .and_then(|c| collect(crate::cache::build(c, &format!("{path}.cache")), errors)),
            compression: raw.compression,
            websocket: raw.websocket,
        };
        if errors.len() == before {
            extras.push(Arc::new(extra));
            out.push(RouteConfig {
                name: raw.name,
                host,
                path_prefix,
                methods,
                service: raw.service,
                strip_prefix: raw.strip_prefix,
                auth: raw.auth,
                require_claims,
                rate_limit: raw.rate_limit,
            });
        }
    }
    (out, extras)
}

/// The value, or its errors appended to `errors`.
fn collect<T>(r: Result<T, Vec<ConfigError>>, errors: &mut Vec<ConfigError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.extend(e);
            None
        }
    }
}

/// `/api/users/` → `/api/users`; `/` stays `/`; `//a` → `/a`.
fn normalise_prefix(p: &str) -> String {
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

#[cfg(test)]
mod tests;
