//! Configuration: file → YAML tree → `${VAR}` expansion → each section validated by the
//! module that owns it → one [`Config`] of plain data.
//!
//! Every stage collects *all* of its errors, each with the path of the value it concerns
//! (`routes[2].service: unknown service "user" (known: orders, users)`), so an operator
//! fixes a file in one pass. This module only orders the sections and passes the names
//! one section declares to the sections that refer to them:
//!
//! | section | validated by |
//! |---|---|
//! | `listen`, `admin`, `server` | [`server`] (the process's own settings) |
//! | `jwt` | [`crate::auth::config`] |
//! | `consumers`, `consumers_file` | [`crate::consumers::config`] |
//! | `forward_auth` | [`crate::forward_auth`] |
//! | `tracing` | [`crate::tracing::config`] |
//! | `rate_limits` | [`crate::ratelimit::config`] |
//! | `services` | [`crate::upstream::config`] |
//! | `routes` | [`crate::routing::config`] |
//!
//! The leaves [`error`], [`units`] and [`de`] are what those validators are written with;
//! they import nothing from the rest of the crate. Runtime objects (verifiers, stores,
//! caches, health state) are built from a `Config` by `Runtime::build`, never here.

pub mod de;
pub mod env;
pub mod error;
pub mod server;
pub mod units;

pub use error::{ConfigError, ConfigErrors};

use crate::auth::JwtConfig;
use crate::consumers::ConsumersConfig;
use crate::forward_auth::ForwardAuthConfig;
use crate::ratelimit::RateLimitConfig;
use crate::routing::{Names, RouteConfig};
use crate::upstream::config::ServiceConfig;
use serde_yaml::Value;
use server::{Listener, ServerSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The validated configuration: data only. Everything in here has been checked, key
/// files included.
#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub listen: Vec<Listener>,
    pub admin: Option<SocketAddr>,
    /// `admin.token` / `admin.token_file`: required by the admin endpoints when set.
    pub admin_token: Option<server::AdminToken>,
    pub server: ServerSettings,
    /// By name, sorted (BTreeMap) so status output and metrics are stable.
    pub services: BTreeMap<String, ServiceConfig>,
    /// In file order: first match wins.
    pub routes: Vec<RouteConfig>,
    /// JWT verifiers by name.
    pub jwt: BTreeMap<String, JwtConfig>,
    pub rate_limits: RateLimitConfig,
    /// `consumers:` and `consumers_file:` together.
    pub consumers: ConsumersConfig,
    /// `forward_auth:` services by name.
    pub forward_auth: BTreeMap<String, ForwardAuthConfig>,
    /// `tracing:`; `None`: off.
    pub tracing: Option<crate::tracing::TracingConfig>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "admin",
    "server",
    "jwt",
    "consumers",
    "consumers_file",
    "forward_auth",
    "rate_limits",
    "services",
    "tracing",
    "routes",
];

impl Config {
    /// Read, expand and validate a config file from disk.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
            )])
        })?;
        Self::from_yaml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parse and validate config text; `lookup` resolves `${VAR}` references.
    pub fn from_yaml(
        text: &str,
        source: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let mut tree: Value = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(file)".into());
            ConfigErrors(vec![ConfigError::new(at, format!("invalid YAML: {e}"))])
        })?;
        let mut errors = Vec::new();
        env::expand_tree(&mut tree, "", lookup, &mut errors);
        let config = validate(tree, source, &mut errors);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

fn validate(tree: Value, source: &Path, errors: &mut Vec<ConfigError>) -> Option<Config> {
    let Value::Mapping(mut top) = tree else {
        errors.push(ConfigError::new(
            "(file)",
            "expected a mapping with listen, services and routes",
        ));
        return None;
    };
    for key in top.keys() {
        let name = key.as_str().unwrap_or("?");
        if !TOP_LEVEL_KEYS.contains(&name) {
            errors.push(ConfigError::new(
                name,
                format!("unknown key (valid: {})", TOP_LEVEL_KEYS.join(", ")),
            ));
        }
    }
    let mut take = |k: &str| top.remove(k);

    let listen = server::validate_listen(take("listen"), errors);
    let (admin, admin_token) = server::validate_admin(take("admin"), &listen, errors);
    let server = server::validate_server(take("server"), errors);
    let (jwt, verifiers) = crate::auth::validate(take("jwt"), errors);
    let consumers =
        crate::consumers::config::validate(take("consumers"), take("consumers_file"), errors);
    let (forward_auth, forward_names) = crate::forward_auth::validate(take("forward_auth"), errors);
    let tracing = crate::tracing::config::validate(take("tracing"), errors);
    let (rate_limits, policies) = crate::ratelimit::validate(take("rate_limits"), errors);
    let (services, declared) = crate::upstream::config::validate_services(take("services"), errors);
    let names = Names {
        services: &declared,
        verifiers: &verifiers,
        policies: &policies,
        forward_auth: &forward_names,
        groups: &consumers.groups(),
        any_api_key: consumers.any_api_key(),
        any_basic: consumers.any_basic(),
    };
    let routes = crate::routing::validate_routes(take("routes"), &names, errors);

    Some(Config {
        source: source.to_path_buf(),
        listen,
        admin,
        admin_token,
        server,
        services,
        routes,
        jwt,
        rate_limits,
        consumers,
        forward_auth,
        tracing,
    })
}

#[cfg(test)]
mod tests;
