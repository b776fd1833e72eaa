//! The file format: serde structs that mirror the YAML one to one.
//!
//! Every struct denies unknown fields, so a typo is an error naming the valid keys.
//! Nothing here is validated beyond types; [`super::validate`] turns these into the
//! checked [`super::Config`].

use super::units::{Dur, Size};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: String,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub grace_period: Option<Dur>,
    pub shutdown_timeout: Option<Dur>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub max_request_body: Option<Size>,
    pub access_log: Option<RawAccessLog>,
    /// Accept HTTP/2 with prior knowledge on plaintext listeners.
    #[serde(default)]
    pub h2c: bool,
    /// Pingora's work-stealing runtime (`false`: one single-threaded runtime per thread).
    pub work_stealing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub upstreams: Vec<RawUpstream>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub timeouts: Option<RawTimeouts>,
    pub retries: Option<RawRetries>,
    pub circuit_breaker: Option<RawBreaker>,
    /// Speak HTTP/2 (prior knowledge, h2c) to these upstreams.
    #[serde(default)]
    pub http2: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub open_for: Option<Dur>,
    pub half_open_requests: Option<u32>,
    pub successes_to_close: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub address: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<u16>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_after: Option<u32>,
    pub unhealthy_after: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<Dur>,
    pub read: Option<Dur>,
    pub write: Option<Dur>,
    pub idle: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub attempts: u32,
    /// Retries allowed as a fraction of recent requests (0.2 = 20%).
    pub budget: Option<f64>,
    /// Retries always allowed per second, whatever the ratio.
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub service: String,
    #[serde(default)]
    pub strip_prefix: bool,
    pub auth: Option<String>,
    #[serde(default)]
    pub rate_limit: Vec<String>,
    pub request_headers: Option<crate::transform::RawHeaderRules>,
    pub response_headers: Option<crate::transform::RawHeaderRules>,
    pub cors: Option<crate::transform::RawCors>,
    pub allow_ips: Option<Vec<String>>,
    pub deny_ips: Option<Vec<String>>,
    pub cache: Option<crate::cache::RawCache>,
    #[serde(default)]
    pub compression: bool,
    #[serde(default)]
    pub websocket: bool,
    pub require_claims: Option<std::collections::BTreeMap<String, OneOrMany>>,
}

/// `role: admin` or `role: [admin, ops]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}
