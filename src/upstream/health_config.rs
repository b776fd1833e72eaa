//! `services.*.health_check`: the raw shape and its validation into a
//! [`HealthCheckConfig`] (type, path, thresholds, fixed or adaptive intervals).

use crate::config::error::ConfigError;
use crate::config::units::Dur;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<u16>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    healthy_after: Option<u32>,
    unhealthy_after: Option<u32>,
    adaptive: Option<RawAdaptive>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdaptive {
    healthy: Option<Dur>,
    suspect: Option<Dur>,
    unhealthy: Option<Dur>,
    recover_after: Option<u32>,
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
    /// Between checks of each upstream (adaptive checks: while it is unhealthy).
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    pub adaptive: Option<Adaptive>,
}

/// `health_check.adaptive`: each upstream is checked as often as its state calls for:
/// every `healthy` while it passes, every `suspect` once a check failed, every
/// `unhealthy` while out of rotation, and back to `healthy` after `recover_after`
/// consecutive passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    pub healthy: Duration,
    pub suspect: Duration,
    pub unhealthy: Duration,
    pub recover_after: u32,
}

pub(super) fn validate_health(
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
    let adaptive = h.adaptive.map(|a| {
        if h.interval.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.interval"),
                "give interval or adaptive, not both",
            ));
        }
        let adaptive = Adaptive {
            healthy: a.healthy.map_or(Duration::from_secs(30), |d| d.0),
            suspect: a.suspect.map_or(Duration::from_secs(10), |d| d.0),
            unhealthy: a.unhealthy.map_or(Duration::from_secs(5), |d| d.0),
            recover_after: a.recover_after.unwrap_or(3),
        };
        for (field, d) in [
            ("healthy", adaptive.healthy),
            ("suspect", adaptive.suspect),
            ("unhealthy", adaptive.unhealthy),
        ] {
            if d < Duration::from_millis(50) {
                errors.push(ConfigError::new(
                    format!("{path}.adaptive.{field}"),
                    "must be at least 50ms",
                ));
            }
        }
        if !(1..=100).contains(&adaptive.recover_after) {
            errors.push(ConfigError::new(
                format!("{path}.adaptive.recover_after"),
                "must be between 1 and 100",
            ));
        }
        adaptive
    });
    let interval = match &adaptive {
        Some(a) => a.unhealthy,
        None => h.interval.map_or(Duration::from_secs(5), |d| d.0),
    };
    if interval < Duration::from_millis(50) && adaptive.is_none() {
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
        adaptive,
    })
}
