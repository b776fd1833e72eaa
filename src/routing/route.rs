//! One compiled route: what it matches and everything it does to a request, resolved
//! once per config load. A phase reads `route.auth`, `route.limits`, `route.service`, …
//! and nothing else.

use super::{Routable, RouteMatch, RoutePolicy};
use crate::auth::{TokenSource, Verifier};
use crate::cache::RouteCache;
use crate::forward_auth::ForwardAuth;
use crate::metrics::RouteMetrics;
use crate::ratelimit::Policy;
use crate::upstream::ServiceRuntime;
use std::sync::Arc;

pub struct Route {
    /// The config name: the `route` metric label.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    /// Remove the matched prefix before forwarding.
    pub strip_prefix: bool,
    /// `None` on a redirect route (it proxies nothing).
    pub service: Option<Arc<ServiceRuntime>>,
    /// `None` on a public route.
    pub auth: Option<RouteAuth>,
    /// The rate-limit policies that must all allow (empty: none).
    pub limits: Box<[Arc<Policy>]>,
    /// Kept across reloads while the route's cache settings are unchanged.
    pub cache: Option<Arc<RouteCache>>,
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

impl Route {
    /// The service's name, `none` on a redirect route: the `service` metric label.
    pub fn service_name(&self) -> &str {
        self.service.as_deref().map_or("none", |s| &*s.name)
    }
}

impl Routable for Route {
    fn route_match(&self) -> &RouteMatch {
        &self.matcher
    }
}
