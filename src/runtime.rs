//! The runtime snapshot: everything a request needs, built once per config load and
//! swapped whole behind an `ArcSwap`. A request loads the snapshot once and keeps that
//! `Arc` to the end, so a reload never changes the rules under a request in flight.
//!
//! [`Runtime::build`] is the one place that turns a validated [`Config`] into live
//! objects, reusing what a reload leaves unchanged: services (or, when a service changed,
//! the state of its upstreams that remain), health probes, JWKS verifiers with their
//! fetched keys, the rate-limit store and its buckets, and route caches with their
//! entries.

use crate::access_log::AccessLogFormat;
use crate::auth::{JwtConfig, Verifier};
use crate::cache::RouteCache;
use crate::config::server::{ClientTimeouts, HeadLimits};
use crate::config::Config;
use crate::consumers::Consumers;
use crate::forward_auth::ForwardAuth;
use crate::headers::{X_CONSUMER, X_CONSUMER_GROUPS};
use crate::metrics::Metrics;
use crate::ratelimit::{Probe, RedisTarget, Store};
use crate::routing::{
    AuthMethod, AuthMethodConfig, Route, RouteAuth, RouteConfig, RouteMatch, RouteTable, Split,
};
use crate::tracing::Tracer;
use crate::upstream::ServiceRuntime;
use http::HeaderName;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// A JWT verifier plus the stop switch of its JWKS refresher. Shared between snapshots
/// when a reload leaves the verifier unchanged; the refresher stops when the last
/// snapshot using it is dropped.
pub struct VerifierHandle {
    pub verifier: Arc<Verifier>,
    /// The settings it was built from (a reload compares them).
    config: JwtConfig,
    stop: watch::Sender<bool>,
    started: AtomicBool,
}

impl VerifierHandle {
    fn new(config: &JwtConfig) -> Self {
        VerifierHandle {
            verifier: Arc::new(Verifier::new(config)),
            config: config.clone(),
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

pub struct Runtime {
    /// The config this snapshot was built from (reloads compare against it; the admin
    /// status reads it). The request path reads the compiled routes instead.
    pub config: Arc<Config>,
    /// The compiled routes, in file order, behind the route trie.
    pub routes: RouteTable<Route>,
    /// Every service, by name.
    pub services: Vec<Arc<ServiceRuntime>>,
    /// Every identity header the gateway sets (claim headers of every verifier,
    /// `X-Consumer`, `X-Consumer-Groups`, forward-auth `copy_headers`): stripped from
    /// every client request.
    pub claim_headers: Vec<HeaderName>,
    /// Every consumer, indexed by credential.
    pub consumers: Arc<Consumers>,
    /// `forward_auth:` services; kept across reloads while unchanged (with their caches).
    pub forward_auth: BTreeMap<String, Arc<ForwardAuth>>,
    /// Whether any route compresses (compression must be armed before routing).
    pub any_compression: bool,
    /// Long-lived across reloads unless the store settings change.
    pub rate_store: Arc<Store>,
    pub verifiers: BTreeMap<String, Arc<VerifierHandle>>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_request_body: Option<u64>,
    pub access_log: AccessLogFormat,
    /// `server.timeouts` (client_body, send and keepalive apply per request).
    pub timeouts: ClientTimeouts,
    /// The keep-alive timeout in whole seconds (what Pingora takes), at least 1.
    pub keepalive_secs: u64,
    pub limits: HeadLimits,
    /// `tracing:`; `None` (off) costs a request one branch.
    pub tracer: Option<Arc<Tracer>>,
    /// When this snapshot's config was loaded.
    pub loaded_at: std::time::SystemTime,
}

impl Runtime {
    /// Build from a validated config. With `previous` (a reload), a service whose config
    /// is unchanged is reused as is; a changed one is rebuilt keeping the state of the
    /// upstreams that remain. Fails only on conditions validation cannot see.
    pub fn build(config: Config, previous: Option<&Runtime>) -> Result<Runtime, String> {
        let resolver = &config.server.resolver;
        let same_resolver = previous.is_some_and(|p| p.config.server.resolver == *resolver);
        let mut services = Vec::with_capacity(config.services.len());
        for svc in config.services.values() {
            let old = previous.and_then(|p| p.service(&svc.name));
            let rebuilt = match old {
                Some(old) if old.config == *svc && (same_resolver || !old.is_dynamic()) => {
                    old.clone()
                }
                _ => Arc::new(ServiceRuntime::new(svc, old.map(|o| &**o), resolver)?),
            };
            services.push(rebuilt);
        }

        let mut verifiers = BTreeMap::new();
        for (name, jwt) in &config.jwt {
            let reuse = previous
                .and_then(|p| p.verifiers.get(name))
                .filter(|h| h.config.same_jwks_verifier(jwt))
                .cloned();
            let handle = reuse.unwrap_or_else(|| Arc::new(VerifierHandle::new(jwt)));
            verifiers.insert(name.clone(), handle);
        }

        let rate_store = match previous {
            Some(p) if p.config.rate_limits.store == config.rate_limits.store => {
                p.rate_store.clone()
            }
            _ => Arc::new(Store::new(&config.rate_limits.store)?),
        };

        let mut forward_auth = BTreeMap::new();
        for (name, fa) in &config.forward_auth {
            let reuse = previous
                .and_then(|p| p.forward_auth.get(name))
                .filter(|old| old.config == *fa)
                .cloned();
            forward_auth.insert(
                name.clone(),
                reuse.unwrap_or_else(|| Arc::new(ForwardAuth::new(fa))),
            );
        }
        let consumers = match previous {
            Some(p) if p.config.consumers == config.consumers => p.consumers.clone(),
            _ => Arc::new(Consumers::new(&config.consumers)),
        };

        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let refs = Refs {
                services: &services,
                verifiers: &verifiers,
                forward_auth: &forward_auth,
            };
            routes.push(build_route(rc, &config, &refs, previous)?);
        }

        let mut claim_headers: Vec<HeaderName> = Vec::new();
        let mut strip = |h: &HeaderName| {
            if !claim_headers.contains(h) {
                claim_headers.push(h.clone());
            }
        };
        for h in verifiers.values() {
            for (_, header) in h.verifier.claims_to_headers() {
                strip(header);
            }
        }
        if !config.consumers.consumers.is_empty() || !forward_auth.is_empty() {
            strip(&X_CONSUMER);
            strip(&X_CONSUMER_GROUPS);
        }
        for fa in forward_auth.values() {
            for h in &fa.config.copy_headers {
                strip(h);
            }
        }
        let tracer = config.tracing.as_ref().map(|t| match previous {
            Some(p) => match &p.tracer {
                Some(old) if old.config == *t => old.clone(),
                _ => Arc::new(Tracer::new(t.clone())),
            },
            None => Arc::new(Tracer::new(t.clone())),
        });
        Ok(Runtime {
            tracer,
            loaded_at: std::time::SystemTime::now(),
            any_compression: config.routes.iter().any(|r| r.policy.compression),
            trusted_proxies: config.server.trusted_proxies.clone(),
            max_request_body: config.server.max_request_body,
            access_log: config.server.access_log.clone(),
            timeouts: config.server.timeouts,
            keepalive_secs: (config.server.timeouts.keepalive.as_secs_f64().ceil() as u64).max(1),
            limits: config.server.limits,
            config: Arc::new(config),
            routes: RouteTable::build(routes),
            services,
            claim_headers,
            consumers,
            forward_auth,
            rate_store,
            verifiers,
        })
    }

    pub fn service(&self, name: &str) -> Option<&Arc<ServiceRuntime>> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.routes().iter().find(|r| &*r.name == name)
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

    /// Get ready to serve: resolve the members of services that find them by name and
    /// have none yet (new in this snapshot), so it never serves an empty service, and ask
    /// a new shared rate-limit store what it is. Warnings (a store that does not answer
    /// yet), or every error with its path; bounded by 10 s.
    pub async fn prepare(&self, previous: Option<&Runtime>) -> Result<Vec<String>, Vec<String>> {
        let pending: Vec<_> = self
            .services
            .iter()
            .filter(|s| s.is_dynamic() && s.members().upstreams.is_empty())
            .collect();
        let lookups = futures::future::join_all(pending.iter().map(|svc| async move {
            let limit = std::time::Duration::from_secs(10);
            match tokio::time::timeout(limit, svc.refresh()).await {
                Ok(Ok(())) if !svc.members().upstreams.is_empty() => Ok(()),
                Ok(Ok(())) => Err(format!("services.{}: no upstream found", svc.name)),
                Ok(Err(e)) => Err(format!(
                    "services.{}: cannot resolve its upstreams: {e}",
                    svc.name
                )),
                Err(_) => Err(format!(
                    "services.{}: resolving its upstreams took over {limit:?}",
                    svc.name
                )),
            }
        }));
        let new_store = previous.is_none_or(|p| !Arc::ptr_eq(&p.rate_store, &self.rate_store));
        let probe = async {
            if new_store {
                self.rate_store.probe().await
            } else {
                Probe::Fine
            }
        };
        let (lookups, probe) = futures::future::join(lookups, probe).await;
        let mut errors: Vec<String> = lookups.into_iter().filter_map(Result::err).collect();
        let mut warnings = Vec::new();
        let at = self
            .config
            .rate_limits
            .store
            .redis
            .as_ref()
            .map_or("rate_limits.redis", |r| match r.target {
                RedisTarget::Standalone(_) => "rate_limits.redis.url",
                RedisTarget::Cluster(_) => "rate_limits.redis.cluster",
                RedisTarget::Sentinel { .. } => "rate_limits.redis.sentinel",
            });
        match probe {
            Probe::Fine => {}
            Probe::Warning(w) => warnings.push(format!("{at}: {w}")),
            Probe::Error(e) => errors.push(format!("{at}: {e}")),
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(errors)
        }
    }

    /// [`Self::prepare`] for a first snapshot, outside any async runtime (at start and
    /// for `-t`).
    pub fn prepare_blocking(&self) -> Result<Vec<String>, Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| vec![format!("cannot start a runtime to resolve names: {e}")])?;
        rt.block_on(self.prepare(None))
    }

    /// After the swap from `old`: upstreams that this snapshot no longer has (a service
    /// removed or changed) get no new requests and drain.
    pub fn retire(&self, old: &Runtime) {
        for svc in &old.services {
            match self.service(&svc.name) {
                Some(next) if Arc::ptr_eq(next, svc) => {}
                next => svc.retire(next.map(|n| &**n)),
            }
        }
    }

    /// Start what runs in the background for this snapshot and is not running yet:
    /// health-check loops, re-resolution of names and JWKS refreshers. Call from inside
    /// the tokio runtime.
    pub fn start_background(&self, metrics: &Arc<Metrics>) {
        for svc in &self.services {
            svc.start_background(metrics);
        }
        if let Some(t) = &self.tracer {
            t.start_background(metrics);
        }
        for h in self.verifiers.values() {
            if h.verifier.needs_jwks() && !h.started.swap(true, Ordering::SeqCst) {
                tokio::spawn(h.verifier.clone().run_jwks_refresher(h.stop.subscribe()));
            }
        }
    }
}

/// What a route may refer to, built before the routes.
struct Refs<'a> {
    services: &'a [Arc<ServiceRuntime>],
    verifiers: &'a BTreeMap<String, Arc<VerifierHandle>>,
    forward_auth: &'a BTreeMap<String, Arc<ForwardAuth>>,
}

/// One route with every reference resolved. Validation guarantees the names exist; a
/// missing one is still an error here, never a silent default.
fn build_route(
    rc: &RouteConfig,
    config: &Config,
    refs: &Refs,
    previous: Option<&Runtime>,
) -> Result<Route, String> {
    let missing = |what: &str, name: &str| format!("route {}: no {what} {name:?}", rc.name);
    let split = if rc.split.is_empty() {
        None
    } else {
        let mut services = Vec::with_capacity(rc.split.len());
        for (name, weight) in &rc.split {
            let svc = refs
                .services
                .iter()
                .find(|s| *s.name == **name)
                .cloned()
                .ok_or_else(|| missing("service", name))?;
            services.push((svc, *weight));
        }
        Some(Box::new(Split::new(services, rc.split_sticky.clone())))
    };
    let service = if rc.policy.redirect.is_some() {
        None
    } else {
        Some(
            refs.services
                .iter()
                .find(|s| *s.name == *rc.service)
                .cloned()
                .ok_or_else(|| missing("service", &rc.service))?,
        )
    };
    let auth = if rc.auth.is_empty() {
        None
    } else {
        let mut methods = Vec::with_capacity(rc.auth.len());
        let mut challenges: Vec<&str> = Vec::new();
        for m in &rc.auth {
            let (method, challenge) = match m {
                AuthMethodConfig::Jwt(name) => (
                    AuthMethod::Jwt {
                        verifier: refs
                            .verifiers
                            .get(name)
                            .ok_or_else(|| missing("jwt verifier", name))?
                            .verifier
                            .clone(),
                        from: config
                            .jwt
                            .get(name)
                            .map(|j| j.token_from.clone().into_boxed_slice())
                            .unwrap_or_default(),
                    },
                    "Bearer",
                ),
                AuthMethodConfig::ApiKey { header, query } => (
                    AuthMethod::ApiKey {
                        header: header.clone(),
                        query: query.as_deref().map(Box::from),
                    },
                    "ApiKey",
                ),
                AuthMethodConfig::Basic => (AuthMethod::Basic, "Basic realm=\"gatehouse\""),
                AuthMethodConfig::Forward {
                    name,
                    allow_on_error,
                } => (
                    AuthMethod::Forward {
                        service: refs
                            .forward_auth
                            .get(name)
                            .ok_or_else(|| missing("forward_auth service", name))?
                            .clone(),
                        allow_on_error: *allow_on_error,
                    },
                    "",
                ),
            };
            methods.push(method);
            if !challenge.is_empty() && !challenges.contains(&challenge) {
                challenges.push(challenge);
            }
        }
        Some(RouteAuth {
            methods: methods.into_boxed_slice(),
            require_claims: rc.require_claims.clone(),
            require_groups: rc
                .require_groups
                .iter()
                .map(|g| Arc::from(g.as_str()))
                .collect(),
            keep_credentials: rc.keep_credentials,
            challenge: http::HeaderValue::from_str(&challenges.join(", "))
                .unwrap_or(http::HeaderValue::from_static("Bearer")),
        })
    };
    let limits = rc
        .rate_limit
        .iter()
        .map(|name| {
            config
                .rate_limits
                .policies
                .get(name)
                .cloned()
                .ok_or_else(|| missing("rate-limit policy", name))
        })
        .collect::<Result<_, _>>()?;
    let cache = rc.cache.map(|policy| {
        previous
            .and_then(|p| p.route(&rc.name)?.cache.clone())
            .filter(|c| *c.policy() == policy)
            .unwrap_or_else(|| Arc::new(RouteCache::new(policy)))
    });
    let mirror = match &rc.mirror {
        Some(m) => Some(Box::new(crate::mirror::Mirror::new(
            m,
            refs.services
                .iter()
                .find(|s| *s.name == *m.service)
                .cloned()
                .ok_or_else(|| missing("service", &m.service))?,
        ))),
        None => None,
    };
    Ok(Route {
        name: rc.name.as_str().into(),
        matcher: RouteMatch::new(rc),
        strip_prefix: rc.strip_prefix,
        service,
        split,
        auth,
        limits,
        cache,
        mirror,
        policy: rc.policy.clone(),
        metrics: Default::default(),
    })
}
