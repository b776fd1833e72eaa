//! Per-request state (Pingora's `CTX`).

use crate::auth::{Claims, Verifier};
use crate::breaker::Ticket;
use crate::cache::{BodyCollector, CacheStatus, CachedResponse, FillGuard, RouteCache};
use crate::consumers::Consumer;
use crate::error::GatewayError;
use crate::ratelimit::RateHeaders;
use crate::routing::Route;
use crate::runtime::Runtime;
use crate::tracing::RequestTrace;
use crate::upstream::{InflightGuard, Members, ServiceRuntime, Upstream};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state. Guards release in-flight counts when the request ends, however
/// it ends. Pingora keeps the context by value in its per-request future in three
/// places and copies that future to the heap on every request, so it holds a
/// `Box<Ctx>` (one pointer) rather than this struct, and the large state of cached
/// routes is boxed again inside it.
pub struct Ctx {
    pub start: Instant,
    /// The snapshot this request runs on, loaded once.
    pub rt: Option<Arc<Runtime>>,
    /// The matched route's position in `rt.routes`.
    pub route: Option<usize>,
    /// `X-Request-Id`: the client's (when sane) or a new one; cloning shares it.
    pub request_id: http::HeaderValue,
    pub peer_ip: Option<IpAddr>,
    pub peer_trusted: bool,
    pub client_ip: Option<IpAddr>,
    /// The service's members when the first attempt chose one: every attempt of the
    /// request chooses from these.
    pub members: Option<Arc<Members>>,
    /// Upstreams (indices into `members`) this request was sent to, in order.
    pub tried: smallvec::SmallVec<[usize; 4]>,
    /// Whether the current attempt's outcome is already counted.
    pub attempt_recorded: bool,
    /// The current attempt's hold on its upstream's circuit breaker.
    pub ticket: Option<Ticket>,
    pub upstream_guard: Option<InflightGuard>,
    pub service_guard: Option<InflightGuard>,
    /// The answer `fail_to_proxy` gives, when a phase already knows it.
    pub error: Option<GatewayError>,
    /// Status of a response the gateway wrote itself.
    pub own_status: u16,
    pub body_seen: u64,
    /// Claims of the verified token on an auth route.
    pub claims: Option<Arc<Claims>>,
    /// The verifier that accepted the token (whose claim headers are forwarded).
    pub claims_from: Option<Arc<Verifier>>,
    /// The consumer the request was authenticated as.
    pub consumer: Option<Arc<Consumer>>,
    /// `RateLimit-*` values of the tightest policy, added to the response.
    pub rate: Option<RateHeaders>,
    /// The last attempt's 5xx was turned into an error to retry it elsewhere.
    pub retrying_status: bool,
    /// A WebSocket upgrade on a route that allows it.
    pub websocket: bool,
    /// Pingora's upstream request policy is skipped for this request, and all it would
    /// have done is remove `Connection`: the forwarded request does that itself.
    pub drop_connection: bool,
    pub cache: Option<Arc<RouteCache>>,
    /// This request fills the cache entry others may be waiting for.
    pub cache_fill: Option<Box<FillGuard>>,
    pub cache_collector: Option<Box<BodyCollector>>,
    /// A stored response this request revalidates upstream (its validators are sent).
    pub cache_stale: Option<Arc<CachedResponse>>,
    /// The refreshed response to serve after the upstream answered `304`.
    pub cache_revalidated: Option<Arc<CachedResponse>>,
    /// `X-Cache` on cached routes.
    pub cache_status: Option<CacheStatus>,
    /// When the current upstream attempt began (`gatehouse_upstream_duration_seconds`).
    pub attempt_start: Instant,
    /// The request's trace when `tracing:` is on.
    pub trace: Option<Box<RequestTrace>>,
    /// On a split route: the chosen service (index into `route.split.services`).
    pub split_service: Option<usize>,
    /// The split's sticky cookie is to be set on the response.
    pub split_set_cookie: bool,
    /// On a `sticky:` service: the upstream (index into `members`) the request's cookie
    /// named, if it still is a member. A response from any other upstream sets the cookie.
    pub sticky_named: Option<usize>,
    /// A mirrored copy of this request, collecting its body.
    pub mirror_copy: Option<Box<crate::mirror::PendingCopy>>,
    /// Whether this request's copy was already decided (and begun or not).
    pub mirror_decided: bool,
}

impl Ctx {
    pub fn new() -> Box<Ctx> {
        let now = Instant::now();
        Box::new(Ctx {
            start: now,
            rt: None,
            route: None,
            request_id: http::HeaderValue::from_static(""),
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            members: None,
            tried: smallvec::SmallVec::new(),
            attempt_recorded: true,
            ticket: None,
            upstream_guard: None,
            service_guard: None,
            error: None,
            own_status: 0,
            body_seen: 0,
            claims: None,
            claims_from: None,
            consumer: None,
            rate: None,
            retrying_status: false,
            websocket: false,
            drop_connection: false,
            cache: None,
            cache_fill: None,
            cache_collector: None,
            cache_stale: None,
            cache_revalidated: None,
            cache_status: None,
            attempt_start: now,
            trace: None,
            split_service: None,
            split_set_cookie: false,
            sticky_named: None,
            mirror_copy: None,
            mirror_decided: false,
        })
    }

    /// The matched route (of the request's own snapshot).
    pub fn route(&self) -> Option<&Route> {
        self.rt.as_deref()?.routes.get(self.route?)
    }

    /// The request's service: the matched route's, or the one its split chose.
    pub fn service(&self) -> Option<&ServiceRuntime> {
        let route = self.route()?;
        match (self.split_service, &route.split) {
            (Some(i), Some(split)) => split.services.get(i).map(|s| &**s),
            _ => route.service.as_deref(),
        }
    }

    /// The metric children for this request's route and service.
    pub fn route_metrics(&self) -> Option<&crate::metrics::RouteMetrics> {
        let route = self.route()?;
        match (self.split_service, &route.split) {
            (Some(i), Some(split)) => split.metrics.get(i),
            (None, Some(_)) => None,
            _ => Some(&route.metrics),
        }
    }

    /// The upstream of the current (or last) attempt.
    pub fn upstream(&self) -> Option<&Upstream> {
        self.members.as_deref()?.upstreams.get(*self.tried.last()?)
    }

    /// The route's name, or `none` before (or without) a match: the metric label.
    pub fn route_label(&self) -> &str {
        self.route().map_or("none", |r| &r.name)
    }

    /// The request id as text (sane client ids and generated ones are ASCII).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
}
