//! Upstream services (`upstream_peer`, discovery and health checks in the background).
//!
//! Each service holds Pingora's `Backends` over its [`discovery::Discovery`] (fixed
//! addresses, names resolved to every A/AAAA record, SRV targets), with Gatehouse's
//! health check attached through a `HealthRegistry`, and publishes its current members
//! as one [`Members`] snapshot behind an `ArcSwap`: the upstreams, their state and the
//! [`Selector`] that orders them for a request. A request takes the snapshot once and
//! keeps it for all its attempts. A re-resolution that changes the members swaps in a
//! new snapshot: members that stay keep their state (breaker, in-flight count, health),
//! members that left get no new requests and drain (see [`UpstreamState::start_drain`]).
//!
//! The background loops ([`ServiceRuntime::start_background`]) live exactly as long as
//! the service's runtime object: when a reload drops a service, they stop.
//!
//! Selection does not go through Pingora's `LoadBalancer::select_with`, which wraps the
//! selector in a per-pick `HashSet` and hashes each backend twice; [`Selector::candidates`]
//! walks indices instead (`benches/selection.rs` compares the two). Health is still
//! Pingora's: a backend is out of rotation while `Backends::ready` says so.

mod adaptive;
pub mod config;
pub mod discovery;
mod health;
mod health_config;
pub mod peer;
pub mod selector;
mod state;

pub use adaptive::HealthState;
pub use config::{Balance, HashKey, ServiceConfig};
pub use discovery::{LookupState, MemberInfo, Source};
pub use state::{InflightCounter, InflightGuard, UpstreamState};

use crate::breaker::{Admission, RetryBudget, Ticket};
use crate::dns::ResolverSpec;
use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use discovery::Discovery;
use health::HealthProbe;
use peer::PeerTimeouts;
use pingora::lb::{Backend, Backends};
use pingora::prelude::HttpPeer;
use selector::{Member, Selector};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The outcome of selection.
pub enum Selection {
    /// The upstream index (in the request's [`Members`]) and its breaker ticket.
    Chosen(usize, Ticket),
    /// Nothing can take the request; seconds for `Retry-After`.
    Unavailable { retry_after: u64 },
}

/// One upstream of a service, as the runtime sees it.
pub struct Upstream {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    pub info: MemberInfo,
}

/// A service's members at one moment: what a request selects from.
pub struct Members {
    pub upstreams: Vec<Upstream>,
    selector: Selector,
    by_addr: HashMap<SocketAddr, usize>,
    /// `sticky:` services: each upstream's cookie value, and its `Set-Cookie` header.
    sticky: Option<StickyMembers>,
}

struct StickyMembers {
    ids: Box<[Box<[u8]>]>,
    set_cookie: Box<[http::HeaderValue]>,
}

impl Members {
    fn new(config: &ServiceConfig, upstreams: Vec<Upstream>) -> Self {
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
        let sticky = config.sticky.as_ref().map(|s| {
            let ids: Box<[Box<[u8]>]> = upstreams
                .iter()
                .map(|u| {
                    sticky_id(&config.name, u.addr)
                        .into_bytes()
                        .into_boxed_slice()
                })
                .collect();
            let attributes = s.attributes();
            let set_cookie = ids
                .iter()
                .filter_map(|id| {
                    let mut v =
                        Vec::with_capacity(s.cookie.len() + 1 + id.len() + attributes.len());
                    v.extend_from_slice(s.cookie.as_bytes());
                    v.push(b'=');
                    v.extend_from_slice(id);
                    v.extend_from_slice(attributes.as_bytes());
                    http::HeaderValue::from_bytes(&v).ok()
                })
                .collect();
            StickyMembers { ids, set_cookie }
        });
        Members {
            upstreams,
            selector,
            by_addr,
            sticky,
        }
    }

    fn state_of(&self, addr: SocketAddr) -> Option<&Arc<UpstreamState>> {
        self.by_addr.get(&addr).map(|&i| &self.upstreams[i].state)
    }

    /// The upstream a sticky cookie's value names, if it is still a member.
    pub fn sticky_index(&self, value: &[u8]) -> Option<usize> {
        self.sticky
            .as_ref()?
            .ids
            .iter()
            .position(|id| **id == *value)
    }

    /// The cookie value naming upstream `i` (`sticky:` services).
    pub fn sticky_id(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.sticky.as_ref()?.ids.get(i)?).ok()
    }

    /// The `Set-Cookie` value that pins a client to upstream `i` (`sticky:` services).
    pub fn sticky_cookie(&self, i: usize) -> Option<&http::HeaderValue> {
        self.sticky.as_ref()?.set_cookie.get(i)
    }
}

/// The cookie value naming an upstream of a sticky service: the first 64 bits of
/// SHA-256 over the service name and the upstream's address, in hex. Opaque to clients
/// (it does not show the address), the same in every gateway instance and across
/// restarts, and it changes when the upstream's address does.
fn sticky_id(service: &str, addr: SocketAddr) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("gatehouse-sticky\0{service}\0{addr}").as_bytes(),
    );
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A service: its members and their health, how they are found, and its settings.
pub struct ServiceRuntime {
    pub name: Arc<str>,
    pub config: ServiceConfig,
    /// Pingora's view of the members: membership (through discovery) and health.
    backends: Backends,
    members: ArcSwap<Members>,
    /// What the last lookups found (shared with the discovery behind `backends`).
    lookups: Arc<Mutex<LookupState>>,
    dynamic: bool,
    probe: Option<Arc<HealthProbe>>,
    /// The state of the members of the service this one replaces (a reload), handed on
    /// by the first refresh to the members that are still there.
    inherited: Mutex<HashMap<SocketAddr, Arc<UpstreamState>>>,
    /// Refreshes run one at a time (Pingora's `Backends::update` requires it).
    refreshing: tokio::sync::Mutex<()>,
    refresher_started: AtomicBool,
    /// ms since the process's clock epoch of the last discovery error log line.
    last_error_log: AtomicU64,
    /// Requests of this service in flight (the `gatehouse_inflight_requests` gauge).
    pub inflight: Arc<InflightCounter>,
    pub retry_budget: RetryBudget,
    /// How many members the breakers may hold out at once (`max_ejection_percent`).
    pub ejection: Arc<crate::breaker::Ejection>,
}

impl ServiceRuntime {
    /// Build a service. With `previous` (the same service before a reload), members
    /// that still exist keep their state, and the health probe is kept when the check
    /// and the way upstreams are reached are unchanged. Fixed members are installed
    /// here; a service that resolves names has none until [`Self::refresh`] succeeds.
    pub fn new(
        config: &ServiceConfig,
        previous: Option<&ServiceRuntime>,
        resolver: &ResolverSpec,
    ) -> Result<Self, String> {
        let probe = config.health_check.as_ref().map(|hc| {
            previous
                .filter(|p| {
                    p.config.health_check.as_ref() == Some(hc)
                        && p.config.tls == config.tls
                        && p.config.http2 == config.http2
                })
                .and_then(|p| p.probe.clone())
                .unwrap_or_else(|| Arc::new(HealthProbe::new(config, hc)))
        });
        let discovery = Discovery::new(config, resolver)?;
        let dynamic = discovery.is_dynamic();
        let lookups = discovery.state.clone();
        let discovery = Box::new(discovery);
        let backends = match &probe {
            Some(p) => Backends::new_with_health_registry(discovery, p.registry.clone()),
            None => Backends::new(discovery),
        };
        let inherited = previous.map_or_else(HashMap::new, |p| {
            p.members()
                .upstreams
                .iter()
                .map(|u| (u.addr, u.state.clone()))
                .collect()
        });
        let svc = ServiceRuntime {
            name: config.name.as_str().into(),
            config: config.clone(),
            backends,
            members: ArcSwap::from_pointee(Members::new(config, Vec::new())),
            lookups,
            dynamic,
            probe,
            inherited: Mutex::new(inherited),
            refreshing: tokio::sync::Mutex::new(()),
            refresher_started: AtomicBool::new(false),
            last_error_log: AtomicU64::new(0),
            inflight: Arc::default(),
            retry_budget: RetryBudget::new(
                config.retry_budget_permille,
                config.retry_min_per_second,
            ),
            ejection: Arc::new(crate::breaker::Ejection::new(
                config
                    .circuit_breaker
                    .map_or(100, |c| c.max_ejection_percent),
            )),
        };
        if !dynamic {
            // Fixed addresses only: discovery never waits, so this installs them now
            // (and hands them to the health registry, whose checks probe them).
            futures::FutureExt::now_or_never(svc.backends.update(|set| svc.install(&set)))
                .ok_or("static discovery blocked")?
                .map_err(|e| format!("service {}: {e}", config.name))?;
        }
        Ok(svc)
    }

    /// The current members. A request takes them once and keeps them for every attempt.
    pub fn members(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Whether members come from DNS.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic
    }

    /// What the last lookups found.
    pub fn lookups(&self) -> LookupState {
        self.lookups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Look the members up again and install them if they changed. On failure (or an
    /// empty answer) the members stay as they were.
    pub async fn refresh(&self) -> Result<(), String> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.backends
            .update(|set| self.install(&set))
            .await
            .map_err(|e| {
                e.context
                    .as_ref()
                    .map_or_else(|| e.to_string(), |c| c.as_str().to_string())
            })
    }

    /// Publish a new member set: members that stay keep their state, new ones start
    /// fresh, and those that left drain.
    fn install(&self, set: &BTreeSet<Backend>) {
        let old = self.members.load_full();
        let mut inherited = self
            .inherited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ordered: Vec<&Backend> = set.iter().collect();
        ordered.sort_by_key(|b| b.ext.get::<MemberInfo>().map_or(usize::MAX, |m| m.order));
        let mut upstreams: Vec<Upstream> = Vec::with_capacity(ordered.len());
        for b in ordered {
            let (Some(&addr), Some(info)) = (b.addr.as_inet(), b.ext.get::<MemberInfo>()) else {
                continue;
            };
            if upstreams.iter().any(|u| u.addr == addr) {
                continue;
            }
            let state = old
                .state_of(addr)
                .cloned()
                .or_else(|| inherited.remove(&addr))
                .filter(|s| *s.address == *info.label)
                .unwrap_or_else(|| Arc::new(UpstreamState::new(&self.config.name, &info.label)));
            state.breaker.configure(
                self.config.circuit_breaker,
                self.config.circuit_breaker.map(|_| self.ejection.clone()),
            );
            state.stop_drain();
            upstreams.push(Upstream {
                backend: b.clone(),
                addr,
                state,
                info: info.clone(),
            });
        }
        if let Some(tracker) = self.probe.as_ref().and_then(|p| p.adaptive.as_ref()) {
            tracker.retain(|a| upstreams.iter().any(|u| u.addr == *a));
        }
        let out = upstreams
            .iter()
            .filter(|u| u.state.breaker.state() != crate::breaker::State::Closed)
            .count();
        self.ejection.reset(upstreams.len(), out);
        let left: Vec<&Upstream> = old
            .upstreams
            .iter()
            .filter(|u| !upstreams.iter().any(|n| Arc::ptr_eq(&n.state, &u.state)))
            .collect();
        if self.dynamic {
            let added: Vec<&str> = upstreams
                .iter()
                .filter(|n| {
                    !old.upstreams
                        .iter()
                        .any(|u| Arc::ptr_eq(&n.state, &u.state))
                })
                .map(|n| &*n.state.address)
                .collect();
            if !added.is_empty() {
                log::info!(
                    "service {}: new upstream(s) {}",
                    self.name,
                    added.join(", ")
                );
            }
        }
        // The new set is published before the members that left start draining: a
        // request that loads the set from now on never finds only draining members
        // (one that loaded the old set just before chooses again: `next_peer`).
        self.members
            .store(Arc::new(Members::new(&self.config, upstreams)));
        for u in left {
            log::info!(
                "service {}: upstream {} left the set ({}); draining for up to {:?}",
                self.name,
                u.state.address,
                u.info.source.kind(),
                self.config.drain_timeout
            );
            u.state.start_drain(self.config.drain_timeout);
        }
    }

    /// The members this service had that `next` (its successor after a reload, or none
    /// when the service is gone) does not keep: they get no new requests and drain.
    pub fn retire(&self, next: Option<&ServiceRuntime>) {
        let keep = next.map(|n| n.members());
        for u in &self.members().upstreams {
            let kept = keep
                .as_ref()
                .is_some_and(|k| k.upstreams.iter().any(|n| Arc::ptr_eq(&n.state, &u.state)));
            if !kept {
                u.state.start_drain(self.config.drain_timeout);
            }
        }
    }

    /// Start this service's background work unless it runs already: health checks, and
    /// for a service that resolves names, re-resolution every `resolve_interval` (or a
    /// record's shorter TTL, at least every second).
    pub fn start_background(self: &Arc<Self>, metrics: &Arc<Metrics>) {
        if let Some(probe) = &self.probe {
            health::spawn(probe);
        }
        if !self.dynamic || self.refresher_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        let errors = metrics.discovery_errors.with_label_values(&[&*self.name]);
        tokio::spawn(async move {
            loop {
                let Some(delay) = weak.upgrade().map(|s| s.next_refresh()) else {
                    return;
                };
                tokio::time::sleep(delay).await;
                let Some(svc) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = svc.refresh().await {
                    errors.inc();
                    svc.log_discovery_error(&e);
                }
            }
        });
    }

    /// When to look again: `resolve_interval`, or sooner when a record's TTL is shorter,
    /// or after a failure; never more often than once a second.
    fn next_refresh(&self) -> Duration {
        let interval = self.config.resolve_interval;
        let l = self.lookups();
        let due = if l.error.is_some() {
            interval.min(Duration::from_secs(5))
        } else {
            l.ttl.map_or(interval, |ttl| ttl.min(interval))
        };
        due.max(Duration::from_secs(1))
    }

    /// At most one line per service every 10 s.
    fn log_discovery_error(&self, e: &str) {
        let now = state::now_ms();
        let last = self.last_error_log.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_error_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "service {}: discovery failed ({e}); keeping the last {} upstream(s)",
                self.name,
                self.members().upstreams.len()
            );
        }
    }

    /// Pick an upstream: healthy, still a member (a request's members may have changed
    /// since it took them), admitted by its breaker, and not yet tried by this request if
    /// another one qualifies.
    ///
    /// `prefer` (a sticky cookie's upstream) is taken when it qualifies and was not tried.
    pub fn select(
        &self,
        members: &Members,
        key: &[u8],
        tried: &[usize],
        prefer: Option<usize>,
    ) -> Selection {
        if let Some(i) = prefer.filter(|i| {
            *i < members.upstreams.len()
                && !tried.contains(i)
                && self.is_healthy(members, *i)
                && !members.upstreams[*i].state.is_draining()
        }) {
            let breaker = &members.upstreams[i].state.breaker;
            match breaker.try_acquire() {
                Admission::Rejected => {}
                a => return Selection::Chosen(i, Ticket::new(breaker.clone(), a)),
            }
        }
        for allow_tried in [false, true] {
            if allow_tried && tried.is_empty() {
                break;
            }
            for i in members.selector.candidates(key) {
                if (!allow_tried && tried.contains(&i))
                    || !self.is_healthy(members, i)
                    || members.upstreams[i].state.is_draining()
                {
                    continue;
                }
                // Asked last: admission may take one of a half-open breaker's probe slots.
                let breaker = &members.upstreams[i].state.breaker;
                match breaker.try_acquire() {
                    Admission::Rejected => {}
                    a => return Selection::Chosen(i, Ticket::new(breaker.clone(), a)),
                }
            }
        }
        Selection::Unavailable {
            retry_after: self.retry_after(members),
        }
    }

    /// Seconds until something may take traffic again: the first breaker to go
    /// half-open, else the health-check interval.
    fn retry_after(&self, members: &Members) -> u64 {
        let now = Instant::now();
        let breaker = members
            .upstreams
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.is_healthy(members, i))
            .filter_map(|(_, u)| u.state.breaker.half_open_at())
            .min()
            .map(|t| t.saturating_duration_since(now).as_secs_f64().ceil() as u64);
        let health = self
            .config
            .health_check
            .as_ref()
            .map(|h| h.interval.as_secs_f64().ceil() as u64);
        breaker.or(health).unwrap_or(1).max(1)
    }

    /// Whether Pingora's health check has this upstream in rotation. Without a health
    /// check nothing can take one out, so there is nothing to look up (the lookup
    /// hashes the backend).
    pub fn is_healthy(&self, members: &Members, upstream: usize) -> bool {
        self.probe.is_none() || self.backends.ready(&members.upstreams[upstream].backend)
    }

    /// An upstream for a mirrored copy: in rotation, not draining, its breaker closed.
    /// Copies take no breaker ticket: they do not count for or against an upstream.
    pub fn pick_for_copy(&self, members: &Members) -> Option<usize> {
        members.selector.candidates(b"").find(|&i| {
            self.is_healthy(members, i)
                && !members.upstreams[i].state.is_draining()
                && members.upstreams[i].state.breaker.state() == crate::breaker::State::Closed
        })
    }

    /// Where an upstream stands in its active checks: healthy or unhealthy (as Pingora's
    /// registry has it), or with adaptive checks also suspect.
    pub fn health_state(&self, members: &Members, upstream: usize) -> HealthState {
        if let Some(tracker) = self.probe.as_ref().and_then(|p| p.adaptive.as_ref()) {
            return tracker.state(members.upstreams[upstream].addr);
        }
        if self.is_healthy(members, upstream) {
            HealthState::Healthy
        } else {
            HealthState::Unhealthy
        }
    }

    pub fn healthy_count(&self) -> usize {
        let members = self.members();
        (0..members.upstreams.len())
            .filter(|&i| self.is_healthy(&members, i))
            .count()
    }

    /// The peer for one attempt, with the service's timeouts and TLS settings.
    pub fn peer(&self, upstream: &Upstream) -> HttpPeer {
        let t = &self.config.timeouts;
        let timeouts = PeerTimeouts {
            connect: t.connect,
            read: t.read,
            write: t.write,
            idle: t.idle,
        };
        peer::build(
            &self.config,
            upstream.addr,
            upstream.info.host.as_deref(),
            timeouts,
        )
    }
}

#[cfg(test)]
mod tests;
