//! The thin `ProxyHttp` glue: one call into a module per phase. The request-side steps
//! live in [`request`], the response-side ones in [`response`].
//!
//! ```text
//! early_request_filter    snapshot; arm compression when some route uses it
//! request_filter          request id, client IP, route (404/405/400), IP rules (403),
//!                         CORS preflight (204/403), WebSocket policy (403), claim headers
//!                         stripped, JWT + require_claims (401/403/503), rate limits (429),
//!                         body limit (413), response cache (HIT served here)
//! upstream_peer           service → selector (healthy, breaker admits, untried) → HttpPeer;
//!                         Pingora's hop-by-hop policy skipped where it has nothing to do
//! fail_to_connect         attempt outcome (metric + breaker); retry elsewhere (any method)
//! upstream_request_filter strip_prefix, X-Forwarded-*, X-Real-IP, X-Request-Id, claims,
//!                         Connection (when the policy was skipped), request header rules
//! upstream_response_filter attempt outcome (5xx but 501 = failure); retry idempotent 5xx;
//!                         cache: may this response be stored?
//! upstream_response_body_filter  cache: collect, store at the end
//! error_while_proxy       attempt outcome; retry idempotent requests before any response
//! response_filter         X-Request-Id, RateLimit-*, X-Cache, CORS, response header rules,
//!                         compression per route
//! fail_to_proxy           the one error → status/JSON mapping (error.rs)
//! logging                 request metrics + access log
//! ```

mod request;
mod response;

use request::{hash_key, request_host};

use crate::access_log;
use crate::auth::Claims;
use crate::breaker::Ticket;
use crate::cache::{BodyCollector, FillGuard, RouteCache};
use crate::config::Balance;
use crate::error::GatewayError;
use crate::headers::{
    self, HopByHop, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID,
};
use crate::metrics::{Metrics, Outcome};
use crate::ratelimit::RateHeaders;
use crate::routing;
use crate::runtime::Runtime;
use crate::upstream::{InflightGuard, Selection, ServiceRuntime};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::ErrorSource;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    /// Whether to set up Pingora's response compression module. Pingora's default sets
    /// it up, disabled, for every service; it then builds, filters and drops a module
    /// context on every request (~650 instructions, callgrind) whether or not anything
    /// is compressed. So the server asks for it only when the starting config has a
    /// route with `compression: true`, and the reloader reports turning it on later as
    /// needing a binary upgrade.
    compression_module: bool,
}

impl Gateway {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Arc<Metrics>,
        compression_module: bool,
    ) -> Self {
        Gateway {
            runtime,
            metrics,
            compression_module,
        }
    }
}

/// Per-request state. Guards release in-flight counts when the request ends, however
/// it ends. Pingora keeps the context by value in its per-request future, in three
/// places (the future's argument and two locals), and copies that whole future into a
/// new heap allocation on every request; so the context it holds is a `Box<Ctx>`
/// (8 bytes, one allocation) rather than this ~380-byte struct, and the large state of
/// cached routes is boxed again inside it.
pub struct Ctx {
    start: Instant,
    rt: Option<Arc<Runtime>>,
    route: Option<usize>,
    /// `X-Request-Id`: the client's (when sane) or a new one; cloning shares it.
    request_id: http::HeaderValue,
    peer_ip: Option<IpAddr>,
    peer_trusted: bool,
    client_ip: Option<IpAddr>,
    /// Upstreams (indices into the service) this request was sent to, in order.
    tried: smallvec::SmallVec<[usize; 4]>,
    /// Whether the current attempt's outcome is already counted.
    attempt_recorded: bool,
    /// The current attempt's hold on its upstream's circuit breaker.
    ticket: Option<Ticket>,
    upstream_guard: Option<InflightGuard>,
    service_guard: Option<InflightGuard>,
    /// The answer `fail_to_proxy` gives, when a phase already knows it.
    error: Option<GatewayError>,
    /// Status of a response the gateway wrote itself.
    own_status: u16,
    body_seen: u64,
    /// Claims of the verified token on an auth route.
    claims: Option<Arc<Claims>>,
    /// `RateLimit-*` values of the tightest policy, added to the response.
    rate: Option<RateHeaders>,
    /// The last attempt's 5xx was turned into an error to retry it elsewhere.
    retrying_status: bool,
    /// A WebSocket upgrade on a route that allows it.
    websocket: bool,
    /// Pingora's upstream request policy is skipped for this request, and all it would
    /// have done is remove `Connection`: `upstream_request_filter` does that.
    drop_connection: bool,
    cache: Option<Arc<RouteCache>>,
    /// This request fills the cache entry others may be waiting for.
    cache_fill: Option<Box<FillGuard>>,
    cache_collector: Option<Box<BodyCollector>>,
    /// `X-Cache` value on cached routes.
    cache_status: Option<&'static str>,
}

impl Ctx {
    fn route<'a>(&self, rt: &'a Runtime) -> Option<&'a routing::Route> {
        self.route.map(|i| &rt.routes.routes()[i])
    }

    /// The request id as text (sane client ids and generated ones are ASCII).
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Box<Ctx>;

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        if self.compression_module {
            // Disabled here; armed per request in early_request_filter.
            modules.add_module(ResponseCompressionBuilder::enable(0));
        }
    }

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx {
            start: Instant::now(),
            rt: None,
            route: None,
            request_id: http::HeaderValue::from_static(""),
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            tried: smallvec::SmallVec::new(),
            attempt_recorded: true,
            ticket: None,
            upstream_guard: None,
            service_guard: None,
            error: None,
            own_status: 0,
            body_seen: 0,
            claims: None,
            rate: None,
            retrying_status: false,
            websocket: false,
            drop_connection: false,
            cache: None,
            cache_fill: None,
            cache_collector: None,
            cache_status: None,
        })
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<()> {
        anchor_timer_wheel();
        let rt = self.runtime.load_full();
        if rt.any_compression {
            // The compression module reads Accept-Encoding before request_filter runs, so
            // it is armed here and disarmed per response for routes that do not compress.
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(response::COMPRESSION_LEVEL);
                // Pingora 0.9.1's brotli encoder never terminates its stream (strict
                // decoders reject it), so brotli stays off; gzip and zstd are complete.
                c.adjust_algorithm_level(Algorithm::Brotli, 0);
            }
        }
        ctx.rt = Some(rt);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        let rt = match &ctx.rt {
            Some(rt) => rt.clone(),
            None => {
                let rt = self.runtime.load_full();
                ctx.rt = Some(rt.clone());
                rt
            }
        };
        self.identify(session, ctx, &rt);
        match self.admit(session, ctx, &rt).await {
            Ok(request::Admit::Proxy) => Ok(false),
            Ok(request::Admit::Served) => Ok(true),
            Err(e) => {
                self.respond_error(session, ctx, e).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let limit = ctx.rt.as_ref().and_then(|rt| rt.max_request_body);
        if let (Some(limit), Some(chunk)) = (limit, body.as_ref()) {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > limit {
                ctx.error = Some(GatewayError::BodyTooLarge);
                return Error::e_explain(HTTPStatus(413), "request body over max_request_body");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        let rt = ctx
            .rt
            .clone()
            .ok_or_else(|| Error::explain(InternalError, "no runtime snapshot"))?;
        let route = ctx
            .route(&rt)
            .ok_or_else(|| Error::explain(InternalError, "no route"))?;
        let svc = &rt.services[route.service];
        if ctx.service_guard.is_none() {
            ctx.service_guard = Some(svc.inflight.begin());
            svc.retry_budget.deposit();
        }
        let key = if svc.config.balance == Balance::ConsistentHash {
            hash_key(session, ctx, &svc.config.hash_key)
        } else {
            Vec::new()
        };
        let (i, ticket) = match svc.select(&key, &ctx.tried) {
            Selection::Chosen(i, ticket) => (i, ticket),
            Selection::Unavailable { retry_after } => {
                ctx.error = Some(GatewayError::NoHealthyUpstream { retry_after });
                return Error::e_explain(HTTPStatus(503), "no healthy upstream");
            }
        };
        ctx.tried.push(i);
        ctx.attempt_recorded = false;
        ctx.ticket = Some(ticket);
        ctx.upstream_guard = Some(svc.upstreams[i].state.inflight.begin());
        let mut peer = svc.peer(i);
        // Pingora's standard upstream request policy costs ~3,300 instructions a request
        // even when there is nothing to strip; where it would change nothing, or only
        // remove `Connection`, the peer says "preserve" and upstream_request_filter
        // removes `Connection` itself. Anything else gets Pingora's policy, unchanged.
        let hop = headers::hop_by_hop(&session.req_header().headers);
        if hop != HopByHop::Other {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        }
        ctx.drop_connection = hop == HopByHop::PersistenceOnly;
        if ctx.websocket {
            // A WebSocket may stay quiet far longer than an HTTP read: its inactivity
            // limit is the service's `idle` timeout, both ways.
            let idle = Some(svc.config.timeouts.idle);
            peer.options.read_timeout = idle;
            peer.options.write_timeout = idle;
            session.set_read_timeout(idle);
            session.set_write_timeout(idle);
        }
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let outcome = match e.etype() {
            ConnectTimedout => Outcome::Timeout,
            ConnectRefused => Outcome::Refused,
            _ => Outcome::Error,
        };
        self.finish_attempt(ctx, outcome);
        ctx.upstream_guard = None;
        // Nothing reached the upstream: any method may go to another upstream, and the
        // retry adds no upstream load, so it is bounded by `attempts` only.
        e.set_retry(attempts_left(ctx));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        _client_reused: bool,
    ) -> Box<Error> {
        let outcome = match e.etype() {
            ReadTimedout | WriteTimedout => Outcome::Timeout,
            _ => Outcome::Error,
        };
        // A 5xx already counted in upstream_response_filter is not counted twice.
        self.finish_attempt(ctx, outcome);
        ctx.upstream_guard = None;
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut ctx.retrying_status) {
            // upstream_response_filter already decided (and spent the budget): a 5xx
            // it turned into this error is retried, never answered as an error.
            e.set_retry(true);
            return e;
        }
        // The upstream may have acted on the request: retry only what is safe to repeat,
        // whose body can be replayed, before anything reached the client.
        let safe = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none();
        e.set_retry(safe && self.may_retry(ctx));
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        let code = resp.status.as_u16();
        let failed = code >= 500 && code != 501;
        self.finish_attempt(ctx, if failed { Outcome::Error } else { Outcome::Ok });
        if failed
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none()
            && self.another_upstream_exists(ctx)
            && self.may_retry(ctx)
        {
            // Not sent downstream: error_while_proxy sees this and the loop retries.
            ctx.retrying_status = true;
            return Error::e_explain(HTTPStatus(code), "upstream 5xx, retrying elsewhere");
        }
        self.cache_response_header(session, resp, ctx);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<std::time::Duration>> {
        self.cache_response_body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        let rt = ctx
            .rt
            .as_ref()
            .ok_or_else(|| Error::explain(InternalError, "no runtime snapshot"))?;
        if let Some(route) = ctx.route(rt) {
            if route.strip_prefix {
                let original = session
                    .req_header()
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str());
                let stripped = routing::strip_prefix(route, original);
                if stripped != original {
                    let uri = stripped
                        .parse::<http::Uri>()
                        .map_err(|e| Error::because(InternalError, "rewritten path", e))?;
                    upstream.set_uri(uri);
                }
            }
        }
        let claim_headers = ctx
            .claims
            .as_deref()
            .zip(ctx.route.and_then(|i| rt.route_auth.get(i)?.as_ref()))
            .map(|(claims, ra)| (claims, ra.verifier.claims_to_headers()));
        add_forwarded_headers(session, upstream, ctx, claim_headers)?;
        if ctx.cache_fill.is_some() {
            // The cache needs a full response to store, not a 304 for this client.
            upstream.remove_header(&header::IF_NONE_MATCH);
            upstream.remove_header(&header::IF_MODIFIED_SINCE);
        }
        if let Some(i) = ctx.route {
            let rules = &rt.config.route_extras[i].request_headers;
            if !rules.is_empty() {
                let vars = response::Vars::new(session.req_header(), ctx);
                rules.apply(&mut response::ReqSink(upstream), &vars);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.decorate(session, resp, ctx);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        let err = ctx.error.take().unwrap_or_else(|| classify(e));
        if matches!(e.esource(), ErrorSource::Downstream)
            && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
        {
            // The client is gone; nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let code = err.status();
        if session.response_written().is_none() {
            if let Err(write_err) = self.respond_error(session, ctx, err).await {
                log::debug!("could not send error response: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error and retry log lines say about a request: never the
    /// query string (tokens travel there) nor any header value.
    fn request_summary(&self, session: &Session, ctx: &Box<Ctx>) -> String {
        let req = session.req_header();
        format!(
            "{} {}, host: {}, request_id: {}",
            req.method,
            req.uri.path(),
            request_host(req).unwrap_or("-"),
            ctx.request_id()
        )
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Box<Ctx>, _e: &Error) -> bool {
        // Conditions the gateway answered on purpose are not errors of the gateway.
        matches!(
            ctx.error,
            Some(GatewayError::NoHealthyUpstream { .. } | GatewayError::BodyTooLarge)
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        let status = session
            .response_written()
            .map_or(ctx.own_status, |r| r.status.as_u16());
        let rt = ctx.rt.as_deref();
        let route = rt.and_then(|rt| ctx.route(rt));
        let (route_name, service) =
            route.map_or(("none", "none"), |r| (&*r.name, &*r.service_name));
        let elapsed = ctx.start.elapsed();
        let cached = rt
            .zip(ctx.route)
            .and_then(|(rt, i)| rt.route_metrics.get(i));
        self.metrics.record_request(
            cached,
            [route_name, service],
            &session.req_header().method,
            status,
            elapsed.as_secs_f64(),
        );
        if let Some(rt) = rt {
            self.count_cache_miss(ctx, rt);
            let upstream = route
                .zip(ctx.tried.last())
                .map(|(r, &i)| &*rt.services[r.service].upstreams[i].state.address);
            access_log::write(
                rt.access_log,
                &access_log::Entry {
                    session,
                    request_id: ctx.request_id(),
                    client_ip: ctx.client_ip,
                    status,
                    elapsed,
                    route: route_name,
                    service,
                    upstream,
                    attempts: ctx.tried.len(),
                },
            );
        }
        ctx.upstream_guard = None;
        ctx.service_guard = None;
        // An attempt without an outcome (the client left) gives its probe slot back,
        // and an unfinished cache fill releases its waiters.
        ctx.ticket = None;
        ctx.cache_collector = None;
        ctx.cache_fill = None;
    }
}

impl Gateway {
    /// Count the current attempt's outcome exactly once: the metric, and the breaker
    /// (anything but `Ok` is a failure).
    fn finish_attempt(&self, ctx: &mut Ctx, outcome: Outcome) {
        if ctx.attempt_recorded {
            return;
        }
        ctx.attempt_recorded = true;
        if let Some(ticket) = ctx.ticket.take() {
            ticket.record(outcome == Outcome::Ok);
        }
        let (Some(svc), Some(&i)) = (service(ctx), ctx.tried.last()) else {
            return;
        };
        let state = &svc.upstreams[i].state;
        let counters = state
            .attempt_counters
            .get_or_init(|| self.metrics.attempt_counters(&svc.name, &state.address));
        counters[outcome.index()].inc();
    }

    /// Whether a request the upstream already received may be sent again: within the
    /// first try plus `retries`, and within the service's retry budget (which this
    /// call spends), so failing upstreams do not face a retry storm.
    fn may_retry(&self, ctx: &Ctx) -> bool {
        attempts_left(ctx) && service(ctx).is_some_and(|svc| svc.retry_budget.withdraw())
    }

    /// A 5xx is only worth retrying if some other upstream could answer.
    fn another_upstream_exists(&self, ctx: &Ctx) -> bool {
        service(ctx).is_some_and(|svc| svc.upstreams.len() > 1)
    }
}

/// Whether the first try plus `retries` leaves another attempt.
fn attempts_left(ctx: &Ctx) -> bool {
    service(ctx).is_some_and(|svc| ctx.tried.len() <= svc.config.retries as usize)
}

/// The service of the matched route.
fn service(ctx: &Ctx) -> Option<&ServiceRuntime> {
    let rt = ctx.rt.as_deref()?;
    let route = ctx.route(rt)?;
    Some(&rt.services[route.service])
}

/// `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
/// `X-Request-Id` and the verified token's claim headers on the upstream request.
///
/// This runs on every proxied request, and Pingora's `insert_header` costs two heap
/// allocations per custom header name plus the growth of two maps (values, and the
/// original spelling of each name). So the header is taken apart once, the map grown
/// once, and the names inserted as constants; the upstream request then goes without
/// the original-spelling map: header names reach upstreams in canonical form (standard
/// ones title-cased, others lower-case), as from an HTTP/2 client. The request target
/// (absolute-form, non-UTF-8 bytes) and HTTP/2 END_STREAM choice are kept as they were.
fn add_forwarded_headers(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &Ctx,
    claim_headers: Option<(&crate::auth::Claims, &[(String, HeaderName)])>,
) -> Result<()> {
    let req = session.req_header();
    let keep_forwarded = ctx.peer_trusted;
    let verbatim_target = {
        let raw = upstream.raw_path();
        let from_uri = upstream.uri.path_and_query().map(|p| p.as_str().as_bytes());
        (!upstream.raw_path_is_utf8() || from_uri != Some(raw)).then(|| raw.to_vec())
    };
    let send_end_stream = upstream.send_end_stream();
    // No allocation: an empty map, the static "/" URI.
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
    let h = &mut parts.headers;
    h.reserve(5 + claim_headers.map_or(0, |(_, names)| names.len()));

    let mut real_ip = None;
    if let Some(peer) = ctx.peer_ip {
        // An untrusted peer's chain is replaced, not extended: no need to look it up.
        let incoming = keep_forwarded
            .then(|| req.headers.get(&X_FORWARDED_FOR))
            .flatten()
            .map(|v| v.as_bytes());
        let xff = headers::forwarded_for(peer, incoming, ctx.peer_trusted);
        if !ctx.peer_trusted {
            // Untrusted peer: X-Forwarded-For is the peer alone, and so is X-Real-IP.
            real_ip = Some(xff.clone());
        }
        h.insert(X_FORWARDED_FOR, xff);
    }
    if let Some(client) = ctx.client_ip {
        h.insert(
            X_REAL_IP,
            real_ip.unwrap_or_else(|| headers::ip_value(client)),
        );
    }
    if !(keep_forwarded && h.contains_key(&X_FORWARDED_PROTO)) {
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        let proto = if tls { "https" } else { "http" };
        h.insert(X_FORWARDED_PROTO, http::HeaderValue::from_static(proto));
    }
    if !(keep_forwarded && h.contains_key(&X_FORWARDED_HOST)) {
        // The request's own value (reference-counted, not copied).
        let host = match req.headers.get(header::HOST) {
            Some(v) => Some(v.clone()),
            None => req
                .uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()),
        };
        if let Some(host) = host {
            h.insert(X_FORWARDED_HOST, host);
        }
    }
    h.insert(X_REQUEST_ID, ctx.request_id.clone());
    if ctx.drop_connection {
        h.remove(header::CONNECTION);
    }
    if let Some((claims, names)) = claim_headers {
        for (claim, name) in names {
            // A claim that is not a valid header value is not forwarded.
            if let Some(v) = claims
                .get_str(claim)
                .and_then(|v| http::HeaderValue::from_str(&v).ok())
            {
                h.insert(name.clone(), v);
            }
        }
    }

    let mut rebuilt = RequestHeader::from(parts);
    if let Some(target) = verbatim_target {
        rebuilt.set_raw_path(&target)?;
    }
    if let Some(eos) = send_end_stream {
        rebuilt.set_send_end_stream(eos);
    }
    *upstream = rebuilt;
    Ok(())
}

/// Keep one timer pending on this worker thread's runtime: a 1 s tick that does
/// nothing. When Tokio's time driver parks, it plans its wake-up for the earliest
/// pending timer; a timer registered later that is due before that plan wakes the
/// driver with an `eventfd` write (a system call), whether or not it sleeps. Without a
/// short timer pending, every request's upstream read timeout (30 s) comes before the
/// pooled connections' idle timers (60 s) and makes that write: ~0.6 per request at a
/// moderate request rate (1-2% of the CPU per request, measured side by side). With the
/// tick pending, the plan is at most 1 s away and timers of 1 s or more (every default)
/// wake no one.
fn anchor_timer_wheel() {
    thread_local! {
        static ANCHORED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    ANCHORED.with(|anchored| {
        if anchored.replace(true) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                }
            });
        }
    });
}

/// Map a Pingora error to the answer (used when no phase set one).
fn classify(e: &Error) -> GatewayError {
    match e.etype() {
        HTTPStatus(413) => GatewayError::BodyTooLarge,
        HTTPStatus(503) => GatewayError::NoHealthyUpstream { retry_after: 1 },
        HTTPStatus(502) => GatewayError::UpstreamFailed,
        HTTPStatus(504) => GatewayError::UpstreamTimeout,
        HTTPStatus(c) if (400..500).contains(c) => GatewayError::BadRequest,
        HTTPStatus(_) => GatewayError::Internal,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            if matches!(e.esource(), ErrorSource::Downstream) {
                GatewayError::BadRequest
            } else {
                GatewayError::UpstreamTimeout
            }
        }
        _ => match e.esource() {
            ErrorSource::Upstream => GatewayError::UpstreamFailed,
            ErrorSource::Downstream => GatewayError::BadRequest,
            ErrorSource::Internal | ErrorSource::Unset => GatewayError::Internal,
        },
    }
}
