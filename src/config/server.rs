//! The process sections of the config file: `listen`, `admin` and `server`.

use super::de::{de, parse_net};
use super::error::ConfigError;
use super::units::{Dur, Size};
use crate::access_log::AccessLogFormat;
use crate::dns::ResolverSpec;
use crate::tls::{self, ServedCert};
use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: String,
    /// `{ cert, key }`, or a list of them with `server_names`.
    tls: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: String,
    /// A bearer token every admin endpoint but `/healthz` and `/readyz` requires.
    token: Option<String>,
    /// The same, read from a file (trimmed); re-read on every reload.
    token_file: Option<String>,
}

/// The admin listener's bearer token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// The shortest admin token accepted: a guessable one protects nothing.
const MIN_ADMIN_TOKEN: usize = 16;

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
    /// DNS servers (`IP:PORT`) instead of /etc/resolv.conf.
    resolver: Option<Vec<String>>,
    timeouts: Option<RawTimeouts>,
    limits: Option<RawLimits>,
    max_connections: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    client_header: Option<Dur>,
    client_body: Option<Dur>,
    send: Option<Dur>,
    keepalive: Option<Dur>,
    preface: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    request_headers: Option<usize>,
    request_head: Option<Size>,
    response_head: Option<Size>,
}

/// `server.timeouts`: how long a client may take (see the README's timeouts table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A new connection's first byte, and any request head from its first byte to its
    /// end (then `408` and close).
    pub client_header: Duration,
    /// Between two reads of a request body (then `408`).
    pub client_body: Duration,
    /// Between two writes of a response the client does not read (then the connection
    /// is closed).
    pub send: Duration,
    /// Idle between two requests on a keep-alive connection (then closed quietly).
    pub keepalive: Duration,
    /// On an `h2c` listener: the HTTP/2 preface or the first bytes of an HTTP/1 request.
    pub preface: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            client_header: Duration::from_secs(10),
            client_body: Duration::from_secs(30),
            send: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            preface: Duration::from_secs(10),
        }
    }
}

/// `server.limits`: the largest heads accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request header fields (more: `431`).
    pub request_headers: usize,
    /// Bytes of a request's header fields, `name: value\r\n` each (more: `431`).
    pub request_head: usize,
    /// Bytes of an upstream response's header fields (more: `502`).
    pub response_head: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            request_headers: 100,
            request_head: 64 * 1024,
            response_head: 64 * 1024,
        }
    }
}

/// Pingora's own ceilings, which the limits must stay under (it answers a bare 400).
const PINGORA_MAX_HEADERS: usize = 256;
const PINGORA_MAX_HEAD: u64 = 1024 * 1024 - 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    #[serde(default = "default_access_format")]
    format: String,
    /// A file instead of stderr; SIGUSR1 reopens it.
    path: Option<PathBuf>,
    /// `format: template`: `$variable`s and text.
    template: Option<String>,
}

fn default_access_format() -> String {
    "json".to_string()
}

#[derive(Debug, Clone)]
pub struct Listener {
    /// As written, because Pingora hands sockets over on upgrade by exact bind string.
    pub address: String,
    /// The certificates, read and checked (key matches certificate).
    pub tls: Option<Vec<ListenerCert>>,
}

/// One certificate of a TLS listener.
#[derive(Clone)]
pub struct ListenerCert {
    pub cert: String,
    pub key: String,
    pub served: ServedCert,
}

impl std::fmt::Debug for ListenerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCert")
            .field("cert", &self.cert)
            .field("names", &self.served.names)
            .finish_non_exhaustive()
    }
}

impl ListenerCert {
    /// The `name` label of its expiry gauge: its first server name, or `default`.
    pub fn label(&self) -> &str {
        self.served.names.first().map_or("default", String::as_str)
    }
}

impl Listener {
    /// What needs new sockets to change: the address, and whether it speaks TLS
    /// (certificates change in place).
    pub fn socket(&self) -> (&str, bool) {
        (&self.address, self.tls.is_some())
    }
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
    /// `server.access_log.path`; `None` = stderr.
    pub access_log_path: Option<PathBuf>,
    pub h2c: bool,
    pub resolver: ResolverSpec,
    /// One multi-threaded runtime whose threads steal work (Pingora's default), or one
    /// single-threaded runtime per thread. Unset: single-threaded with one thread, work
    /// stealing with more (the README's `server.work_stealing` row says why).
    pub work_stealing: bool,
    pub timeouts: ClientTimeouts,
    pub limits: HeadLimits,
    /// Downstream connections open at once over all listeners; `None`: no limit.
    pub max_connections: Option<usize>,
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
        let tls = raw
            .tls
            .map(|t| validate_listener_tls(t, &format!("{path}.tls"), errors));
        out.push(Listener {
            address: raw.address,
            tls,
        });
    }
    out
}

/// `{ cert, key }` or a list of `{ cert, key, server_names }`: each certificate read,
/// parsed and checked against its key.
fn validate_listener_tls(v: Value, path: &str, errors: &mut Vec<ConfigError>) -> Vec<ListenerCert> {
    let entries: Vec<(String, Value)> = match v {
        Value::Sequence(items) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect(),
        v @ Value::Mapping(_) => vec![(path.to_string(), v)],
        _ => {
            errors.push(ConfigError::new(
                path,
                "expected { cert, key } or a list of { cert, key, server_names }",
            ));
            return vec![];
        }
    };
    let mut out = Vec::new();
    let mut defaults = 0;
    for (epath, v) in entries {
        let Some(raw) = de::<RawTls>(v, &epath, errors) else {
            continue;
        };
        let mut names = Vec::new();
        for (i, n) in raw.server_names.iter().flatten().enumerate() {
            let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
            let bare = n.strip_prefix("*.").unwrap_or(&n);
            let ok = !bare.is_empty()
                && bare.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if ok {
                names.push(n);
            } else {
                errors.push(ConfigError::new(
                    format!("{epath}.server_names[{i}]"),
                    format!("invalid server name {n:?} (e.g. api.example.com or *.example.com)"),
                ));
            }
        }
        if raw.server_names.is_none() {
            defaults += 1;
            if defaults == 2 {
                errors.push(ConfigError::new(
                    &epath,
                    "only one certificate may go without server_names (the default)",
                ));
            }
        }
        match tls::certified_key(&raw.cert, &raw.key) {
            Ok(key) => {
                let facts =
                    key.end_entity_cert()
                        .ok()
                        .and_then(tls::facts)
                        .unwrap_or(tls::CertFacts {
                            not_after: 0,
                            serial: String::new(),
                        });
                out.push(ListenerCert {
                    cert: raw.cert,
                    key: raw.key,
                    served: ServedCert {
                        names,
                        key: std::sync::Arc::new(key),
                        facts,
                    },
                });
            }
            Err((part, msg)) => {
                let field = match part {
                    tls::Part::Cert => "cert",
                    tls::Part::Key => "key",
                };
                errors.push(ConfigError::new(format!("{epath}.{field}"), msg));
            }
        }
    }
    out
}

/// The `admin:` section: its address, and its token when one is set.
pub fn validate_admin(
    v: Option<Value>,
    listen: &[Listener],
    errors: &mut Vec<ConfigError>,
) -> (Option<SocketAddr>, Option<AdminToken>) {
    let Some(raw) = v.and_then(|v| de::<RawAdmin>(v, "admin", errors)) else {
        return (None, None);
    };
    let token = admin_token(&raw, errors);
    (admin_address(&raw, listen, errors), token)
}

fn admin_token(raw: &RawAdmin, errors: &mut Vec<ConfigError>) -> Option<AdminToken> {
    let (path, value) = match (&raw.token, &raw.token_file) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                "admin.token",
                "give token or token_file, not both",
            ));
            return None;
        }
        (Some(t), None) => ("admin.token", t.trim().to_string()),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(t) => ("admin.token_file", t.trim().to_string()),
            Err(e) => {
                errors.push(ConfigError::new(
                    "admin.token_file",
                    format!("cannot read {file}: {e}"),
                ));
                return None;
            }
        },
    };
    if value.len() < MIN_ADMIN_TOKEN || !value.bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(ConfigError::new(
            path,
            format!("must be at least {MIN_ADMIN_TOKEN} visible ASCII characters (e.g. `openssl rand -hex 32`)"),
        ));
        return None;
    }
    Some(AdminToken(value.into_bytes()))
}

fn admin_address(
    raw: &RawAdmin,
    listen: &[Listener],
    errors: &mut Vec<ConfigError>,
) -> Option<SocketAddr> {
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
    let (access_log, access_log_path) = access_log(raw.access_log.as_ref(), errors);
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
    let mut servers = Vec::new();
    for (i, r) in raw.resolver.iter().flatten().enumerate() {
        match r.parse::<SocketAddr>() {
            Ok(a) => servers.push(a),
            Err(_) => errors.push(ConfigError::new(
                format!("server.resolver[{i}]"),
                format!("invalid DNS server {r:?} (expected IP:PORT, e.g. 127.0.0.1:53)"),
            )),
        }
    }
    let resolver = if raw.resolver.is_some() {
        if servers.is_empty() && errors.is_empty() {
            errors.push(ConfigError::new(
                "server.resolver",
                "list at least one DNS server (or omit it for /etc/resolv.conf)",
            ));
        }
        ResolverSpec::Servers(servers)
    } else {
        ResolverSpec::System
    };
    let timeouts = validate_timeouts(raw.timeouts.unwrap_or_default(), errors);
    let limits = validate_limits(raw.limits.unwrap_or_default(), errors);
    if raw.max_connections == Some(0) {
        errors.push(ConfigError::new(
            "server.max_connections",
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
        access_log_path,
        h2c: raw.h2c,
        resolver,
        work_stealing: raw.work_stealing.unwrap_or(threads > 1),
        timeouts,
        limits,
        max_connections: raw
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

fn validate_timeouts(raw: RawTimeouts, errors: &mut Vec<ConfigError>) -> ClientTimeouts {
    let d = ClientTimeouts::default();
    let mut get = |name: &str, v: Option<Dur>, default: Duration| match v {
        Some(Dur(t)) if t < Duration::from_millis(10) => {
            errors.push(ConfigError::new(
                format!("server.timeouts.{name}"),
                "must be at least 10ms",
            ));
            default
        }
        Some(Dur(t)) => t,
        None => default,
    };
    ClientTimeouts {
        client_header: get("client_header", raw.client_header, d.client_header),
        client_body: get("client_body", raw.client_body, d.client_body),
        send: get("send", raw.send, d.send),
        keepalive: get("keepalive", raw.keepalive, d.keepalive),
        preface: get("preface", raw.preface, d.preface),
    }
}

fn validate_limits(raw: RawLimits, errors: &mut Vec<ConfigError>) -> HeadLimits {
    let d = HeadLimits::default();
    let request_headers = match raw.request_headers {
        Some(n) if n == 0 || n > PINGORA_MAX_HEADERS => {
            errors.push(ConfigError::new(
                "server.limits.request_headers",
                format!("must be between 1 and {PINGORA_MAX_HEADERS}"),
            ));
            d.request_headers
        }
        Some(n) => n,
        None => d.request_headers,
    };
    let mut size = |name: &str, v: Option<Size>, default: usize| match v {
        Some(Size(n)) if !(1024..=PINGORA_MAX_HEAD).contains(&n) => {
            errors.push(ConfigError::new(
                format!("server.limits.{name}"),
                "must be between 1KiB and 1MiB - 1",
            ));
            default
        }
        Some(Size(n)) => usize::try_from(n).unwrap_or(default),
        None => default,
    };
    HeadLimits {
        request_headers,
        request_head: size("request_head", raw.request_head, d.request_head),
        response_head: size("response_head", raw.response_head, d.response_head),
    }
}

/// `server.access_log`: the format (a template compiled here) and the file.
fn access_log(
    raw: Option<&RawAccessLog>,
    errors: &mut Vec<ConfigError>,
) -> (AccessLogFormat, Option<PathBuf>) {
    let Some(raw) = raw else {
        return (AccessLogFormat::Json, None);
    };
    let format = match (raw.format.as_str(), &raw.template) {
        ("template", Some(t)) => match crate::access_log::Template::compile(t) {
            Ok(t) => AccessLogFormat::Template(std::sync::Arc::new(t)),
            Err(es) => {
                for e in es {
                    errors.push(ConfigError::new("server.access_log.template", e));
                }
                AccessLogFormat::Json
            }
        },
        ("template", None) => {
            errors.push(ConfigError::new(
                "server.access_log.template",
                "format: template needs a template (e.g. \"$remote_addr $request $status\")",
            ));
            AccessLogFormat::Json
        }
        (name, template) => {
            if template.is_some() {
                errors.push(ConfigError::new(
                    "server.access_log.template",
                    format!("only used with format: template (format is {name:?})"),
                ));
            }
            AccessLogFormat::parse(name).unwrap_or_else(|| {
                errors.push(ConfigError::new(
                    "server.access_log.format",
                    format!(
                        "unknown format {name:?} (valid: {})",
                        AccessLogFormat::NAMES
                    ),
                ));
                AccessLogFormat::Json
            })
        }
    };
    if let Some(path) = &raw.path {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if path.as_os_str().is_empty() || path.is_dir() {
            errors.push(ConfigError::new(
                "server.access_log.path",
                format!("{} is not a file path", path.display()),
            ));
        } else if !dir.is_none_or(Path::is_dir) {
            errors.push(ConfigError::new(
                "server.access_log.path",
                format!("the directory of {} does not exist", path.display()),
            ));
        }
    }
    (format, raw.path.clone())
}
