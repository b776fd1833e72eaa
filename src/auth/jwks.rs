//! JWKS key sets: parsing (RFC 7517), the current set behind an `ArcSwapOption` so
//! `verify` reads it lock-free, and the background refresher.
//!
//! Refresh policy: fetch at start, then every `jwks_refresh`; after a failure retry with
//! backoff (1 s doubling to 60 s, never later than `jwks_refresh`) and keep the last good
//! set. `verify` seeing an unknown `kid` wakes the refresher through a `Notify`, at most
//! once per [`TRIGGER_GAP_SECS`] (an atomic timestamp), and the refresher itself never
//! fetches twice within `min_gap`: bad tokens can never turn into outbound requests.

use super::cache::TokenCache;
use crate::http_client;
use arc_swap::{ArcSwapOption, Guard};
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 1024 * 1024;
/// Minimum spacing (token clock) between refreshes requested by `verify`.
pub(crate) const TRIGGER_GAP_SECS: u64 = 5;
/// Minimum spacing between "no keys yet" log lines.
const LOG_GAP_SECS: u64 = 10;
/// Keys beyond this many in one document are ignored.
const MAX_KEYS: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One usable verification key from the set.
struct JwkKey {
    kid: Option<String>,
    /// The verifier's algorithms this key may verify (family, curve and the JWK's own
    /// `alg` taken into account).
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// An immutable, parsed key set.
pub(crate) struct KeySet {
    keys: Vec<JwkKey>,
    fingerprint: u64,
}

/// Why no key was selected for a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No key with that `kid` (or, without `kid`, no key for the algorithm at all).
    NotFound,
    /// The `kid` exists but its key cannot verify this `alg`.
    WrongAlgorithm,
    /// No `kid` in the token and several keys fit: we do not try them all.
    Ambiguous,
}

impl KeySet {
    /// Parse a JWKS document, keeping only signature keys that fit `algorithms`.
    /// Symmetric (`oct`) keys are always dropped: a secret fetched from a URL next to
    /// public keys is exactly the algorithm-confusion setup.
    pub(crate) fn parse(body: &[u8], algorithms: &[Algorithm]) -> Result<KeySet, String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document ({e})"))?;
        let total = doc.keys.len();
        let keys: Vec<JwkKey> = doc
            .keys
            .into_iter()
            .take(MAX_KEYS)
            .filter_map(|v| usable_key(v, algorithms))
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "JWKS has no usable signature key for the configured algorithms ({total} key(s) skipped)"
            ));
        }
        if keys.len() < total {
            log::debug!("JWKS: {} of {total} key(s) skipped", total - keys.len());
        }
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        Ok(KeySet {
            keys,
            fingerprint: h.finish(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Pick the key for a token's `kid` and `alg`.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, Miss> {
        match kid {
            Some(kid) => {
                let mut seen = false;
                for k in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    if k.algorithms.contains(&alg) {
                        return Ok(&k.key);
                    }
                    seen = true;
                }
                Err(if seen {
                    Miss::WrongAlgorithm
                } else {
                    Miss::NotFound
                })
            }
            None => {
                let mut fit = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Ok(&k.key),
                    (None, _) => Err(Miss::NotFound),
                    _ => Err(Miss::Ambiguous),
                }
            }
        }
    }
}

fn usable_key(value: serde_json::Value, verifier_algs: &[Algorithm]) -> Option<JwkKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    use Algorithm::*;
    let (family_algs, point_len): (&[Algorithm], Option<usize>) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (&[RS256, RS384, RS512, PS256, PS384, PS512], None),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (&[ES256], Some(65)),
            EllipticCurve::P384 => (&[ES384], Some(97)),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => (&[EdDSA], Some(32)),
            _ => return None,
        },
        _ => return None,
    };
    let mut algorithms: Vec<Algorithm> = family_algs
        .iter()
        .copied()
        .filter(|a| verifier_algs.contains(a))
        .collect();
    if let Some(ka) = jwk.common.key_algorithm {
        let declared = match ka {
            KeyAlgorithm::RS256 => RS256,
            KeyAlgorithm::RS384 => RS384,
            KeyAlgorithm::RS512 => RS512,
            KeyAlgorithm::PS256 => PS256,
            KeyAlgorithm::PS384 => PS384,
            KeyAlgorithm::PS512 => PS512,
            KeyAlgorithm::ES256 => ES256,
            KeyAlgorithm::ES384 => ES384,
            KeyAlgorithm::EdDSA => EdDSA,
            // HMAC, encryption and unknown algorithms: not a signature key for us.
            _ => return None,
        };
        algorithms.retain(|a| *a == declared);
    }
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    // from_jwk does not check point sizes; a short point would only fail later, per token.
    if let Some(len) = point_len {
        if key.try_get_as_bytes().ok()?.len() != len {
            return None;
        }
    }
    Some(JwkKey {
        kid: jwk.common.key_id,
        algorithms,
        key,
    })
}

/// JWKS state of one verifier.
pub(crate) struct Jwks {
    name: String,
    url: Url,
    refresh: Duration,
    algorithms: Vec<Algorithm>,
    current: ArcSwapOption<KeySet>,
    notify: tokio::sync::Notify,
    /// Token-clock second of the last refresh request from `verify` (0: never).
    last_trigger: AtomicU64,
    last_unavailable_log: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Minimum real time between two fetches of the refresher, in milliseconds.
    min_gap_ms: AtomicU64,
    /// Refresh requests signalled by `verify`, and completed fetch attempts (tests).
    triggers: AtomicU64,
    fetches: AtomicU64,
}

impl Jwks {
    pub(crate) fn new(
        name: String,
        url: Url,
        refresh: Duration,
        algorithms: Vec<Algorithm>,
    ) -> Self {
        Jwks {
            name,
            url,
            refresh,
            algorithms,
            current: ArcSwapOption::empty(),
            notify: tokio::sync::Notify::new(),
            last_trigger: AtomicU64::new(0),
            last_unavailable_log: AtomicU64::new(0),
            last_error: Mutex::new(None),
            min_gap_ms: AtomicU64::new(TRIGGER_GAP_SECS * 1000),
            triggers: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    /// The current key set (a cheap `ArcSwap` guard, no lock).
    pub(crate) fn current(&self) -> Guard<Option<Arc<KeySet>>> {
        self.current.load()
    }

    /// Ask the refresher for a fetch; ignored if one was asked for within the last
    /// [`TRIGGER_GAP_SECS`] (in either direction, so a clock jump cannot wedge it).
    pub(crate) fn request_refresh(&self, now: u64) {
        if once_per(&self.last_trigger, now, TRIGGER_GAP_SECS) {
            self.triggers.fetch_add(1, Relaxed);
            self.notify.notify_one();
        }
    }

    /// `verify` found no key set: log why (rate-limited) and nudge the refresher.
    pub(crate) fn report_unavailable(&self, now: u64) {
        if once_per(&self.last_unavailable_log, now, LOG_GAP_SECS) {
            let why = self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| {
                    "first fetch not finished (is the JWKS refresher running?)".into()
                });
            log::warn!(
                "jwt verifier {}: no JWKS key set from {} yet ({why}); answering 503",
                self.name,
                http_client::redacted(&self.url)
            );
        }
        self.request_refresh(now);
    }

    /// Fetch and install the key set; on failure keep the old one.
    pub(crate) async fn refresh(&self, cache: &TokenCache) -> Result<(), String> {
        const ACCEPT: &str = "application/jwk-set+json, application/json";
        let fetched = http_client::get_body(&self.url, ACCEPT, FETCH_TIMEOUT, MAX_BODY).await;
        let result = match fetched {
            Ok(body) => KeySet::parse(&body, &self.algorithms),
            Err(e) => Err(e),
        };
        self.fetches.fetch_add(1, Relaxed);
        let last_error = |e: Option<String>| {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = e;
        };
        match result {
            Ok(set) => {
                let (n, fingerprint) = (set.len(), set.fingerprint);
                let old = self.current.swap(Some(Arc::new(set)));
                if old.is_none_or(|o| o.fingerprint != fingerprint) {
                    // Keys may have been removed: cached tokens must be re-verified.
                    cache.clear();
                    log::info!(
                        "jwt verifier {}: loaded {n} JWKS key(s) from {}",
                        self.name,
                        http_client::redacted(&self.url)
                    );
                }
                last_error(None);
                Ok(())
            }
            Err(e) => {
                match self.current.load().as_ref() {
                    Some(set) => log::warn!(
                        "jwt verifier {}: JWKS refresh from {} failed: {e}; keeping the previous {} key(s)",
                        self.name,
                        http_client::redacted(&self.url),
                        set.len()
                    ),
                    None => log::warn!(
                        "jwt verifier {}: JWKS fetch from {} failed: {e}; no keys yet, tokens get 503",
                        self.name,
                        http_client::redacted(&self.url)
                    ),
                }
                last_error(Some(e.clone()));
                Err(e)
            }
        }
    }

    pub(crate) async fn run(&self, cache: &TokenCache, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let ok = tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => return,
                r = self.refresh(cache) => r.is_ok(),
            };
            let delay = if ok {
                backoff = Duration::from_secs(1);
                self.refresh
            } else {
                let d = backoff.min(self.refresh);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                d
            };
            tokio::select! {
                biased;
                _ = shutdown_requested(&mut shutdown) => return,
                _ = tokio::time::sleep(delay) => {}
                _ = self.notify.notified() => {
                    let gap = Duration::from_millis(self.min_gap_ms.load(Relaxed));
                    let wait = gap.saturating_sub(started.elapsed());
                    tokio::select! {
                        biased;
                        _ = shutdown_requested(&mut shutdown) => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn set_min_gap(&self, gap: Duration) {
        self.min_gap_ms.store(gap.as_millis() as u64, Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn counters(&self) -> (u64, u64) {
        (self.triggers.load(Relaxed), self.fetches.load(Relaxed))
    }
}

/// True at most once per `gap` seconds of `now` (claims the slot with a CAS).
fn once_per(slot: &AtomicU64, now: u64, gap: u64) -> bool {
    let last = slot.load(Relaxed);
    if last != 0 && now.abs_diff(last) < gap {
        return false;
    }
    slot.compare_exchange(last, now.max(1), Relaxed, Relaxed)
        .is_ok()
}

/// Resolves when `true` is sent. A dropped sender never resolves it: losing the handle
/// must not silently stop key refreshes.
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
