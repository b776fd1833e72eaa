//! Upstream services (`upstream_peer` and the background health checks).
//!
//! Each configured service holds Pingora's `Backends` over a static backend set, with
//! Pingora's TCP or HTTP health check attached through a `HealthRegistry`, and a
//! [`Selector`] that orders the upstreams for each request. The checks are driven by
//! [`ServiceRuntime::start_health_checks`], one task per service that lives exactly as
//! long as the service's runtime object: when a reload drops a service, its checks stop.
//!
//! Selection does not go through Pingora's `LoadBalancer::select_with`, which wraps the
//! selector in a per-pick `HashSet` and hashes each backend twice; [`Selector::candidates`]
//! walks indices instead (`benches/selection.rs` compares the two). Health is still
//! Pingora's: a backend is out of rotation while `Backends::ready` says so.

pub mod config;
mod health;
pub mod selector;
mod state;

pub use config::{Balance, HashKey, ServiceConfig};
pub use state::{InflightCounter, InflightGuard, UpstreamState};

use crate::breaker::{Admission, RetryBudget, Ticket};
use health::HealthProbe;
use pingora::lb::discovery;
use pingora::lb::{Backend, Backends, HealthRegistry};
use pingora::prelude::HttpPeer;
use selector::{Member, Selector};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// The outcome of selection.
pub enum Selection {
    /// The upstream index and its breaker ticket.
    Chosen(usize, Ticket),
    /// Nothing can take the request; seconds for `Retry-After`.
    Unavailable { retry_after: u64 },
}

/// One upstream of a service, as the runtime sees it.
pub struct Upstream {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
}

/// A service: its backends and their health, its selector, its upstreams in config
/// order, and its settings.
pub struct ServiceRuntime {
    pub name: Arc<str>,
    pub config: ServiceConfig,
    /// Pingora's view of the upstreams: membership and each one's health.
    backends: Backends,
    selector: Selector,
    probe: Option<Arc<HealthProbe>>,
    pub upstreams: Vec<Upstream>,
    by_addr: HashMap<SocketAddr, usize>,
    /// Requests of this service in flight (the `gatehouse_inflight_requests` gauge).
    pub inflight: Arc<InflightCounter>,
    pub retry_budget: RetryBudget,
}

impl ServiceRuntime {
    /// Build a service. With `previous` (the same service before a reload), upstreams
    /// that still exist keep their state, and the health registry is kept when the
    /// health-check settings are unchanged.
    pub fn new(config: &ServiceConfig, previous: Option<&ServiceRuntime>) -> Result<Self, String> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let backend = Backend::new_with_weight(&u.addr.to_string(), u.weight as usize)
                .map_err(|e| format!("upstream {}: {e}", u.address))?;
            let state = previous
                .and_then(|p| p.upstream_by_addr(u.addr))
                .filter(|old| *old.address == *u.address)
                .unwrap_or_else(|| Arc::new(UpstreamState::new(&config.name, &u.address)));
            state.breaker.configure(config.circuit_breaker);
            upstreams.push(Upstream {
                backend,
                addr: u.addr,
                state,
            });
        }
        let set: BTreeSet<Backend> = upstreams.iter().map(|u| u.backend.clone()).collect();
        let probe = config.health_check.as_ref().map(|hc| {
            previous
                .filter(|p| p.config.health_check.as_ref() == Some(hc))
                .and_then(|p| p.probe.clone())
                .unwrap_or_else(|| {
                    // Health is keyed by address alone, so a weight change keeps it.
                    let registry = HealthRegistry::with_equivalence(|b| {
                        use std::hash::{Hash, Hasher};
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        b.addr.hash(&mut h);
                        h.finish()
                    });
                    registry.set_health_check(health::health_check(&config.name, hc));
                    Arc::new(HealthProbe::new(registry, hc.interval))
                })
        });
        let discovery = discovery::Static::new(set);
        let backends = match &probe {
            Some(p) => Backends::new_with_health_registry(discovery, p.registry.clone()),
            None => Backends::new(discovery),
        };
        // Static discovery never blocks: this fills the backend set (and hands it to the
        // health registry, whose checks probe it).
        futures::FutureExt::now_or_never(backends.update(|_| {}))
            .ok_or("static discovery blocked")?
            .map_err(|e| format!("service {}: {e}", config.name))?;
        let selector = Selector::new(
            config.balance,
            upstreams
                .iter()
                .map(|u| Member {
                    backend: u.backend.clone(),
                    state: u.state.clone(),
                })
                .collect(),
        );
        let by_addr = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.addr, i))
            .collect();
        Ok(ServiceRuntime {
            name: config.name.as_str().into(),
            config: config.clone(),
            backends,
            selector,
            probe,
            upstreams,
            by_addr,
            inflight: Arc::default(),
            retry_budget: RetryBudget::new(
                config.retry_budget_permille,
                config.retry_min_per_second,
            ),
        })
    }

    /// Start this service's health-check loop unless it runs already.
    pub fn start_health_checks(&self) {
        if let Some(probe) = &self.probe {
            health::spawn(probe);
        }
    }

    /// Pick an upstream: healthy, admitted by its breaker, and not yet tried by this
    /// request if another one qualifies.
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Selection {
        for allow_tried in [false, true] {
            if allow_tried && tried.is_empty() {
                break;
            }
            for i in self.selector.candidates(key) {
                if (!allow_tried && tried.contains(&i)) || !self.is_healthy(i) {
                    continue;
                }
                // Asked last: admission may take one of a half-open breaker's probe slots.
                let breaker = &self.upstreams[i].state.breaker;
                match breaker.try_acquire() {
                    Admission::Rejected => {}
                    a => return Selection::Chosen(i, Ticket::new(breaker.clone(), a)),
                }
            }
        }
        Selection::Unavailable {
            retry_after: self.retry_after(),
        }
    }

    /// Seconds until something may take traffic again: the first breaker to go
    /// half-open, else the health-check interval.
    fn retry_after(&self) -> u64 {
        let now = std::time::Instant::now();
        let breaker = self
            .upstreams
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.is_healthy(i))
            .map(|(_, u)| u)
            .filter_map(|u| u.state.breaker.half_open_at())
            .min()
            .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64);
        let health = self
            .config
            .health_check
            .as_ref()
            .map(|h| h.interval.as_secs_f64().ceil() as u64);
        breaker.or(health).unwrap_or(1).max(1)
    }

    fn upstream_by_addr(&self, addr: SocketAddr) -> Option<Arc<UpstreamState>> {
        self.by_addr
            .get(&addr)
            .map(|&i| self.upstreams[i].state.clone())
    }

    /// Whether Pingora's health check has this upstream in rotation. Without a health
    /// check nothing can take one out, so there is nothing to look up (the lookup
    /// SipHashes the backend).
    pub fn is_healthy(&self, upstream: usize) -> bool {
        self.probe.is_none() || self.backends.ready(&self.upstreams[upstream].backend)
    }

    pub fn healthy_count(&self) -> usize {
        (0..self.upstreams.len())
            .filter(|&i| self.is_healthy(i))
            .count()
    }

    /// The peer for one attempt, with the service's timeouts.
    pub fn peer(&self, upstream: usize) -> HttpPeer {
        let t = &self.config.timeouts;
        let mut peer = HttpPeer::new(self.upstreams[upstream].addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        if self.config.http2 {
            // Plaintext HTTP/2 to the upstream: prior knowledge, no fallback.
            peer.options.set_http_version(2, 2);
        }
        peer
    }
}

#[cfg(test)]
mod tests;
