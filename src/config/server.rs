//! The process sections of the config file: `listen`, `admin` and `server`.

use super::de::{de, parse_net};
use super::error::ConfigError;
use super::units::{Dur, Size};
use crate::access_log::AccessLogFormat;
use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: String,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    threads: Option<usize>,
    pid_file: Option<String>,
    upgrade_sock: Option<String>,
    error_log: Option<String>,
    grace_period: Option<Dur>,
    shutdown_timeout: Option<Dur>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    max_request_body: Option<Size>,
    access_log: Option<RawAccessLog>,
    /// Accept HTTP/2 with prior knowledge on plaintext listeners.
    #[serde(default)]
    h2c: bool,
    /// Pingora's work-stealing runtime (`false`: one single-threaded runtime per thread).
    work_stealing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    format: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// As written, because Pingora hands sockets over on upgrade by exact bind string.
    pub address: String,
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// Where a daemon's stderr (logs) goes; `None` = discarded once daemonized.
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_body: Option<u64>,
    pub access_log: AccessLogFormat,
    pub h2c: bool,
    /// One multi-threaded runtime whose threads steal work (Pingora's default), or one
    /// single-threaded runtime per thread. Unset: single-threaded with one thread, work
    /// stealing with more (the README's `server.work_stealing` row says why).
    pub work_stealing: bool,
}

pub fn validate_listen(v: Option<Value>, errors: &mut Vec<ConfigError>) -> Vec<Listener> {
    let items = match v {
        Some(Value::Sequence(items)) if !items.is_empty() => items,
        _ => {
            errors.push(ConfigError::new(
                "listen",
                "at least one listener is required (a list of { address: IP:PORT })",
            ));
            return vec![];
        }
    };
    let mut out: Vec<Listener> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("listen[{i}]");
        let Some(raw) = de::<RawListen>(item, &path, errors) else {
            continue;
        };
        if raw.address.parse::<SocketAddr>().is_err() {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!("invalid address {:?} (expected IP:PORT)", raw.address),
            ));
            continue;
        }
        if out.iter().any(|l| l.address == raw.address) {
            errors.push(ConfigError::new(
                format!("{path}.address"),
                format!("duplicate listen address {:?}", raw.address),
            ));
        }
        let tls = raw.tls.map(|t| {
            for (field, file) in [("cert", &t.cert), ("key", &t.key)] {
                if !Path::new(file).is_file() {
                    errors.push(ConfigError::new(
                        format!("{path}.tls.{field}"),
                        format!("file {file:?} does not exist"),
                    ));
                }
            }
            TlsFiles {
                cert: t.cert,
                key: t.key,
            }
        });
        out.push(Listener {
            address: raw.address,
            tls,
        });
    }
    out
}

pub fn validate_admin(
    v: Option<Value>,
    listen: &[Listener],
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
    let raw = de::<RawAdmin>(v?, "admin", errors)?;
    let Ok(addr) = raw.address.parse::<SocketAddr>() else {
        errors.push(ConfigError::new(
            "admin.address",
            format!("invalid address {:?} (expected IP:PORT)", raw.address),
        ));
        return None;
    };
    if listen.iter().any(|l| l.address.parse() == Ok(addr)) {
        errors.push(ConfigError::new(
            "admin.address",
            "must differ from every listen address",
        ));
    }
    Some(addr)
}

pub fn validate_server(v: Option<Value>, errors: &mut Vec<ConfigError>) -> ServerSettings {
    let raw = match v {
        Some(v) => de::<RawServer>(v, "server", errors).unwrap_or_default(),
        None => RawServer::default(),
    };
    let threads = raw.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 || threads > 1024 {
        errors.push(ConfigError::new(
            "server.threads",
            "must be between 1 and 1024",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.trusted_proxies.iter().enumerate() {
        match parse_net(p) {
            Some(n) => trusted_proxies.push(n),
            None => errors.push(ConfigError::new(
                format!("server.trusted_proxies[{i}]"),
                format!("invalid CIDR or IP {p:?} (e.g. 10.0.0.0/8, 192.0.2.7, ::1/128)"),
            )),
        }
    }
    let access_log = match raw.access_log.as_ref().map(|a| a.format.as_str()) {
        None => AccessLogFormat::Json,
        Some(name) => AccessLogFormat::parse(name).unwrap_or_else(|| {
            errors.push(ConfigError::new(
                "server.access_log.format",
                format!(
                    "unknown format {name:?} (valid: {})",
                    AccessLogFormat::NAMES
                ),
            ));
            AccessLogFormat::Json
        }),
    };
    if let Some(log) = &raw.error_log {
        let dir = Path::new(log)
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if !dir.is_none_or(Path::is_dir) {
            errors.push(ConfigError::new(
                "server.error_log",
                format!("the directory of {log:?} does not exist"),
            ));
        }
    }
    if let Some(Size(0)) = raw.max_request_body {
        errors.push(ConfigError::new(
            "server.max_request_body",
            "must be greater than 0 (omit it for no limit)",
        ));
    }
    ServerSettings {
        threads,
        pid_file: raw
            .pid_file
            .unwrap_or_else(|| "/tmp/gatehouse.pid".to_string()),
        upgrade_sock: raw
            .upgrade_sock
            .unwrap_or_else(|| "/tmp/gatehouse_upgrade.sock".to_string()),
        error_log: raw.error_log,
        grace_period: raw.grace_period.map_or(Duration::from_secs(5), |d| d.0),
        shutdown_timeout: raw.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
        trusted_proxies,
        max_request_body: raw.max_request_body.map(|s| s.0),
        access_log,
        h2c: raw.h2c,
        work_stealing: raw.work_stealing.unwrap_or(threads > 1),
    }
}
