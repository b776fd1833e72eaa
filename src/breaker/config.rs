//! `services.<name>.circuit_breaker` and its validation into a [`BreakerConfig`].

use crate::config::error::ConfigError;
use crate::config::units::Dur;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub open_for: Option<Dur>,
    pub half_open_requests: Option<u32>,
    pub successes_to_close: Option<u32>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Probes allowed at once while half-open.
    pub half_open_requests: u32,
    /// Probe successes needed to close again.
    pub successes_to_close: u32,
    /// At most this share of the service's upstreams may be out through their
    /// breakers at once (Envoy's outlier-detection rule); a breaker that would pass it
    /// stays closed. 100: no cap.
    pub max_ejection_percent: u32,
}

impl BreakerConfig {
    /// Validate `raw` (found at `path`), appending every problem to `errors`.
    pub fn from_raw(raw: RawBreaker, path: &str, errors: &mut Vec<ConfigError>) -> Self {
        let cfg = BreakerConfig {
            failures: raw.failures.unwrap_or(5),
            open_for: raw.open_for.map_or(Duration::from_secs(30), |d| d.0),
            half_open_requests: raw.half_open_requests.unwrap_or(1),
            successes_to_close: raw.successes_to_close.unwrap_or(2),
            max_ejection_percent: raw.max_ejection_percent.unwrap_or(100),
        };
        if cfg.max_ejection_percent > 100 {
            errors.push(ConfigError::new(
                format!("{path}.max_ejection_percent"),
                "must be between 0 and 100",
            ));
        }
        for (field, v) in [
            ("failures", cfg.failures),
            ("half_open_requests", cfg.half_open_requests),
            ("successes_to_close", cfg.successes_to_close),
        ] {
            if !(1..=1000).contains(&v) {
                errors.push(ConfigError::new(
                    format!("{path}.{field}"),
                    "must be between 1 and 1000",
                ));
            }
        }
        if cfg.open_for < Duration::from_millis(10) {
            errors.push(ConfigError::new(
                format!("{path}.open_for"),
                "must be at least 10ms",
            ));
        }
        cfg
    }
}
