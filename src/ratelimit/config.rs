//! The `rate_limits:` section: raw serde shapes, validation into a [`RateLimitConfig`]
//! (the store settings and the [`Policies`]), and the per-request helpers the proxy
//! needs (tier parameters, bucket keys, the policy header).

use crate::config::de::{de, valid_name};
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use crate::headers::ip_text;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default `max_keys` of the memory store (see [`super::MemoryStore`] for the memory math).
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;
/// Smallest accepted `max_keys`: one entry per shard.
pub const MIN_MAX_KEYS: u64 = 64;
/// Default `redis.timeout`.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `redis.prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "gh:";
/// Extracted key values longer than this are treated as absent (the request falls back to
/// its client IP), so one client cannot make a bucket entry cost kilobytes.
pub const MAX_KEY_VALUE_LEN: usize = 256;

const VALID_KEYS: &str = "client_ip, jwt.<claim>, header:<Name>, consumer, route, global";

/// `rate_limits:` as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub store: Option<String>,
    #[serde(default)]
    pub redis: Option<RawRedis>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    /// Hard cap on buckets held by the memory store (default 1,000,000).
    #[serde(default)]
    pub max_keys: Option<u64>,
}

/// `rate_limits.redis:`: exactly one of `url`, `cluster` and `sentinel`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// One Redis (`redis://` or `rediss://`).
    #[serde(default)]
    pub url: Option<String>,
    /// A Redis Cluster: some of its nodes (the rest are discovered).
    #[serde(default)]
    pub cluster: Option<Vec<String>>,
    /// A master found through Sentinel, followed across failovers.
    #[serde(default)]
    pub sentinel: Option<RawSentinel>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub on_error: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// For `rediss://`: trust this CA (PEM) instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// When to stop asking a failing Redis for a while.
    #[serde(default)]
    pub breaker: Option<RawStoreBreaker>,
}

/// `rate_limits.redis.sentinel:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// The master's name in Sentinel.
    pub master: String,
    /// Sentinel nodes (`redis://host:26379`).
    pub nodes: Vec<String>,
}

/// `rate_limits.redis.breaker:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreBreaker {
    /// Consecutive failures (errors or timeouts) that open it.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How long decisions skip Redis once it opened (a probe may close it sooner).
    #[serde(default)]
    pub cool_down: Option<Dur>,
}

/// `rate_limits.policies.<name>:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub key: String,
    pub limit: u64,
    pub window: Dur,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub tiers: Option<RawTiers>,
    /// With `key: consumer`: a request without a consumer is limited by its client IP
    /// (`client_ip`, the default) or refused with 403 (`refuse`).
    #[serde(default)]
    pub fallback: Option<String>,
}

/// `rate_limits.policies.<name>.tiers:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTiers {
    pub claim: String,
    pub limits: BTreeMap<String, u64>,
    #[serde(default)]
    pub default: Option<u64>,
}

/// What a policy counts by. The proxy extracts the value from the request; see
/// [`KeySpec::bucket_key`] for turning it into a bucket key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    ClientIp,
    /// `jwt.<claim>`: a claim of the verified token.
    Jwt(String),
    /// `header:<Name>`.
    Header(http::HeaderName),
    /// One bucket per route (the route's name is the value).
    Route,
    /// One bucket for everything.
    Global,
    /// The authenticated consumer's name; `refuse`: a request without one is refused
    /// (403) instead of limited by its client IP.
    Consumer {
        refuse: bool,
    },
}

impl KeySpec {
    /// Parses `client_ip`, `jwt.<claim>`, `header:<Name>`, `route`, `global`.
    pub fn parse(s: &str) -> Result<KeySpec, String> {
        match s {
            "client_ip" => return Ok(KeySpec::ClientIp),
            "route" => return Ok(KeySpec::Route),
            "global" => return Ok(KeySpec::Global),
            "consumer" => return Ok(KeySpec::Consumer { refuse: false }),
            _ => {}
        }
        if let Some(claim) = s.strip_prefix("jwt.") {
            if claim.is_empty() {
                return Err(format!("key {s:?} names no claim (expected e.g. jwt.sub)"));
            }
            return Ok(KeySpec::Jwt(claim.to_string()));
        }
        if let Some(name) = s.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeySpec::Header)
                .map_err(|_| format!("key {s:?}: {name:?} is not a valid header name"));
        }
        Err(format!("unknown key {s:?} (valid: {VALID_KEYS})"))
    }

    /// The bucket key for one request, namespaced by where it came from:
    ///
    /// * `client_ip` → `ip:<addr>` (`value` ignored);
    /// * `jwt.<claim>` / `header:<Name>` → `v:<value>`; when the value is absent, empty or
    ///   longer than [`MAX_KEY_VALUE_LEN`] the request **falls back to its client IP**
    ///   (`ip:<addr>`), never to one bucket shared by every anonymous caller, and a caller
    ///   cannot pick a value that collides with an IP bucket because of the prefixes;
    /// * `route` → `r:<route name>` (falls back to the IP like the above if absent);
    /// * `global` → `global`.
    ///
    /// Buckets are also scoped by policy name in the store, so `ip:1.2.3.4` under `per-user`
    /// and under `per-ip` are different buckets.
    pub fn bucket_key(&self, value: Option<&str>, client_ip: IpAddr) -> String {
        // Built by hand: this runs for every policy of every request, and `format!`
        // (with `IpAddr`'s `Display`) costs more than the limiter decision itself.
        let value = value.filter(|v| !v.is_empty() && v.len() <= MAX_KEY_VALUE_LEN);
        let prefixed = |prefix: &str, v: &str| {
            let mut key = String::with_capacity(prefix.len() + v.len());
            key.push_str(prefix);
            key.push_str(v);
            key
        };
        match (self, value) {
            (KeySpec::Global, _) => "global".to_string(),
            (KeySpec::Jwt(_) | KeySpec::Header(_), Some(v)) => prefixed("v:", v),
            (KeySpec::Consumer { .. }, Some(c)) => prefixed("c:", c),
            (KeySpec::Route, Some(r)) => prefixed("r:", r),
            _ => prefixed("ip:", ip_text(client_ip, &mut [0; 48])),
        }
    }
}

/// Limit and burst in force for one request (after tier selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub limit: u64,
    pub burst: u64,
}

/// Per-tier limits chosen by a JWT claim's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    pub claim: String,
    pub limits: BTreeMap<String, u64>,
    /// Limit for a missing or unlisted tier value; `None` = the policy's own `limit`.
    pub default: Option<u64>,
}

/// One validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Arc<str>,
    pub key: KeySpec,
    pub limit: u64,
    pub window: Duration,
    pub burst: u64,
    pub tiers: Option<Tiers>,
    /// `RateLimit-Policy` for the policy's own limit, burst and window, built once (it is
    /// on every response of a limited route); tiers with other limits build theirs per
    /// request. Kept with the values it was built from, which are public fields.
    own_header: (Params, Duration, http::HeaderValue),
}

impl Policy {
    pub fn new(
        name: &str,
        key: KeySpec,
        limit: u64,
        window: Duration,
        burst: u64,
        tiers: Option<Tiers>,
    ) -> Policy {
        let mut policy = Policy {
            name: Arc::from(name),
            key,
            limit,
            window,
            burst,
            tiers,
            own_header: (
                Params { limit, burst },
                window,
                http::HeaderValue::from_static(""),
            ),
        };
        policy.own_header.2 = policy.header_value(&Params { limit, burst });
        policy
    }

    /// The `RateLimit-Policy` header value for these parameters.
    pub fn policy_value(&self, p: &Params) -> http::HeaderValue {
        match &self.own_header {
            (own, window, value) if own == p && *window == self.window => value.clone(),
            _ => self.header_value(p),
        }
    }

    fn header_value(&self, p: &Params) -> http::HeaderValue {
        // Digits, `;`, `=` and `.` only: always a valid header value (no copy made).
        http::HeaderValue::try_from(self.policy_header(p))
            .unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// Limit and burst for a request whose tier claim has `tier_value` (ignored without
    /// `tiers`). A tier's burst is **scaled proportionally**: `ceil(burst * tier_limit /
    /// limit)`, so a policy with `limit: 100, burst: 150` gives a 1000-limit tier a burst of
    /// 1500, and a policy without `burst` gives every tier `burst = tier limit`.
    pub fn params_for(&self, tier_value: Option<&str>) -> Params {
        let own = Params {
            limit: self.limit,
            burst: self.burst,
        };
        let Some(tiers) = &self.tiers else { return own };
        let limit = tier_value
            .and_then(|v| tiers.limits.get(v).copied())
            .or(tiers.default)
            .unwrap_or(self.limit);
        if limit == self.limit {
            return own;
        }
        let scaled = (u128::from(self.burst) * u128::from(limit)).div_ceil(u128::from(self.limit));
        Params {
            limit,
            burst: u64::try_from(scaled).unwrap_or(u64::MAX).max(1),
        }
    }

    /// `RateLimit-Policy` value in the form of draft-ietf-httpapi-ratelimit-headers-07
    /// (the draft that still has separate `RateLimit-Limit/-Remaining/-Reset` fields, as
    /// this gateway sends): `<limit>;w=<window seconds>`, plus the extension parameter
    /// `;burst=<n>` when the burst differs from the limit, e.g. `100;w=1;burst=150`.
    /// A window that is not whole seconds is written with up to 3 decimals (`w=0.5`).
    pub fn policy_header(&self, p: &Params) -> String {
        // Built by hand: this runs on every decision and `format!` costs more than the rest.
        let mut s = String::with_capacity(32);
        push_u64(&mut s, p.limit);
        s.push_str(";w=");
        let ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        push_u64(&mut s, ms / 1000);
        if !ms.is_multiple_of(1000) {
            s.push('.');
            let frac = ms % 1000;
            let digits = [frac / 100, frac / 10 % 10, frac % 10];
            let used = if frac % 100 == 0 {
                1
            } else if frac % 10 == 0 {
                2
            } else {
                3
            };
            for d in &digits[..used] {
                s.push(char::from(b'0' + *d as u8));
            }
        }
        if p.burst != p.limit {
            s.push_str(";burst=");
            push_u64(&mut s, p.burst);
        }
        s
    }
}

fn push_u64(s: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        s.push(char::from(b));
    }
}

/// All validated policies, by name. Replaceable on reload; the store is not tied to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    by_name: BTreeMap<Arc<str>, Arc<Policy>>,
}

impl Policies {
    pub fn get(&self, name: &str) -> Option<&Arc<Policy>> {
        self.by_name.get(name)
    }
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.by_name.values()
    }
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Which store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
    /// Local decisions from leases of each key's budget taken from Redis in batches.
    Hybrid,
}

/// `redis.on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// Where the shared buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Standalone(String),
    /// Node URLs; the cluster's topology is discovered and followed.
    Cluster(Vec<String>),
    Sentinel {
        master: String,
        nodes: Vec<String>,
    },
}

impl RedisTarget {
    /// The URL of the first node named (for TLS settings, which all nodes share).
    pub fn first_url(&self) -> &str {
        match self {
            RedisTarget::Standalone(u) => u,
            RedisTarget::Cluster(nodes) | RedisTarget::Sentinel { nodes, .. } => {
                nodes.first().map_or("", String::as_str)
            }
        }
    }
}

/// Validated `redis:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    pub timeout: Duration,
    pub on_error: OnError,
    pub prefix: String,
    /// The PEM of `ca_file` (compared on reload, so a renewed CA file rebuilds the store).
    pub ca_pem: Option<Vec<u8>>,
    /// Consecutive failures that make decisions skip Redis for `cool_down`.
    pub breaker_failures: u32,
    pub cool_down: Duration,
}

/// Default `redis.breaker.failures`.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default `redis.breaker.cool_down`.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(1);

/// Validated store settings. Compared on reload: equal settings keep the running store
/// (and its buckets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Memory store: hard cap on buckets.
    pub max_keys: u64,
    pub redis: Option<RedisSettings>,
}

/// The validated `rate_limits:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub store: StoreConfig,
    pub policies: Policies,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            store: StoreConfig {
                kind: StoreKind::Memory,
                max_keys: DEFAULT_MAX_KEYS,
                redis: None,
            },
            policies: Policies::default(),
        }
    }
}

const ROOT: &str = "rate_limits";

impl RateLimitConfig {
    /// Validate the whole section, collecting every problem (not just the first).
    pub fn from_raw(raw: &RawRateLimits) -> Result<RateLimitConfig, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let store = store_config(raw, &mut errs);
        let policies = build_policies_into(&raw.policies, &mut errs);
        if errs.is_empty() {
            Ok(RateLimitConfig { store, policies })
        } else {
            Err(errs)
        }
    }
}

/// The `rate_limits:` section of the file: the validated section (default when it has
/// errors) and the name of every policy it declares, valid or not, so a route naming a
/// policy that has its own errors is not reported a second time.
pub fn validate(v: Option<Value>, errors: &mut Vec<ConfigError>) -> (RateLimitConfig, Vec<String>) {
    let mut map = match v {
        None | Some(Value::Null) => return (RateLimitConfig::default(), Vec::new()),
        Some(Value::Mapping(m)) => m,
        Some(_) => {
            errors.push(ConfigError::new(
                ROOT,
                "expected a map with store, redis, max_keys and policies",
            ));
            return (RateLimitConfig::default(), Vec::new());
        }
    };
    // Policies one by one, so one bad policy does not hide the names of the others.
    let mut declared = Vec::new();
    let mut raw_policies = BTreeMap::new();
    match map.remove("policies") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(policies)) => {
            for (k, v) in policies {
                let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                declared.push(name.clone());
                let path = format!("{ROOT}.policies.{name}");
                if let Some(p) = de::<RawPolicy>(v, &path, errors) {
                    raw_policies.insert(name, p);
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(
            format!("{ROOT}.policies"),
            "expected a map of policy name -> { key, limit, window, ... }",
        )),
    }
    let rest = de::<RawRateLimits>(Value::Mapping(map), ROOT, errors).unwrap_or_default();
    let before = errors.len();
    let store = store_config(&rest, errors);
    let policies = build_policies_into(&raw_policies, errors);
    let config = RateLimitConfig { store, policies };
    if errors.len() > before {
        return (RateLimitConfig::default(), declared);
    }
    (config, declared)
}

/// Validates the whole section and returns its policies (tests, tools).
pub fn build_policies(raw: &RawRateLimits) -> Result<Policies, Vec<ConfigError>> {
    RateLimitConfig::from_raw(raw).map(|c| c.policies)
}

fn store_config(raw: &RawRateLimits, errs: &mut Vec<ConfigError>) -> StoreConfig {
    let kind = store_kind(raw, errs);
    let max_keys = max_keys(raw, errs);
    let redis = redis_settings(raw, errs);
    if kind != StoreKind::Memory && redis.is_none() && raw.redis.is_none() {
        errs.push(ConfigError::new(
            format!("{ROOT}.redis"),
            "store: redis and store: hybrid need a redis: section (url, cluster or sentinel; timeout, on_error, prefix)",
        ));
    }
    StoreConfig {
        kind,
        max_keys,
        redis,
    }
}

fn store_kind(raw: &RawRateLimits, errs: &mut Vec<ConfigError>) -> StoreKind {
    match raw.store.as_deref().unwrap_or("memory") {
        "memory" => StoreKind::Memory,
        "redis" => StoreKind::Redis,
        "hybrid" => StoreKind::Hybrid,
        other => {
            errs.push(ConfigError::new(
                format!("{ROOT}.store"),
                format!("unknown store {other:?} (valid: memory, redis, hybrid)"),
            ));
            StoreKind::Memory
        }
    }
}

fn max_keys(raw: &RawRateLimits, errs: &mut Vec<ConfigError>) -> u64 {
    let n = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if n < MIN_MAX_KEYS {
        errs.push(ConfigError::new(
            format!("{ROOT}.max_keys"),
            format!("max_keys must be at least {MIN_MAX_KEYS} (got {n})"),
        ));
    }
    n.max(MIN_MAX_KEYS)
}

fn redis_settings(raw: &RawRateLimits, errs: &mut Vec<ConfigError>) -> Option<RedisSettings> {
    let r = raw.redis.as_ref()?;
    let path = format!("{ROOT}.redis");
    let before = errs.len();
    let check_url = |url: &str, at: String, errs: &mut Vec<ConfigError>| {
        if let Err(e) = redis::Client::open(url) {
            errs.push(ConfigError::new(
                at,
                format!("invalid redis url {url:?}: {e} (expected e.g. redis://127.0.0.1:6379/0)"),
            ));
        }
    };
    let given = [r.url.is_some(), r.cluster.is_some(), r.sentinel.is_some()];
    let target = match (&r.url, &r.cluster, &r.sentinel) {
        _ if given.iter().filter(|g| **g).count() != 1 => {
            errs.push(ConfigError::new(
                &path,
                "give exactly one of url, cluster and sentinel",
            ));
            None
        }
        (Some(url), _, _) => {
            if url.starts_with("redis+sentinel://") {
                errs.push(ConfigError::new(
                    format!("{path}.url"),
                    "for Sentinel use sentinel: { master: NAME, nodes: [redis://host:26379, ...] }",
                ));
            } else {
                check_url(url, format!("{path}.url"), errs);
            }
            Some(RedisTarget::Standalone(url.clone()))
        }
        (_, Some(nodes), _) => {
            if nodes.is_empty() {
                errs.push(ConfigError::new(
                    format!("{path}.cluster"),
                    "list at least one node (redis://host:port)",
                ));
            }
            for (i, n) in nodes.iter().enumerate() {
                check_url(n, format!("{path}.cluster[{i}]"), errs);
            }
            Some(RedisTarget::Cluster(nodes.clone()))
        }
        (_, _, Some(s)) => {
            if s.master.trim().is_empty() {
                errs.push(ConfigError::new(
                    format!("{path}.sentinel.master"),
                    "name the master as Sentinel knows it",
                ));
            }
            if s.nodes.is_empty() {
                errs.push(ConfigError::new(
                    format!("{path}.sentinel.nodes"),
                    "list at least one Sentinel (redis://host:26379)",
                ));
            }
            for (i, n) in s.nodes.iter().enumerate() {
                check_url(n, format!("{path}.sentinel.nodes[{i}]"), errs);
            }
            Some(RedisTarget::Sentinel {
                master: s.master.clone(),
                nodes: s.nodes.clone(),
            })
        }
        (None, None, None) => None,
    };
    let timeout = r.timeout.map_or(DEFAULT_REDIS_TIMEOUT, |d| d.0);
    if timeout.is_zero() {
        errs.push(ConfigError::new(
            format!("{path}.timeout"),
            "timeout must be > 0",
        ));
    }
    let on_error = match r.on_error.as_deref().unwrap_or("allow") {
        "allow" => OnError::Allow,
        "deny" => OnError::Deny,
        other => {
            errs.push(ConfigError::new(
                format!("{path}.on_error"),
                format!("unknown on_error {other:?} (valid: allow, deny)"),
            ));
            OnError::Allow
        }
    };
    let prefix = r
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
    if prefix.contains(['{', '}']) {
        errs.push(ConfigError::new(
            format!("{path}.prefix"),
            "must not contain { or } (Redis Cluster hash tags are the gateway's)",
        ));
    }
    let tls = target.as_ref().is_some_and(|t| {
        t.first_url()
            .get(..9)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
    });
    let ca_pem = r.ca_file.as_ref().and_then(|file| {
        if !tls {
            errs.push(ConfigError::new(
                format!("{path}.ca_file"),
                "only applies to rediss:// URLs (Redis over TLS)",
            ));
            return None;
        }
        match crate::tls::read_certs(file) {
            Ok(_) => std::fs::read(file).ok(),
            Err(e) => {
                errs.push(ConfigError::new(format!("{path}.ca_file"), e));
                None
            }
        }
    });
    let b = r.breaker.clone();
    let breaker_failures = b
        .as_ref()
        .and_then(|b| b.failures)
        .unwrap_or(DEFAULT_BREAKER_FAILURES);
    if !(1..=1000).contains(&breaker_failures) {
        errs.push(ConfigError::new(
            format!("{path}.breaker.failures"),
            "must be between 1 and 1000",
        ));
    }
    let cool_down = b
        .and_then(|b| b.cool_down)
        .map_or(DEFAULT_COOL_DOWN, |d| d.0);
    if cool_down < Duration::from_millis(10) {
        errs.push(ConfigError::new(
            format!("{path}.breaker.cool_down"),
            "must be at least 10ms",
        ));
    }
    if errs.len() > before {
        return None;
    }
    Some(RedisSettings {
        target: target?,
        timeout,
        on_error,
        prefix,
        ca_pem,
        breaker_failures,
        cool_down,
    })
}

fn build_policies_into(raw: &BTreeMap<String, RawPolicy>, errs: &mut Vec<ConfigError>) -> Policies {
    let mut by_name = BTreeMap::new();
    for (name, rp) in raw {
        let path = format!("{ROOT}.policies.{name}");
        if let Some(p) = build_policy(name, rp, &path, errs) {
            by_name.insert(p.name.clone(), Arc::new(p));
        }
    }
    Policies { by_name }
}

fn build_policy(
    name: &str,
    rp: &RawPolicy,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Policy> {
    let before = errs.len();
    let err = |errs: &mut Vec<ConfigError>, field: &str, msg: String| {
        errs.push(ConfigError::new(format!("{path}.{field}"), msg));
    };
    if !valid_name(name) {
        errs.push(ConfigError::new(
            path,
            format!("invalid policy name {name:?} (use 1-64 of A-Z a-z 0-9 - _ .)"),
        ));
    }
    let mut key = KeySpec::parse(&rp.key)
        .map_err(|m| err(errs, "key", m))
        .ok();
    match (rp.fallback.as_deref(), &mut key) {
        (None | Some("client_ip"), _) => {}
        (Some("refuse"), Some(KeySpec::Consumer { refuse })) => *refuse = true,
        (Some("refuse"), _) => err(
            errs,
            "fallback",
            "refuse applies to key: consumer only".into(),
        ),
        (Some(other), _) => err(
            errs,
            "fallback",
            format!("must be client_ip or refuse, got {other:?}"),
        ),
    }
    if rp.limit == 0 {
        err(errs, "limit", "limit must be at least 1".into());
    }
    let window = rp.window.0;
    if window.is_zero() {
        err(errs, "window", "window must be > 0 (e.g. 1s, 1m)".into());
    }
    let burst = rp.burst.unwrap_or(rp.limit);
    if burst == 0 {
        err(
            errs,
            "burst",
            "burst must be at least 1 (omit it for burst = limit)".into(),
        );
    }
    let tiers = rp.tiers.as_ref().map(|t| {
        if t.claim.trim().is_empty() {
            err(
                errs,
                "tiers.claim",
                "tiers.claim must name a JWT claim (e.g. tier)".into(),
            );
        }
        for (tier, &l) in &t.limits {
            if l == 0 {
                err(
                    errs,
                    &format!("tiers.limits.{tier}"),
                    "tier limit must be at least 1".into(),
                );
            }
        }
        if t.default == Some(0) {
            err(
                errs,
                "tiers.default",
                "tier default must be at least 1".into(),
            );
        }
        Tiers {
            claim: t.claim.trim().to_string(),
            limits: t.limits.clone(),
            default: t.default,
        }
    });
    if errs.len() > before {
        return None;
    }
    Some(Policy::new(name, key?, rp.limit, window, burst, tiers))
}
