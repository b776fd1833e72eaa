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
    /// Build from a validated config. With `previous` (a reload), a service whose config
    /// is unchanged is reused as is; a changed one is rebuilt keeping the state of the
    /// upstreams that remain. Fails only on conditions validation cannot see.
    pub fn build(config: Config, previous: Option<&Runtime>) -> Result<Runtime, String> {
        let mut services = Vec::with_capacity(config.services.len());
        for svc in config.services.values() {
            let old = previous.and_then(|p| p.service(&svc.name));
            let rebuilt = match old {
                Some(old) if old.config == *svc => old.clone(),
                _ => Arc::new(ServiceRuntime::new(svc, old.map(|o| &**o))?),
            };
            services.push(rebuilt);
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
