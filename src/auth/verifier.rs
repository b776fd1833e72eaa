//! Token verification. [`Verifier::verify`] is synchronous and does no I/O: the proxy calls
//! it inline for every request, so it must never block on the network. JWKS keys are read
//! through an `ArcSwap` load and refreshed by a separate background task.

use super::cache::TokenCache;
use super::config::{algorithm_named, JwtConfig, KeySource};
use super::jwks::{Jwks, Miss};
use super::token::{AuthError, Claims};
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longer tokens are rejected before any parsing: real JWTs are well under 8 KiB and a
/// cap bounds the work an attacker can make us do per request.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Cached entries live at most this long even if `exp` is later or absent, so a token
/// without `exp` is still re-checked now and then.
const MAX_CACHE_TTL_SECS: u64 = 300;

/// Where the verifier gets its keys (see [`KeySource`]).
pub(crate) enum Keys {
    Static(DecodingKey),
    Jwks(Box<Jwks>),
}

/// One named `jwt:` verifier. Shared as `Arc<Verifier>` between requests and its JWKS
/// refresher task.
pub struct Verifier {
    name: String,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
    claims_to_headers: Vec<(String, HeaderName)>,
    cache: TokenCache,
}

/// Redacted: shows what the verifier accepts, never its keys.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("name", &self.name)
            .field("algorithms", &self.algorithms)
            .field("jwks", &self.needs_jwks())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// The JOSE header fields we act on. `jwk`, `jku`, `x5u`, `x5c` are deliberately ignored:
/// keys named by the token itself are never trusted.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl Verifier {
    pub fn new(c: &JwtConfig) -> Self {
        let keys = match &c.keys {
            KeySource::Static(key) => Keys::Static(key.clone()),
            KeySource::Jwks { url, refresh } => Keys::Jwks(Box::new(Jwks::new(
                c.name.clone(),
                url.clone(),
                *refresh,
                c.algorithms.clone(),
            ))),
        };
        Verifier {
            name: c.name.clone(),
            algorithms: c.algorithms.clone(),
            keys,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            leeway: c.leeway.as_secs(),
            claims_to_headers: c.claims_to_headers.clone(),
            cache: TokenCache::new(c.cache_size),
        }
    }

    /// The verifier's name in the `jwt:` section.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Claims to copy into upstream request headers, as `(claim, header)`, sorted by claim.
    pub fn claims_to_headers(&self) -> &[(String, HeaderName)] {
        &self.claims_to_headers
    }

    /// True when keys come from a JWKS URL, i.e. [`Verifier::run_jwks_refresher`] must be
    /// spawned or every token gets `KeysUnavailable`.
    pub fn needs_jwks(&self) -> bool {
        matches!(self.keys, Keys::Jwks(_))
    }

    /// Verified tokens currently cached (metrics, tests).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Cache hits since start (metrics, tests).
    pub fn cache_hits(&self) -> u64 {
        self.cache.hits()
    }

    /// Verify a token (without the `Bearer ` prefix) at time `now_unix_secs`.
    ///
    /// `exp` is optional (tokens without it are accepted, as RFC 7519 allows) but checked
    /// when present: valid while `now < exp + leeway`; `nbf` fails while
    /// `now + leeway < nbf`. `iss`/`aud` are required only when configured. A repeated
    /// valid token is answered from the cache without re-checking the signature.
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Arc<Claims>, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        if let Some(claims) = self.cache.get(token, now_unix_secs) {
            return Ok(claims);
        }
        let (claims, cache_until) = self.verify_uncached(token, now_unix_secs)?;
        let claims = Arc::new(claims);
        self.cache
            .insert(token, Arc::clone(&claims), cache_until, now_unix_secs);
        Ok(claims)
    }

    /// Full check; returns the claims and how long they may be cached (unix seconds).
    fn verify_uncached(&self, token: &str, now: u64) -> Result<(Claims, u64), AuthError> {
        let mut parts = token.splitn(4, '.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        if header_b64.is_empty() || payload_b64.is_empty() {
            return Err(AuthError::Malformed);
        }
        let header_json = b64url_decode(header_b64).ok_or(AuthError::Malformed)?;
        let header: JoseHeader =
            serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
        // `alg: none` and anything unlisted stop here, before a key is even chosen.
        let alg = algorithm_named(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(AuthError::AlgorithmNotAllowed)?;
        // RFC 7515 4.1.11: extensions we do not understand must make the token invalid.
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        if sig_b64.is_empty() || b64url_decoded_len(sig_b64).is_none() {
            return Err(AuthError::Malformed);
        }
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        match &self.keys {
            Keys::Static(key) => check_signature(sig_b64, signed, key, alg)?,
            Keys::Jwks(jwks) => {
                let guard = jwks.current();
                let Some(set) = guard.as_ref() else {
                    jwks.report_unavailable(now);
                    return Err(AuthError::KeysUnavailable);
                };
                match set.select(header.kid.as_deref(), alg) {
                    Ok(key) => check_signature(sig_b64, signed, key, alg)?,
                    Err(Miss::WrongAlgorithm) => return Err(AuthError::BadSignature),
                    Err(Miss::Ambiguous) => return Err(AuthError::UnknownKid),
                    Err(Miss::NotFound) => {
                        // Maybe the issuer rotated keys: wake the refresher (rate-limited).
                        jwks.request_refresh(now);
                        return Err(AuthError::UnknownKid);
                    }
                }
            }
        }
        let payload = b64url_decode(payload_b64).ok_or(AuthError::Malformed)?;
        let map: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;
        let cache_until = self.check_claims(&map, now)?;
        Ok((Claims::from_map(map), cache_until))
    }

    fn check_claims(&self, map: &Map<String, Value>, now: u64) -> Result<u64, AuthError> {
        let exp = numeric_date(map, "exp")?;
        let nbf = numeric_date(map, "nbf")?;
        let (now_f, leeway) = (now as f64, self.leeway as f64);
        if let Some(exp) = exp {
            if now_f >= exp + leeway {
                return Err(AuthError::Expired);
            }
        }
        if let Some(nbf) = nbf {
            if now_f + leeway < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(want) = &self.issuer {
            if map.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(AuthError::BadIssuer);
            }
        }
        if let Some(want) = &self.audience {
            let ok = match map.get("aud") {
                Some(Value::String(s)) => s == want,
                Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::BadAudience);
            }
        }
        // Never cache past `exp` itself (the leeway is for clock skew, not for caching).
        let cap = now.saturating_add(MAX_CACHE_TTL_SECS);
        Ok(exp.map_or(cap, |e| (e.floor().max(0.0) as u64).min(cap)))
    }

    /// Start an async JWKS fetch now; `Ok(())` without I/O for verifiers without
    /// `jwks_url`. On failure the previous key set stays in use.
    pub async fn refresh_jwks(&self) -> Result<(), String> {
        match &self.keys {
            Keys::Jwks(jwks) => jwks.refresh(&self.cache).await,
            Keys::Static(_) => Ok(()),
        }
    }

    /// Background JWKS loop; returns at once for verifiers without `jwks_url`. Fetches
    /// immediately, then every `jwks_refresh` (sooner, with backoff, after a failure), and
    /// also when `verify` saw an unknown `kid` (at most once per 5 s). Returns when `true`
    /// is sent on `shutdown`; a dropped sender does not stop it.
    pub async fn run_jwks_refresher(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.run(&self.cache, shutdown).await;
        }
    }

    #[cfg(test)]
    pub(crate) fn leeway_secs(&self) -> u64 {
        self.leeway
    }

    #[cfg(test)]
    pub(crate) fn jwks(&self) -> Option<&Jwks> {
        match &self.keys {
            Keys::Jwks(j) => Some(j),
            Keys::Static(_) => None,
        }
    }
}

/// Signature check. The family comparison is redundant with config validation and with
/// jsonwebtoken's own check, and is kept as a last line against algorithm confusion.
fn check_signature(
    sig_b64: &str,
    signed: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<(), AuthError> {
    if key.family() != alg.family() {
        return Err(AuthError::AlgorithmNotAllowed);
    }
    match jsonwebtoken::crypto::verify(sig_b64, signed, key, alg) {
        Ok(true) => Ok(()),
        _ => Err(AuthError::BadSignature),
    }
}

/// A NumericDate claim: absent is fine, present must be a JSON number.
fn numeric_date(map: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match map.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or(AuthError::Malformed),
    }
}

fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Decoded length of unpadded base64url, or `None` if `s` is not canonical base64url
/// (bad characters, impossible length, non-zero trailing bits).
fn b64url_decoded_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.len() % 4 == 1 || !b.iter().all(|&c| b64_value(c).is_some()) {
        return None;
    }
    let last = b.last().and_then(|&c| b64_value(c)).unwrap_or(0);
    let spare_bits_ok = match b.len() % 4 {
        2 => last & 0x0f == 0,
        3 => last & 0x03 == 0,
        _ => true,
    };
    spare_bits_ok.then_some(b.len() / 4 * 3 + (b.len() % 4).saturating_sub(1))
}

/// Strict unpadded base64url decoding (RFC 7515 section 2).
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b64url_decoded_len(s)?);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in s.as_bytes() {
        acc = (acc << 6) | u32::from(b64_value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
