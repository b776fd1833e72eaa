//! The `jwt:` config section: one named verifier per entry, validated all at once so an
//! operator sees every mistake in one run, each with its YAML path. Key files are read
//! here (so `-t` checks them); the [`Verifier`](super::Verifier) is built from the
//! validated [`JwtConfig`] by the runtime.

use crate::config::de::{de, valid_name};
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use crate::http_client;
use http::HeaderName;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Default clock-skew allowance for `exp`/`nbf`. 30 s absorbs ordinary NTP drift between
/// the issuer and the gateway without meaningfully extending a token's life.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default JWKS refresh period.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Default number of verified tokens kept per verifier.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

/// Every algorithm name accepted in `algorithms:`, as listed in error messages.
pub const VALID_ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Exact (case-sensitive, as RFC 7518 names them) algorithm lookup; `none` is not here.
pub(crate) fn algorithm_named(name: &str) -> Option<Algorithm> {
    ALGORITHMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

pub(crate) fn algorithm_name(alg: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, a)| *a == alg)
        .map_or("?", |(n, _)| n)
}

/// Headers a claim may never be copied into: framing, routing and credentials, and the
/// ones the gateway sets or reads itself (a claim header is also stripped from every
/// incoming request, which would drop a trusted proxy's `X-Forwarded-For` or the
/// browser's `Origin` that CORS answers to).
const RESERVED_HEADERS: [&str; 18] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "cookie",
    "origin",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
];

/// One entry of the `jwt:` section, as written in YAML.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// Accepted `alg` values; HMAC and public-key algorithms may not be mixed.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// HMAC secret (HS*), already `${VAR}`-expanded by the main config loader.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key (or certificate) for RS*/PS*/ES*/EdDSA, relative to the cwd.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// JWKS endpoint (http or https); keys are chosen by the token's `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// JWKS refresh period, default 5m.
    #[serde(default)]
    pub jwks_refresh: Option<Dur>,
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (the token's `aud` may be a string or an array), when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, default 30s.
    #[serde(default)]
    pub leeway: Option<Dur>,
    /// Claim name → request header to copy it into for the upstream.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Verified-token cache entries, default 10000; 0 disables the cache.
    #[serde(default)]
    pub cache_size: Option<usize>,
    /// Where the token is looked for, in order: `header` (`Authorization: Bearer`),
    /// `cookie:NAME`, `query:NAME`. Default `[header]`.
    #[serde(default)]
    pub token_from: Option<Vec<String>>,
}

/// Hand-written so a `{:?}` of the config can never print the secret.
impl std::fmt::Debug for RawJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawJwt")
            .field("algorithms", &self.algorithms)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("claims_to_headers", &self.claims_to_headers)
            .field("cache_size", &self.cache_size)
            .field("token_from", &self.token_from)
            .finish()
    }
}

/// Where a verifier gets its keys. A static key is decoded for exactly one algorithm
/// family here (`from_secret` for HS*, `from_*_pem` otherwise), so a public key can
/// never end up being used as an HMAC secret.
#[derive(Clone)]
pub enum KeySource {
    Static(DecodingKey),
    /// Fetched from `url` and refreshed every `refresh`.
    Jwks {
        url: Url,
        refresh: Duration,
    },
}

/// One validated `jwt:` verifier.
#[derive(Clone)]
pub struct JwtConfig {
    pub name: String,
    pub algorithms: Vec<Algorithm>,
    pub keys: KeySource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// Claim → request header, sorted by claim.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    pub cache_size: usize,
    /// Where the token is looked for, in order.
    pub token_from: Vec<TokenSource>,
}

/// One place a token may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer …`.
    Header,
    /// A cookie of this name.
    Cookie(String),
    /// A query parameter of this name (never logged: the access log has no query).
    Query(String),
}

impl TokenSource {
    pub fn parse(s: &str) -> Result<TokenSource, String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match s.split_once(':') {
            None if s == "header" => Ok(TokenSource::Header),
            Some(("cookie", n)) if name_ok(n) => Ok(TokenSource::Cookie(n.to_string())),
            Some(("query", n)) if name_ok(n) => Ok(TokenSource::Query(n.to_string())),
            _ => Err(format!(
                "unknown token source {s:?} (header, cookie:NAME or query:NAME)"
            )),
        }
    }
}

/// Redacted: what the verifier accepts, never its keys.
impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("name", &self.name)
            .field("algorithms", &self.algorithms)
            .field("jwks", &matches!(self.keys, KeySource::Jwks { .. }))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtConfig {
    /// Whether a running verifier built from `self` can serve for `other` too: both fetch
    /// the same JWKS with the same checks, so the fetched keys stay valid. Static keys
    /// are cheap to rebuild and never reused.
    pub fn same_jwks_verifier(&self, other: &JwtConfig) -> bool {
        match (&self.keys, &other.keys) {
            (
                KeySource::Jwks { url, refresh },
                KeySource::Jwks {
                    url: url2,
                    refresh: refresh2,
                },
            ) => {
                url == url2
                    && refresh == refresh2
                    && self.name == other.name
                    && self.algorithms == other.algorithms
                    && self.issuer == other.issuer
                    && self.audience == other.audience
                    && self.leeway == other.leeway
                    && self.claims_to_headers == other.claims_to_headers
                    && self.cache_size == other.cache_size
            }
            _ => false,
        }
    }
}

/// The `jwt:` section of the file: every valid verifier by name, and the names of all
/// declared ones (valid or not, so a route naming a broken verifier is reported once).
pub fn validate(
    v: Option<Value>,
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, JwtConfig>, Vec<String>) {
    let mut raw = BTreeMap::new();
    let mut declared = Vec::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let Some(name) = k.as_str().map(str::to_string) else {
                    errors.push(ConfigError::new("jwt", "verifier names must be strings"));
                    continue;
                };
                declared.push(name.clone());
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
    let configs = validate_raw(&raw).unwrap_or_else(|e| {
        errors.extend(e);
        BTreeMap::new()
    });
    (configs, declared)
}

/// Validate every verifier and load its keys (PEM files are read here; JWKS are fetched
/// later by the verifier's refresher). All errors are collected.
pub fn validate_raw(
    raw: &BTreeMap<String, RawJwt>,
) -> Result<BTreeMap<String, JwtConfig>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for (name, entry) in raw {
        if let Some(v) = build_one(name, entry, &mut errors) {
            out.insert(name.clone(), v);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn build_one(name: &str, raw: &RawJwt, errors: &mut Vec<ConfigError>) -> Option<JwtConfig> {
    let base = format!("jwt.{name}");
    let before = errors.len();
    let mut err = |path: String, msg: String| errors.push(ConfigError::new(path, msg));

    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        err(
            format!("{base}.algorithms"),
            format!("at least one algorithm is required (valid: {VALID_ALGORITHMS})"),
        );
    }
    for (i, a) in raw.algorithms.iter().enumerate() {
        match algorithm_named(a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => {}
            None if a.eq_ignore_ascii_case("none") => err(
                format!("{base}.algorithms[{i}]"),
                format!("\"none\" (unsigned tokens) is never accepted (valid: {VALID_ALGORITHMS})"),
            ),
            None => err(
                format!("{base}.algorithms[{i}]"),
                format!("unknown algorithm {a:?} (valid: {VALID_ALGORITHMS})"),
            ),
        }
    }
    let hmac: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|a| a.family() == AlgorithmFamily::Hmac)
        .collect();
    let public: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|a| a.family() != AlgorithmFamily::Hmac)
        .collect();
    if !hmac.is_empty() && !public.is_empty() {
        err(
            format!("{base}.algorithms"),
            format!(
                "mixes HMAC ({}) and public-key ({}) algorithms; one verifier must never accept \
                 both (algorithm confusion): split it into two verifiers",
                names(&hmac),
                names(&public)
            ),
        );
    }

    let sources: Vec<&str> = [
        ("secret", raw.secret.is_some()),
        ("public_key_file", raw.public_key_file.is_some()),
        ("jwks_url", raw.jwks_url.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(n, _)| *n)
    .collect();
    let mut keys = None;
    match sources.len() {
        0 => err(
            base.clone(),
            "a key source is required: exactly one of secret, public_key_file, jwks_url".into(),
        ),
        1 => {}
        _ => err(
            base.clone(),
            format!(
                "exactly one key source is allowed (secret, public_key_file or jwks_url), found: {}",
                sources.join(", ")
            ),
        ),
    }

    if let Some(secret) = &raw.secret {
        if secret.is_empty() {
            err(format!("{base}.secret"), "must not be empty".into());
        } else if !public.is_empty() {
            err(
                format!("{base}.secret"),
                format!(
                    "a secret only works with HS256, HS384, HS512; {} needs public_key_file or jwks_url",
                    names(&public)
                ),
            );
        } else {
            if secret.len() < 32 {
                log::warn!(
                    "jwt.{name}.secret is shorter than 32 bytes; HMAC secrets that short can be brute-forced"
                );
            }
            keys = Some(KeySource::Static(DecodingKey::from_secret(
                secret.as_bytes(),
            )));
        }
    }
    if let Some(file) = &raw.public_key_file {
        let path = format!("{base}.public_key_file");
        if !hmac.is_empty() {
            err(
                path,
                format!(
                    "{} needs secret; public_key_file is for RS*, PS*, ES*, EdDSA",
                    names(&hmac)
                ),
            );
        } else if !public.is_empty() {
            match load_public_key(file, &public) {
                Ok(key) => keys = Some(KeySource::Static(key)),
                Err(msg) => err(path, msg),
            }
        }
    }
    if let Some(url) = &raw.jwks_url {
        let path = format!("{base}.jwks_url");
        let refresh = raw.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.0);
        if !hmac.is_empty() {
            err(
                path,
                format!(
                    "{} needs secret; JWKS keys are only used for RS*, PS*, ES*, EdDSA",
                    names(&hmac)
                ),
            );
        } else {
            match http_client::parse_url(url) {
                Ok(url) => keys = Some(KeySource::Jwks { url, refresh }),
                Err(msg) => err(path, msg),
            }
        }
    }
    if let Some(d) = raw.jwks_refresh {
        if raw.jwks_url.is_none() {
            err(
                format!("{base}.jwks_refresh"),
                "only valid together with jwks_url".into(),
            );
        } else if d.0 < Duration::from_secs(1) {
            err(format!("{base}.jwks_refresh"), "must be at least 1s".into());
        }
    }
    for (field, value) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
        if value.as_deref() == Some("") {
            err(
                format!("{base}.{field}"),
                "must not be empty (omit it to skip the check)".into(),
            );
        }
    }

    let mut claims_to_headers: Vec<(String, HeaderName)> = Vec::new();
    for (claim, header) in &raw.claims_to_headers {
        let path = format!("{base}.claims_to_headers.{claim}");
        if claim.is_empty() {
            err(path, "claim names must not be empty".into());
            continue;
        }
        match HeaderName::from_bytes(header.as_bytes()) {
            Err(_) => err(
                path,
                format!(
                    "invalid header name {header:?} (use letters, digits and '-', e.g. X-User-ID)"
                ),
            ),
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => err(
                path,
                format!("header {header:?} is reserved and cannot carry a claim"),
            ),
            Ok(h) if claims_to_headers.iter().any(|(_, x)| *x == h) => err(
                path,
                format!("header {header:?} is already set from another claim"),
            ),
            Ok(h) => claims_to_headers.push((claim.clone(), h)),
        }
    }

    let mut token_from = Vec::new();
    for (i, src) in raw
        .token_from
        .clone()
        .unwrap_or_else(|| vec!["header".into()])
        .iter()
        .enumerate()
    {
        match TokenSource::parse(src) {
            Ok(t) if !token_from.contains(&t) => token_from.push(t),
            Ok(_) => err(format!("{base}.token_from[{i}]"), "listed twice".into()),
            Err(e) => err(format!("{base}.token_from[{i}]"), e),
        }
    }
    if token_from.is_empty() {
        err(
            format!("{base}.token_from"),
            "list at least one source".into(),
        );
    }

    if errors.len() != before {
        return None;
    }
    Some(JwtConfig {
        name: name.to_string(),
        algorithms,
        keys: keys?,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway: raw.leeway.map_or(DEFAULT_LEEWAY, |d| d.0),
        claims_to_headers,
        cache_size: raw.cache_size.unwrap_or(DEFAULT_CACHE_SIZE),
        token_from,
    })
}

fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| algorithm_name(*a))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Load a public key PEM for the given (non-HMAC) algorithms. Error messages name the
/// file and what was expected, never the file's contents.
fn load_public_key(file: &str, algs: &[Algorithm]) -> Result<DecodingKey, String> {
    let family = algs[0].family();
    if let Some(other) = algs.iter().find(|a| a.family() != family) {
        return Err(format!(
            "a single key file cannot serve both {} and {}; use jwks_url or two verifiers",
            algorithm_name(algs[0]),
            algorithm_name(*other)
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let label = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("-----BEGIN ")?
                    .strip_suffix("-----")
                    .map(str::to_string)
            })
        })
        .ok_or_else(|| format!("{file:?} is not a PEM file"))?;
    if label.contains("PRIVATE") {
        return Err(format!(
            "{file:?} holds a private key; configure the public key instead \
             (openssl pkey -in private.pem -pubout)"
        ));
    }
    if !matches!(
        label.as_str(),
        "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE"
    ) {
        return Err(format!(
            "{file:?} holds a PEM block of an unsupported type (expected PUBLIC KEY or CERTIFICATE)"
        ));
    }
    let wanted = names(algs);
    let (key, kind) = match family {
        AlgorithmFamily::Rsa => (DecodingKey::from_rsa_pem(&bytes), "an RSA"),
        AlgorithmFamily::Ec => (DecodingKey::from_ec_pem(&bytes), "an EC"),
        _ => (DecodingKey::from_ed_pem(&bytes), "an Ed25519"),
    };
    let bad = || format!("cannot parse {file:?} as {kind} public key (needed for {wanted})");
    let key = key.map_err(|_| bad())?;
    let raw = key.try_get_as_bytes().map_err(|_| bad())?;
    let ok = match family {
        // PKCS#1 RSAPublicKey: a DER SEQUENCE.
        AlgorithmFamily::Rsa => raw.first() == Some(&0x30),
        // Uncompressed points: 65 bytes for P-256, 97 for P-384.
        AlgorithmFamily::Ec => {
            for alg in algs {
                let (len, curve) = match alg {
                    Algorithm::ES384 => (97, "P-384"),
                    _ => (65, "P-256"),
                };
                if raw.len() != len || raw.first() != Some(&4) {
                    return Err(format!(
                        "{file:?} is not an uncompressed {curve} public key (needed for {})",
                        algorithm_name(*alg)
                    ));
                }
            }
            true
        }
        _ => raw.len() == 32,
    };
    if !ok {
        return Err(bad());
    }
    Ok(key)
}
