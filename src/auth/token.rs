//! Tokens as the proxy sees them: the bearer credential of a request, why one was
//! refused ([`AuthError`]), the verified [`Claims`], and minting test tokens.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a request was not authenticated. `Copy` and payload-free on purpose: it is used as
/// a metric label and response body, and must never carry token or key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header, or an empty one / empty bearer token.
    Missing,
    /// Not a JWT: wrong scheme, wrong segment count, bad base64/JSON, too long, `crit`.
    Malformed,
    /// The signature does not verify with the configured/selected key.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    NotYetValid,
    /// `iss` missing or different from the configured issuer.
    BadIssuer,
    /// `aud` missing or does not contain the configured audience.
    BadAudience,
    /// The header `alg` is not in the verifier's list (`none` always lands here).
    AlgorithmNotAllowed,
    /// JWKS verifier: no key with the token's `kid` (a rate-limited refresh is triggered).
    UnknownKid,
    /// JWKS verifier: no key set has been fetched yet. The gateway's fault, hence 503.
    KeysUnavailable,
}

impl AuthError {
    /// Snake-case reason, used as the JSON `error` value and the metric label `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::UnknownKid => "unknown_kid",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    /// HTTP status to answer with: 401 for anything the client can fix, 503 when the
    /// gateway itself has no keys to check against.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::KeysUnavailable => 503,
            _ => 401,
        }
    }
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

/// Extract the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive, surrounding whitespace ignored). Pass `b""` when the header is absent.
///
/// `Missing` for an empty header or an empty token; `Malformed` for non-UTF-8, another
/// scheme, or a token containing whitespace/control characters.
pub fn bearer_token(authorization_header_value: &[u8]) -> Result<&str, AuthError> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let value = trim_start(authorization_header_value, is_ows);
    let value = match value.iter().rposition(|b| !is_ows(b)) {
        Some(last) => &value[..=last],
        None => return Err(AuthError::Missing),
    };
    let (scheme, rest) = match value.iter().position(is_ows) {
        Some(i) => value.split_at(i),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::Malformed);
    }
    let token = trim_start(rest, is_ows);
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    // Visible ASCII only (so also valid UTF-8). A fold without an early exit: the
    // compiler checks 16 bytes at a time, and a token is a few hundred bytes.
    let visible = token
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
    if !visible {
        return Err(AuthError::Malformed);
    }
    std::str::from_utf8(token).map_err(|_| AuthError::Malformed)
}

fn trim_start(v: &[u8], skip: impl Fn(&u8) -> bool) -> &[u8] {
    let start = v.iter().position(|b| !skip(b)).unwrap_or(v.len());
    &v[start..]
}

/// The verified claims of a token. Shared (`Arc`) between the cache and requests, so it
/// is immutable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Wrap a claims object (tests and tooling; the verifier builds these itself).
    pub fn from_map(map: Map<String, Value>) -> Self {
        Claims(map)
    }

    /// The whole claims object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// A claim's raw JSON value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A claim as text for headers and rate-limit keys: strings as-is, numbers and bools
    /// rendered; null, arrays and objects give `None` (no sensible single header value).
    pub fn get_str(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.0.get(name)? {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(true) => Some(Cow::Borrowed("true")),
            Value::Bool(false) => Some(Cow::Borrowed("false")),
            _ => None,
        }
    }

    /// `require_claims` check: the claim is a string in `allowed`, or an array of which
    /// any string element is in `allowed`. Missing claims and other types never match.
    pub fn matches(&self, name: &str, allowed: &[String]) -> bool {
        match self.0.get(name) {
            Some(Value::String(s)) => allowed.iter().any(|a| a == s),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .any(|s| allowed.iter().any(|a| a == s)),
            _ => false,
        }
    }
}

/// Mint an HS256 token for the `gatehouse token` CLI: `sub`, `iat`, `exp = now + ttl` and
/// extra string claims. Extra claims may not override `sub`/`iat`/`exp`, so the expiry
/// printed by the CLI is the real one.
pub fn mint_hs256(
    secret: &[u8],
    sub: &str,
    claims: &[(String, String)],
    ttl: Duration,
) -> Result<String, String> {
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "system clock is before 1970".to_string())?
        .as_secs();
    let exp = now
        .checked_add(ttl.as_secs().max(1))
        .ok_or_else(|| "ttl is out of range".to_string())?;
    let mut map = Map::new();
    map.insert("sub".into(), Value::String(sub.to_string()));
    map.insert("iat".into(), Value::from(now));
    map.insert("exp".into(), Value::from(exp));
    for (name, value) in claims {
        if matches!(name.as_str(), "sub" | "iat" | "exp") {
            return Err(format!(
                "claim {name:?} is set by the tool (use --sub / --ttl)"
            ));
        }
        if name.is_empty() {
            return Err("claim names must not be empty".into());
        }
        map.insert(name.clone(), Value::String(value.clone()));
    }
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &map,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign token: {e}"))
}
