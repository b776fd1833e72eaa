//! The `cache:` block of a route and its validation into a [`CachePolicy`].

use crate::config::error::ConfigError;
use crate::config::units::{Dur, Size};
use serde::Deserialize;
use std::time::Duration;

/// Default `max_entries`: enough for a catalogue-style route without tuning.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
/// Default `max_body`: larger bodies are streamed through and never buffered.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Default `max_bytes`: the memory budget of one route's store.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Longest accepted `ttl`. A gateway cache cannot be purged per entry, so a mistake must
/// heal by itself within a day.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// `routes[i].cache` as written in the config file.
///
/// ```yaml
/// cache: { ttl: 30s, max_entries: 10000, max_body: 1MiB, max_bytes: 64MiB, cache_authorized: false }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Upper bound on freshness; upstream `max-age`/`s-maxage`/`Expires` may only shorten it.
    pub ttl: Dur,
    pub max_entries: Option<u64>,
    pub max_body: Option<Size>,
    pub max_bytes: Option<Size>,
    /// Store and serve responses to requests carrying `Authorization` or `Cookie`. Only safe
    /// when the route's responses do not depend on who asks (e.g. JWT only gates access).
    pub cache_authorized: Option<bool>,
}

/// Validated cache settings of one route. `PartialEq` so that a config reload can keep the
/// route's [`RouteCache`](super::RouteCache) (and its warm entries) when nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ttl: Duration,
    pub max_entries: u64,
    pub max_body: u64,
    pub max_bytes: u64,
    pub cache_authorized: bool,
}

/// Validate `raw` (found at `path`, e.g. `routes[3].cache`), collecting every problem.
pub fn build(raw: &RawCache, path: &str) -> Result<CachePolicy, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let ttl = raw.ttl.0;
    if ttl.is_zero() {
        errors.push(ConfigError::new(
            format!("{path}.ttl"),
            "must be greater than 0",
        ));
    } else if ttl > MAX_TTL {
        errors.push(ConfigError::new(
            format!("{path}.ttl"),
            format!("{ttl:?} is too long (at most 1d)"),
        ));
    }
    let max_entries = raw.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
    if max_entries == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_entries"),
            "must be at least 1",
        ));
    }
    let max_body = raw.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0);
    let max_bytes = raw.max_bytes.map_or(DEFAULT_MAX_BYTES, |s| s.0);
    if max_bytes == 0 {
        errors.push(ConfigError::new(
            format!("{path}.max_bytes"),
            "must be greater than 0",
        ));
    } else if max_body > max_bytes {
        errors.push(ConfigError::new(
            format!("{path}.max_body"),
            format!("{max_body} bytes exceeds max_bytes ({max_bytes} bytes)"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CachePolicy {
        ttl,
        max_entries,
        max_body,
        max_bytes,
        cache_authorized: raw.cache_authorized.unwrap_or(false),
    })
}
