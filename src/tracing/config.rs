//! The `tracing:` section.

use crate::config::de::de;
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use http::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTracing {
    otlp_endpoint: String,
    sample_ratio: Option<f64>,
    service_name: Option<String>,
    timeout: Option<Dur>,
    flush_interval: Option<Dur>,
    batch_size: Option<usize>,
    queue_size: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A validated `tracing:` section: where spans go and how many.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/HTTP traces URL (`…/v1/traces`).
    pub endpoint: Url,
    /// Share of new traces recorded (0.0–1.0); a client's `traceparent` decides for
    /// its trace (parent-based sampling).
    pub sample_ratio: f64,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// One export request's bound.
    pub timeout: Duration,
    /// Longest a span waits before it is sent.
    pub flush_interval: Duration,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// Requests whose spans may wait for export; more are dropped (and counted).
    pub queue_size: usize,
    /// Sent with each export (a collector's API key): marked sensitive, never logged.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

pub fn validate(v: Option<Value>, errors: &mut Vec<ConfigError>) -> Option<TracingConfig> {
    let v = match v {
        None | Some(Value::Null) => return None,
        Some(v) => v,
    };
    let raw = de::<RawTracing>(v, "tracing", errors)?;
    let before = errors.len();
    let endpoint = crate::http_client::parse_url(&raw.otlp_endpoint)
        .map_err(|e| errors.push(ConfigError::new("tracing.otlp_endpoint", e)))
        .ok();
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        errors.push(ConfigError::new(
            "tracing.sample_ratio",
            format!("must be between 0 and 1, got {sample_ratio}"),
        ));
    }
    let service_name = raw.service_name.unwrap_or_else(|| "gatehouse".to_string());
    if service_name.is_empty() {
        errors.push(ConfigError::new(
            "tracing.service_name",
            "must not be empty",
        ));
    }
    let timeout = raw.timeout.map_or(Duration::from_secs(5), |d| d.0);
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(60) {
        errors.push(ConfigError::new(
            "tracing.timeout",
            "must be between 10ms and 60s",
        ));
    }
    let flush_interval = raw.flush_interval.map_or(Duration::from_secs(1), |d| d.0);
    if flush_interval < Duration::from_millis(10) || flush_interval > Duration::from_secs(60) {
        errors.push(ConfigError::new(
            "tracing.flush_interval",
            "must be between 10ms and 60s",
        ));
    }
    let batch_size = raw.batch_size.unwrap_or(512);
    if !(1..=10_000).contains(&batch_size) {
        errors.push(ConfigError::new(
            "tracing.batch_size",
            "must be between 1 and 10000",
        ));
    }
    let queue_size = raw.queue_size.unwrap_or(2048);
    if !(1..=1_000_000).contains(&queue_size) {
        errors.push(ConfigError::new(
            "tracing.queue_size",
            "must be between 1 and 1000000",
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        let path = format!("tracing.headers.{name}");
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| errors.push(ConfigError::new(&path, "invalid header name")));
        let v = HeaderValue::from_str(value)
            .map_err(|_| errors.push(ConfigError::new(&path, "invalid header value")));
        if let (Ok(n), Ok(mut v)) = (n, v) {
            v.set_sensitive(true);
            headers.push((n, v));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(TracingConfig {
        endpoint: endpoint?,
        sample_ratio,
        service_name,
        timeout,
        flush_interval,
        batch_size,
        queue_size,
        headers,
    })
}
