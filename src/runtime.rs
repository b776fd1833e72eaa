//! The runtime snapshot: everything a request needs, built once per config load and
//! swapped whole behind an `ArcSwap`. A request loads the snapshot once in
//! `request_filter` and keeps that `Arc` to the end, so a reload never changes the
//! rules under a request in flight.

use crate::auth::Verifier;
use crate::cache::RouteCache;
use crate::config::{AccessLogFormat, Config};
use crate::ratelimit::{self, Policy, Store};
use crate::routing::RouteTable;
use crate::upstream::ServiceRuntime;
use http::HeaderName;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A JWT verifier plus the stop switch of its JWKS refresher. Shared between snapshots
/// when a reload leaves the verifier unchanged; the refresher stops when the last
/// snapshot using it is dropped.
pub struct VerifierHandle {
    pub verifier: Arc<Verifier>,
    stop: watch::Sender<bool>,
    started: AtomicBool,
}

impl VerifierHandle {
    fn new(verifier: Arc<Verifier>) -> Self {
        VerifierHandle {
            verifier,
            stop: watch::channel(false).0,
            started: AtomicBool::new(false),
        }
    }
}

impl Drop for VerifierHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What an auth route checks.
pub struct RouteAuth {
    pub verifier: Arc<Verifier>,
    pub require_claims: Vec<(String, Vec<String>)>,
}

pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// Same order as `config.services` (by name).
    pub services: Vec<Arc<ServiceRuntime>>,
    /// By route index; `None` for public routes.
    pub route_auth: Vec<Option<RouteAuth>>,
    /// Every header any verifier fills from claims: stripped from every request.
    pub claim_headers: Vec<HeaderName>,
    /// By route index: the policies that must all allow.
    pub route_limits: Vec<Vec<Arc<Policy>>>,
    /// By route index: the response cache (kept across reloads by route name while
    /// its settings are unchanged).
    pub caches: Vec<Option<Arc<RouteCache>>>,
    /// Whether any route compresses (compression must be armed before routing).
    pub any_compression: bool,
    /// Long-lived across reloads unless the store settings change.
    pub rate_store: Arc<Store>,
    pub verifiers: HashMap<String, Arc<VerifierHandle>>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_body: Option<u64>,
    pub access_log: AccessLogFormat,
    /// By route index: metric children resolved on first use.
    pub route_metrics: Box<[crate::metrics::RouteMetrics]>,
}

impl Runtime {
    /// Build from a validated config. With `previous` (a reload), a service whose config
    /// is unchanged is reused as is; a changed one is rebuilt keeping the state of the
    /// upstreams that remain. JWKS verifiers whose settings are unchanged are reused
    /// with their fetched keys. Fails only on conditions validation cannot see.
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

        let mut verifiers = HashMap::new();
        for (name, built) in &config.verifiers {
            let raw = config.jwt_raw.get(name);
            let reuse = previous.and_then(|p| {
                let unchanged =
                    raw.is_some_and(|r| r.jwks_url.is_some()) && p.config.jwt_raw.get(name) == raw;
                unchanged.then(|| p.verifiers.get(name).cloned()).flatten()
            });
            let handle = reuse.unwrap_or_else(|| Arc::new(VerifierHandle::new(built.clone())));
            verifiers.insert(name.clone(), handle);
        }
        let route_auth = config
            .routes
            .iter()
            .map(|r| {
                let name = r.auth.as_ref()?;
                Some(RouteAuth {
                    verifier: verifiers.get(name)?.verifier.clone(),
                    require_claims: r.require_claims.clone(),
                })
            })
            .collect();
        let route_limits = config
            .routes
            .iter()
            .map(|r| {
                r.rate_limit
                    .iter()
                    .filter_map(|name| config.policies.get(name).cloned())
                    .collect()
            })
            .collect();
        let rate_store = match previous {
            Some(p)
                if !ratelimit::store_changed(
                    &p.config.rate_limits_raw,
                    &config.rate_limits_raw,
                ) =>
            {
                p.rate_store.clone()
            }
            _ => config.rate_store.clone(),
        };
        let caches = config
            .routes
            .iter()
            .zip(&config.route_extras)
            .map(|(r, extra)| {
                let policy = extra.cache?;
                let kept = previous.and_then(|p| {
                    let i = p.config.routes.iter().position(|o| o.name == r.name)?;
                    p.caches.get(i)?.clone().filter(|c| *c.policy() == policy)
                });
                Some(kept.unwrap_or_else(|| Arc::new(RouteCache::new(policy))))
            })
            .collect();
        let any_compression = config.route_extras.iter().any(|e| e.compression);
        let mut claim_headers: Vec<HeaderName> = Vec::new();
        for h in verifiers.values() {
            for (_, header) in h.verifier.claims_to_headers() {
                if !claim_headers.contains(header) {
                    claim_headers.push(header.clone());
                }
            }
        }
        Ok(Runtime {
            trusted_proxies: config.server.trusted_proxies.clone(),
            max_request_body: config.server.max_request_body,
            access_log: config.server.access_log,
            route_metrics: std::iter::repeat_with(Default::default)
                .take(config.routes.len())
                .collect(),
            config: Arc::new(config),
            routes,
            services,
            route_auth,
            claim_headers,
            route_limits,
            caches,
            any_compression,
            rate_store,
            verifiers,
        })
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// Fetch the key sets of JWKS verifiers that are new in this snapshot, so a reload
    /// that adds or changes one does not answer 503 until its refresher's first fetch.
    /// Bounded: a slow identity provider delays the reload by at most 5 s.
    pub async fn prefetch_jwks(&self) {
        for h in self.verifiers.values() {
            if h.verifier.needs_jwks() && !h.started.load(Ordering::SeqCst) {
                let fetch = h.verifier.refresh_jwks();
                match tokio::time::timeout(std::time::Duration::from_secs(5), fetch).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        log::warn!("jwt {}: JWKS prefetch failed: {e}", h.verifier.name())
                    }
                    Err(_) => log::warn!("jwt {}: JWKS prefetch timed out", h.verifier.name()),
                }
            }
        }
    }

    /// Start what runs in the background for this snapshot and is not running yet:
    /// health-check loops and JWKS refreshers. Call from inside the tokio runtime.
    pub fn start_background(&self) {
        crate::upstream::spawn_health_checks(&self.services);
        for h in self.verifiers.values() {
            if h.verifier.needs_jwks() && !h.started.swap(true, Ordering::SeqCst) {
                tokio::spawn(h.verifier.clone().run_jwks_refresher(h.stop.subscribe()));
            }
        }
    }
}
