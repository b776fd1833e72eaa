//! One compiled route: what it matches and everything it does to a request, resolved
//! once per config load. A phase reads `route.auth`, `route.limits`, `route.service`, …
//! and nothing else.

use super::config::SplitSticky;
use super::{Routable, RouteMatch, RoutePolicy};
use crate::auth::{TokenSource, Verifier};
use crate::cache::RouteCache;
use crate::forward_auth::ForwardAuth;
use crate::metrics::RouteMetrics;
use crate::ratelimit::Policy;
use crate::upstream::ServiceRuntime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Route {
    /// The config name: the `route` metric label.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    /// `None` on a redirect route (it proxies nothing); a split's first service.
    pub service: Option<Arc<ServiceRuntime>>,
    /// `services:`: the weighted split (the request's service is chosen per request).
    pub split: Option<Box<Split>>,
    /// `None` on a public route.
    pub auth: Option<RouteAuth>,
    /// The rate-limit policies that must all allow (empty: none).
    pub limits: Box<[Arc<Policy>]>,
    /// Kept across reloads while the route's cache settings are unchanged.
    pub cache: Option<Arc<RouteCache>>,
    /// `mirror:`: copies of a share of the requests go to another service.
    pub mirror: Option<Box<crate::mirror::Mirror>>,
    pub policy: Arc<RoutePolicy>,
    /// Metric children, resolved on first use.
    pub metrics: RouteMetrics,
}

/// What an auth route checks.
pub struct RouteAuth {
    /// Tried in order; the first that accepts the request wins.
    pub methods: Box<[AuthMethod]>,
    /// Claim name → accepted values (any one of them); checked when a JWT won.
    pub require_claims: Vec<(String, Vec<String>)>,
    /// The consumer must be in one of these (403 otherwise).
    pub require_groups: Box<[Arc<str>]>,
    /// Forward the credential that authenticated the request.
    pub keep_credentials: bool,
    /// `WWW-Authenticate` when no method found a credential: one challenge per method.
    pub challenge: http::HeaderValue,
}

/// One way a route accepts a caller, resolved.
pub enum AuthMethod {
    Jwt {
        verifier: Arc<Verifier>,
        from: Box<[TokenSource]>,
    },
    ApiKey {
        header: Option<http::HeaderName>,
        query: Option<Box<str>>,
    },
    Basic,
    Forward {
        service: Arc<ForwardAuth>,
        allow_on_error: bool,
    },
}

impl Routable for Route {
    fn route_match(&self) -> &RouteMatch {
        &self.matcher
    }
}

/// A weighted split of a route's traffic across services.
pub struct Split {
    pub services: Box<[Arc<ServiceRuntime>]>,
    /// Running sums of the weights, in the same order; the last is the total.
    cumulative: Box<[u64]>,
    pub sticky: Option<SplitSticky>,
    /// The `Set-Cookie` attributes after `name=service` (cookie stickiness).
    pub cookie_attributes: Box<str>,
    /// Requests chosen so far (the low-discrepancy sequence's index).
    counter: AtomicU64,
    /// Metric children per service (the `service` label differs per request).
    pub metrics: Box<[RouteMetrics]>,
}

impl Split {
    pub fn new(services: Vec<(Arc<ServiceRuntime>, u32)>, sticky: Option<SplitSticky>) -> Split {
        let mut sum = 0u64;
        let cumulative = services
            .iter()
            .map(|(_, w)| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        let cookie_attributes = match &sticky {
            Some(SplitSticky::Cookie { ttl, .. }) => {
                format!(
                    "; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
                    ttl.as_secs()
                )
            }
            _ => String::new(),
        };
        Split {
            metrics: services.iter().map(|_| RouteMetrics::default()).collect(),
            services: services.into_iter().map(|(s, _)| s).collect(),
            cumulative,
            sticky,
            cookie_attributes: cookie_attributes.into(),
            counter: AtomicU64::new(0),
        }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The service at `point` (0 ≤ point < total).
    fn at(&self, point: u64) -> usize {
        self.cumulative.iter().position(|&c| point < c).unwrap_or(0)
    }

    /// The next request's service: the golden-ratio sequence over the weights, so every
    /// stretch of requests is split close to the weights and the services interleave.
    pub fn next(&self) -> usize {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.at(((u128::from(x) * u128::from(self.total())) >> 64) as u64)
    }

    /// The service for a sticky key: the same key, the same service (while the weights
    /// stay as they are).
    pub fn by_key(&self, key: &[u8]) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let x = h.finish();
        self.at(((u128::from(x) * u128::from(self.total())) >> 64) as u64)
    }

    /// The service a sticky cookie names, if it is still one with weight.
    pub fn by_name(&self, name: &[u8]) -> Option<usize> {
        let i = self
            .services
            .iter()
            .position(|s| s.name.as_bytes() == name)?;
        let before = if i == 0 { 0 } else { self.cumulative[i - 1] };
        (self.cumulative[i] > before).then_some(i)
    }
}
