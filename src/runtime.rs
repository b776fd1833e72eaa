//! The runtime snapshot: everything a request needs, built once per config load and
//! swapped whole behind an `ArcSwap`. A request loads the snapshot once in
//! `request_filter` and keeps that `Arc` to the end, so a reload never changes the
//! rules under a request in flight.

use crate::config::{AccessLogFormat, Config};
use crate::routing::RouteTable;
use crate::upstream::ServiceRuntime;
use ipnet::IpNet;
use std::sync::Arc;

pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Same order as `config.services` (by name).
    pub services: Vec<Arc<ServiceRuntime>>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_body: Option<u64>,
    pub access_log: AccessLogFormat,
}

impl Runtime {
    /// Build from a validated config. Fails only on conditions validation cannot see
    /// (none today besides Pingora refusing an address it already accepted).
    pub fn build(config: Config) -> Result<Runtime, String> {
        let mut services = Vec::with_capacity(config.services.len());
        for svc in config.services.values() {
            services.push(Arc::new(ServiceRuntime::new(svc)?));
        }
        let names: Vec<&str> = config.services.keys().map(String::as_str).collect();
        let routes = RouteTable::build(&config.routes, &|name| {
            // Validation guarantees every route's service exists.
            names.iter().position(|n| *n == name).unwrap_or(0)
        });
        Ok(Runtime {
            trusted_proxies: config.server.trusted_proxies.clone(),
            max_request_body: config.server.max_request_body,
            access_log: config.server.access_log,
            config: Arc::new(config),
            routes,
            services,
        })
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services.iter().find(|s| &*s.name == name)
    }
}
