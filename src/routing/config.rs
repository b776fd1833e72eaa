//! The `routes:` section: raw serde shapes and their validation into [`RouteConfig`]s,
//! with every reference to a service, verifier or policy checked against the names the
//! other sections declare.

use super::conditions::{Conditions, RawCond};
use super::rewrite::{RawRedirect, RawRewrite, Redirect, Rewrite};
use crate::cache::{CachePolicy, RawCache};
use crate::config::de::{de, valid_name, OneOrMany};
use crate::config::error::{collect, ConfigError};
use crate::transform::{Cors, HeaderRules, IpRules, RawCors, RawHeaderRules};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    #[serde(rename = "match")]
    matcher: RawMatch,
    /// Absent only on a `redirect` route, or with `services`.
    service: Option<String>,
    /// Weighted split across services (instead of `service`).
    services: Option<Vec<RawWeighted>>,
    /// Keep a client on the service the split chose for it.
    split_sticky: Option<RawSplitSticky>,
    rewrite: Option<RawRewrite>,
    redirect: Option<RawRedirect>,
    /// Copy a share of the requests to another service (validated in `crate::mirror`).
    mirror: Option<Value>,
    #[serde(default)]
    strip_prefix: bool,
    auth: Option<RawAuth>,
    #[serde(default)]
    keep_credentials: bool,
    require_groups: Option<Vec<String>>,
    #[serde(default)]
    rate_limit: Vec<String>,
    request_headers: Option<RawHeaderRules>,
    response_headers: Option<RawHeaderRules>,
    cors: Option<RawCors>,
    allow_ips: Option<Vec<String>>,
    deny_ips: Option<Vec<String>>,
    cache: Option<RawCache>,
    #[serde(default)]
    compression: bool,
    #[serde(default)]
    websocket: bool,
    require_claims: Option<BTreeMap<String, OneOrMany>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeighted {
    service: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplitSticky {
    cookie: Option<String>,
    ttl: Option<crate::config::units::Dur>,
    hash_key: Option<String>,
}

/// How a client stays on the service a split chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitSticky {
    /// The gateway sets this cookie (the service's name) for `ttl`.
    Cookie {
        name: String,
        ttl: std::time::Duration,
    },
    /// The same key always maps to the same service (while the weights stay).
    Hash(crate::upstream::HashKey),
}

/// `auth: main` (a JWT verifier) or a list of methods tried in order.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAuth {
    Jwt(String),
    Methods(Vec<RawAuthItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAuthItem {
    /// `basic` or `api_key`.
    Word(String),
    Map(RawAuthMethod),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthMethod {
    jwt: Option<String>,
    api_key: Option<RawApiKey>,
    forward: Option<String>,
    on_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    header: Option<String>,
    query: Option<String>,
}

/// One way a route accepts a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethodConfig {
    /// A `jwt:` verifier.
    Jwt(String),
    /// A consumer's API key, from a header and/or a query parameter.
    ApiKey {
        header: Option<http::HeaderName>,
        query: Option<String>,
    },
    /// A consumer's basic-auth user name and password.
    Basic,
    /// A `forward_auth:` service; `allow_on_error`: let the request through (without a
    /// consumer) when the service cannot answer.
    Forward { name: String, allow_on_error: bool },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    host: Option<String>,
    path_prefix: Option<String>,
    methods: Option<Vec<String>>,
    path_regex: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, RawCond>,
    #[serde(default)]
    query: BTreeMap<String, RawCond>,
    #[serde(default)]
    cookies: BTreeMap<String, RawCond>,
}

/// One validated route, in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-case; `*.example.com` matches any sub-domain.
    pub host: Option<String>,
    /// Normalised: starts with `/`, no trailing `/` (except the root itself).
    pub path_prefix: String,
    /// Empty = any method.
    pub methods: Vec<http::Method>,
    /// Headers, query, cookies, path regex (compiled; shared with the route table).
    pub conditions: Option<Arc<Conditions>>,
    /// Empty on a `redirect` route; the first service of a split.
    pub service: String,
    /// `services:`: (service, weight), in order; empty without a split.
    pub split: Vec<(String, u32)>,
    pub split_sticky: Option<SplitSticky>,
    pub strip_prefix: bool,
    /// The methods tried in order, first success wins; empty = public route.
    pub auth: Vec<AuthMethodConfig>,
    /// Forward the credential that authenticated the request (default: removed).
    pub keep_credentials: bool,
    /// The consumer must be in one of these groups (403 otherwise).
    pub require_groups: Vec<String>,
    /// Claim name → accepted values (any one of them).
    pub require_claims: Vec<(String, Vec<String>)>,
    /// Rate-limit policy names, all of which must allow.
    pub rate_limit: Vec<String>,
    pub cache: Option<CachePolicy>,
    pub mirror: Option<crate::mirror::MirrorConfig>,
    pub policy: Arc<RoutePolicy>,
}

/// The compiled traffic policies of one route: what it rewrites, who it admits, what it
/// lets through.
#[derive(Debug, Default)]
pub struct RoutePolicy {
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    pub cors: Option<Cors>,
    pub ip_rules: Option<IpRules>,
    pub compression: bool,
    pub websocket: bool,
    pub rewrite: Option<Rewrite>,
    /// Answered by the gateway: the route proxies nothing.
    pub redirect: Option<Redirect>,
}

/// The names a route may refer to: every one declared in its section, valid or not, so
/// a route naming a service with errors of its own is not reported a second time.
pub struct Names<'a> {
    pub services: &'a [String],
    pub verifiers: &'a [String],
    pub policies: &'a [String],
    pub forward_auth: &'a [String],
    /// Every group some consumer is in.
    pub groups: &'a std::collections::BTreeSet<&'a str>,
    pub any_api_key: bool,
    pub any_basic: bool,
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// Validate the `routes:` section; a route with errors is left out (and its errors are
/// in `errors`).
pub fn validate_routes(
    v: Option<Value>,
    names: &Names,
    errors: &mut Vec<ConfigError>,
) -> Vec<RouteConfig> {
    let items = match v {
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        _ => {
            errors.push(ConfigError::new(
                "routes",
                "at least one route is required (a list of { name, match, service })",
            ));
            return vec![];
        }
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
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
        } else if !seen.insert(raw.name.clone()) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate route name {:?}", raw.name),
            ));
        }
        check_refs(&raw, &path, names, errors);
        let auth = auth_methods(raw.auth.as_ref(), &path, names, errors);
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
        let mut methods = Vec::new();
        for (j, name) in m.methods.unwrap_or_default().iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            match http::Method::from_bytes(upper.as_bytes()) {
                Ok(method) if METHODS.contains(&upper.as_str()) => {
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
                _ => errors.push(ConfigError::new(
                    format!("{path}.match.methods[{j}]"),
                    format!("unknown method {name:?} (valid: {})", METHODS.join(", ")),
                )),
            }
        }
        let conditions = Conditions::compile(
            m.path_regex.as_deref(),
            &m.headers,
            &m.query,
            &m.cookies,
            &path,
            errors,
        )
        .map(Arc::new);
        let captures: Vec<String> = conditions
            .as_ref()
            .and_then(|c| c.path_regex.as_ref())
            .map(super::rewrite::capture_names)
            .unwrap_or_default();
        let rewrite = raw
            .rewrite
            .as_ref()
            .and_then(|r| Rewrite::compile(r, &path, errors));
        let redirect = raw
            .redirect
            .as_ref()
            .and_then(|r| Redirect::compile(r, &captures, &path, errors));
        if raw.redirect.is_some() {
            for (set, key) in [
                (raw.service.is_some(), "service"),
                (raw.rewrite.is_some(), "rewrite"),
                (raw.cache.is_some(), "cache"),
                (raw.mirror.is_some(), "mirror"),
                (raw.strip_prefix, "strip_prefix"),
                (raw.websocket, "websocket"),
            ] {
                if set {
                    errors.push(ConfigError::new(
                        format!("{path}.{key}"),
                        "a redirect route proxies nothing: remove it (or the redirect)",
                    ));
                }
            }
        }
        if raw.strip_prefix && rewrite.as_ref().is_some_and(|r| r.path.is_some()) {
            errors.push(ConfigError::new(
                format!("{path}.strip_prefix"),
                "use either strip_prefix or rewrite.path_regex, not both",
            ));
        }
        let (split, split_sticky) = split_config(
            raw.services.as_deref(),
            raw.split_sticky.as_ref(),
            raw.service.is_some() || raw.redirect.is_some(),
            &path,
            errors,
        );
        let mut require_claims = Vec::new();
        for (claim, values) in raw.require_claims.unwrap_or_default() {
            let values = values.into_vec();
            if !auth.iter().any(|m| matches!(m, AuthMethodConfig::Jwt(_))) {
                errors.push(ConfigError::new(
                    format!("{path}.require_claims"),
                    "needs a jwt auth method: a route without a verifier has no claims",
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
        let require_groups = raw.require_groups.clone().unwrap_or_default();
        if raw.require_groups.is_some() {
            if auth.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.require_groups"),
                    "needs auth: a public route has no consumer",
                ));
            } else if require_groups.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.require_groups"),
                    "list at least one group",
                ));
            }
        }
        for (j, g) in require_groups.iter().enumerate() {
            if !names.groups.contains(g.as_str()) {
                errors.push(ConfigError::new(
                    format!("{path}.require_groups[{j}]"),
                    format!("no consumer is in group {g:?}"),
                ));
            }
        }
        if raw.keep_credentials && auth.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.keep_credentials"),
                "needs auth: a public route takes no credentials",
            ));
        }
        let rules = |raw: &Option<RawHeaderRules>, key: &str| {
            raw.as_ref().map_or(Ok(HeaderRules::default()), |r| {
                crate::transform::build_header_rules(r, &format!("{path}.{key}"), true)
            })
        };
        let policy = RoutePolicy {
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
            compression: raw.compression,
            websocket: raw.websocket,
            rewrite,
            redirect,
        };
        let mirror = raw.mirror.clone().and_then(|m| {
            crate::mirror::validate(m, &format!("{path}.mirror"), names.services, errors)
        });
        let cache = raw
            .cache
            .as_ref()
            .and_then(|c| collect(crate::cache::build(c, &format!("{path}.cache")), errors));
        if errors.len() == before {
            out.push(RouteConfig {
                name: raw.name,
                host,
                path_prefix: normalise_prefix(&prefix),
                methods,
                conditions,
                service: raw
                    .service
                    .or_else(|| split.first().map(|(s, _)| s.clone()))
                    .unwrap_or_default(),
                split,
                split_sticky,
                strip_prefix: raw.strip_prefix,
                auth,
                keep_credentials: raw.keep_credentials,
                require_groups,
                require_claims,
                rate_limit: raw.rate_limit,
                cache,
                mirror,
                policy: Arc::new(policy),
            });
        }
    }
    out
}

/// The route's service and policies must be declared.
fn check_refs(raw: &RawRoute, path: &str, names: &Names, errors: &mut Vec<ConfigError>) {
    match &raw.service {
        Some(service) if !names.services.contains(service) => errors.push(ConfigError::new(
            format!("{path}.service"),
            format!(
                "unknown service {:?} (known: {})",
                service,
                names.services.join(", ")
            ),
        )),
        None if raw.redirect.is_none() && raw.services.is_none() => errors.push(ConfigError::new(
            format!("{path}.service"),
            "required (or services: for a split; only a redirect route has none)",
        )),
        _ => {}
    }
    for (j, w) in raw.services.iter().flatten().enumerate() {
        if !names.services.contains(&w.service) {
            errors.push(ConfigError::new(
                format!("{path}.services[{j}].service"),
                format!(
                    "unknown service {:?} (known: {})",
                    w.service,
                    names.services.join(", ")
                ),
            ));
        }
    }
    for (j, name) in raw.rate_limit.iter().enumerate() {
        if !names.policies.contains(name) {
            errors.push(ConfigError::new(
                format!("{path}.rate_limit[{j}]"),
                format!(
                    "unknown rate-limit policy {name:?} (known: {})",
                    names.policies.join(", ")
                ),
            ));
        }
    }
}

/// `services:` and `split_sticky:`.
fn split_config(
    services: Option<&[RawWeighted]>,
    sticky: Option<&RawSplitSticky>,
    has_other_target: bool,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> (Vec<(String, u32)>, Option<SplitSticky>) {
    let Some(list) = services else {
        if sticky.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.split_sticky"),
                "only with services: (a split)",
            ));
        }
        return (Vec::new(), None);
    };
    if has_other_target {
        errors.push(ConfigError::new(
            format!("{path}.services"),
            "give one of service, services (a split) or redirect",
        ));
    }
    if list.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.services"),
            "list at least one { service, weight }",
        ));
    }
    let total: u64 = list.iter().map(|w| u64::from(w.weight)).sum();
    if !list.is_empty() && total == 0 {
        errors.push(ConfigError::new(
            format!("{path}.services"),
            "the weights sum to 0: give at least one a weight above 0",
        ));
    }
    if total > 1_000_000 {
        errors.push(ConfigError::new(
            format!("{path}.services"),
            "the weights sum to more than 1000000",
        ));
    }
    let mut seen = HashSet::new();
    for (j, w) in list.iter().enumerate() {
        if !seen.insert(&w.service) {
            errors.push(ConfigError::new(
                format!("{path}.services[{j}].service"),
                format!("{:?} is listed twice", w.service),
            ));
        }
    }
    let sticky = sticky.and_then(|s| match (&s.cookie, &s.hash_key) {
        (Some(name), None) => {
            if !crate::upstream::config::valid_cookie_name(name) {
                errors.push(ConfigError::new(
                    format!("{path}.split_sticky.cookie"),
                    format!("invalid cookie name {name:?} (letters, digits, _ - .)"),
                ));
            }
            Some(SplitSticky::Cookie {
                name: name.clone(),
                ttl: s.ttl.map_or(std::time::Duration::from_secs(86_400), |d| d.0),
            })
        }
        (None, Some(key)) => {
            if s.ttl.is_some() {
                errors.push(ConfigError::new(
                    format!("{path}.split_sticky.ttl"),
                    "only with cookie",
                ));
            }
            match crate::upstream::config::parse_hash_key(key) {
                Ok(k) => Some(SplitSticky::Hash(k)),
                Err(e) => {
                    errors.push(ConfigError::new(format!("{path}.split_sticky.hash_key"), e));
                    None
                }
            }
        }
        _ => {
            errors.push(ConfigError::new(
                format!("{path}.split_sticky"),
                "give cookie (the gateway sets it) or hash_key (client_ip, header:NAME, cookie:NAME, jwt.CLAIM)",
            ));
            None
        }
    });
    (
        list.iter().map(|w| (w.service.clone(), w.weight)).collect(),
        sticky,
    )
}

/// The route's auth methods, each reference checked.
fn auth_methods(
    raw: Option<&RawAuth>,
    path: &str,
    names: &Names,
    errors: &mut Vec<ConfigError>,
) -> Vec<AuthMethodConfig> {
    let jwt = |name: &str, at: String, errors: &mut Vec<ConfigError>| {
        if !names.verifiers.iter().any(|v| v == name) {
            errors.push(ConfigError::new(
                at,
                format!(
                    "unknown jwt verifier {name:?} (known: {})",
                    names.verifiers.join(", ")
                ),
            ));
        }
        AuthMethodConfig::Jwt(name.to_string())
    };
    let items = match raw {
        None => return vec![],
        Some(RawAuth::Jwt(name)) => return vec![jwt(name, format!("{path}.auth"), errors)],
        Some(RawAuth::Methods(items)) => items,
    };
    if items.is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.auth"),
            "list at least one method (or omit auth for a public route)",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}.auth[{i}]");
        let method = match item {
            RawAuthItem::Word(w) if w == "basic" => AuthMethodConfig::Basic,
            RawAuthItem::Word(w) if w == "api_key" => AuthMethodConfig::ApiKey {
                header: Some(http::HeaderName::from_static("x-api-key")),
                query: None,
            },
            RawAuthItem::Word(w) => {
                errors.push(ConfigError::new(
                    &at,
                    format!(
                        "unknown method {w:?} (basic, api_key, {{ jwt: NAME }}, {{ api_key: {{ header, query }} }}, {{ forward: NAME }})"
                    ),
                ));
                continue;
            }
            RawAuthItem::Map(m) => {
                let given = [m.jwt.is_some(), m.api_key.is_some(), m.forward.is_some()]
                    .iter()
                    .filter(|&&b| b)
                    .count();
                if given != 1 {
                    errors.push(ConfigError::new(
                        &at,
                        "name exactly one method: jwt, api_key or forward",
                    ));
                    continue;
                }
                if m.on_error.is_some() && m.forward.is_none() {
                    errors.push(ConfigError::new(
                        format!("{at}.on_error"),
                        "only a forward method has on_error",
                    ));
                }
                if let Some(name) = &m.jwt {
                    jwt(name, format!("{at}.jwt"), errors)
                } else if let Some(k) = &m.api_key {
                    let header = match &k.header {
                        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
                            Ok(h) => Some(h),
                            Err(_) => {
                                errors.push(ConfigError::new(
                                    format!("{at}.api_key.header"),
                                    format!("invalid header name {h:?}"),
                                ));
                                None
                            }
                        },
                        None if k.query.is_none() => {
                            Some(http::HeaderName::from_static("x-api-key"))
                        }
                        None => None,
                    };
                    if k.query.as_deref() == Some("") {
                        errors.push(ConfigError::new(
                            format!("{at}.api_key.query"),
                            "must not be empty",
                        ));
                    }
                    AuthMethodConfig::ApiKey {
                        header,
                        query: k.query.clone(),
                    }
                } else {
                    let name = m.forward.clone().unwrap_or_default();
                    if !names.forward_auth.contains(&name) {
                        errors.push(ConfigError::new(
                            format!("{at}.forward"),
                            format!(
                                "unknown forward_auth service {name:?} (known: {})",
                                names.forward_auth.join(", ")
                            ),
                        ));
                    }
                    let allow_on_error = match m.on_error.as_deref() {
                        None | Some("deny") => false,
                        Some("allow") => true,
                        Some(other) => {
                            errors.push(ConfigError::new(
                                format!("{at}.on_error"),
                                format!("must be allow or deny, got {other:?}"),
                            ));
                            false
                        }
                    };
                    AuthMethodConfig::Forward {
                        name,
                        allow_on_error,
                    }
                }
            }
        };
        match &method {
            AuthMethodConfig::ApiKey { .. } if !names.any_api_key => {
                errors.push(ConfigError::new(
                    &at,
                    "api_key: no consumer has an API key (consumers.*.api_keys)",
                ));
            }
            AuthMethodConfig::Basic if !names.any_basic => {
                errors.push(ConfigError::new(
                    &at,
                    "basic: no consumer has basic credentials (consumers.*.basic)",
                ));
            }
            _ => {}
        }
        if out.contains(&method) {
            errors.push(ConfigError::new(&at, "listed twice"));
        }
        out.push(method);
    }
    out
}

/// `/api/users/` → `/api/users`; `/` stays `/`; `//a` → `/a`.
fn normalise_prefix(p: &str) -> String {
    let segments: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}
