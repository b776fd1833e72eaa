//! The thin `ProxyHttp` glue: one call into a module per phase.
//!
//! ```text
//! request_filter          snapshot, request id, client IP, route (404/405/400), body limit,
//!                         claim headers stripped, JWT + require_claims (401/403/503),
//!                         rate limits (429, or 503 when a shared store fails closed)
//! upstream_peer           service → selector (healthy, breaker admits, untried) → HttpPeer
//! fail_to_connect         attempt outcome (metric + breaker); retry elsewhere (any method)
//! upstream_request_filter strip_prefix, X-Forwarded-*, X-Real-IP, X-Request-Id, claims
//! upstream_response_filter attempt outcome (5xx but 501 = failure); retry idempotent 5xx
//! error_while_proxy       attempt outcome; retry idempotent requests before any response
//! response_filter         X-Request-Id, RateLimit-*
//! fail_to_proxy           the one error → status/JSON mapping (error.rs)
//! logging                 request metrics + access log
//! ```

use crate::access_log;
use crate::auth::{self, Claims};
use crate::breaker::Ticket;
use crate::config::Balance;
use crate::error::{json_body, GatewayError};
use crate::headers;
use crate::metrics::{method_label, status_label, Metrics, Outcome};
use crate::ratelimit::{Check, KeySpec, RateHeaders};
use crate::routing::{self, Match};
use crate::runtime::Runtime;
use crate::upstream::{InflightGuard, Selection, ServiceRuntime};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::ErrorSource;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(runtime: Arc<ArcSwap<Runtime>>, metrics: Arc<Metrics>) -> Self {
        Gateway { runtime, metrics }
    }
}

/// Per-request state. Guards release in-flight counts when the request ends, however
/// it ends.
pub struct Ctx {
    start: Instant,
    rt: Option<Arc<Runtime>>,
    route: Option<usize>,
    request_id: String,
    peer_ip: Option<IpAddr>,
    peer_trusted: bool,
    client_ip: Option<IpAddr>,
    /// Upstreams (indices into the service) this request was sent to, in order.
    tried: Vec<usize>,
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
}

impl Ctx {
    fn route<'a>(&self, rt: &'a Runtime) -> Option<&'a routing::Route> {
        self.route.map(|i| &rt.routes.routes()[i])
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            rt: None,
            route: None,
            request_id: String::new(),
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            tried: Vec::new(),
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
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = self.runtime.load_full();
        let req = session.req_header();
        ctx.request_id = match req.headers.get("x-request-id") {
            Some(v) if headers::sane_request_id(v.as_bytes()) => {
                // sane ids are ASCII by construction
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            }
            _ => headers::new_request_id(),
        };
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(peer) = ctx.peer_ip {
            ctx.peer_trusted = headers::is_trusted(peer, &rt.trusted_proxies);
            let xff = req.headers.get("x-forwarded-for").map(|v| v.as_bytes());
            ctx.client_ip = Some(headers::client_ip(peer, xff, &rt.trusted_proxies));
        }

        let outcome = match request_host(req) {
            None => Err(GatewayError::BadRequest),
            Some(host) => {
                let host = routing::normalise_host(host);
                match rt.routes.lookup(&host, req.uri.path(), &req.method) {
                    Match::Found(route) => Ok(route),
                    Match::MethodNotAllowed(allow) => Err(GatewayError::MethodNotAllowed(allow)),
                    Match::NotFound => Err(GatewayError::NoRoute),
                    Match::BadPath => Err(GatewayError::BadPath),
                }
            }
        };
        let route = match outcome {
            Ok(route) => route,
            Err(e) => {
                ctx.rt = Some(rt);
                self.respond_error(session, ctx, e).await?;
                return Ok(true);
            }
        };
        // `Route` lives in the snapshot; keep its index, not a borrow.
        ctx.route = Some(route.index);
        let route_name = route.name.clone();

        // Identity headers are the gateway's to set: never trust a client's copy.
        let req = session.req_header_mut();
        for h in &rt.claim_headers {
            req.remove_header(h);
        }
        if let Some(Some(ra)) = rt.route_auth.get(route.index) {
            let header = req
                .headers
                .get(header::AUTHORIZATION)
                .map_or(&b""[..], |v| v.as_bytes());
            let verdict = auth::bearer_token(header)
                .and_then(|token| ra.verifier.verify(token, unix_now()))
                .map_err(GatewayError::Unauthorized)
                .and_then(|claims| {
                    let ok = ra
                        .require_claims
                        .iter()
                        .all(|(name, allowed)| claims.matches(name, allowed));
                    if ok {
                        Ok(claims)
                    } else {
                        Err(GatewayError::Forbidden)
                    }
                });
            match verdict {
                Ok(claims) => ctx.claims = Some(claims),
                Err(e) => {
                    let reason = e.code();
                    if matches!(e, GatewayError::Unauthorized(_)) {
                        self.metrics
                            .auth_failures
                            .with_label_values(&[&route_name, reason])
                            .inc();
                    }
                    ctx.rt = Some(rt);
                    self.respond_error(session, ctx, e).await?;
                    return Ok(true);
                }
            }
        }

        if let Some(policies) = rt.route_limits.get(route.index).filter(|p| !p.is_empty()) {
            if let Err(e) = self
                .rate_limit(session, ctx, &route_name, policies, &rt)
                .await
            {
                ctx.rt = Some(rt);
                self.respond_error(session, ctx, e).await?;
                return Ok(true);
            }
        }

        if let Some(limit) = rt.max_request_body {
            let declared = session
                .req_header()
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                ctx.rt = Some(rt);
                // The body stays unread: close rather than reuse the connection.
                session.set_keepalive(None);
                self.respond_error(session, ctx, GatewayError::BodyTooLarge)
                    .await?;
                return Ok(true);
            }
        }
        ctx.rt = Some(rt);
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
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

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
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
        Ok(Box::new(svc.peer(i)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
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
        ctx: &mut Ctx,
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
        ctx: &mut Ctx,
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
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
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
        if let Some(peer) = ctx.peer_ip {
            let incoming = session
                .req_header()
                .headers
                .get("x-forwarded-for")
                .map(|v| v.as_bytes());
            let xff = headers::forwarded_for(peer, incoming, ctx.peer_trusted);
            upstream.insert_header("x-forwarded-for", xff)?;
        }
        if let Some(client) = ctx.client_ip {
            upstream.insert_header("x-real-ip", client.to_string())?;
        }
        let keep_forwarded = ctx.peer_trusted;
        if !(keep_forwarded && upstream.headers.contains_key("x-forwarded-proto")) {
            let tls = session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .is_some();
            upstream.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
        }
        if !(keep_forwarded && upstream.headers.contains_key("x-forwarded-host")) {
            if let Some(host) = request_host(session.req_header()) {
                let host = host.to_string();
                upstream.insert_header("x-forwarded-host", host)?;
            }
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let (Some(claims), Some(Some(ra))) =
            (&ctx.claims, ctx.route.and_then(|i| rt.route_auth.get(i)))
        {
            for (claim, name) in ra.verifier.claims_to_headers() {
                let Some(value) = claims.get_str(claim) else {
                    continue;
                };
                // A claim that is not a valid header value is not forwarded.
                if let Ok(v) = http::HeaderValue::from_str(&value) {
                    upstream.insert_header(name.clone(), v)?;
                }
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(rate) = &ctx.rate {
            for (name, value) in crate::error::rate_headers(rate) {
                resp.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
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

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _e: &Error) -> bool {
        // Conditions the gateway answered on purpose are not errors of the gateway.
        matches!(
            ctx.error,
            Some(GatewayError::NoHealthyUpstream { .. } | GatewayError::BodyTooLarge)
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map_or(ctx.own_status, |r| r.status.as_u16());
        let rt = ctx.rt.as_deref();
        let route = rt.and_then(|rt| ctx.route(rt));
        let (route_name, service) =
            route.map_or(("none", "none"), |r| (&*r.name, &*r.service_name));
        let method = method_label(&session.req_header().method);
        self.metrics
            .requests
            .with_label_values(&[route_name, service, method, status_label(status)])
            .inc();
        let elapsed = ctx.start.elapsed();
        self.metrics
            .duration
            .with_label_values(&[route_name, service])
            .observe(elapsed.as_secs_f64());
        if let Some(rt) = rt {
            let upstream = route
                .zip(ctx.tried.last())
                .map(|(r, &i)| &*rt.services[r.service].upstreams[i].state.address);
            access_log::write(
                rt.access_log,
                &access_log::Entry {
                    session,
                    request_id: &ctx.request_id,
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
        // An attempt without an outcome (the client left) gives its probe slot back.
        ctx.ticket = None;
    }
}

impl Gateway {
    /// Charge every policy of the route in one store call; all must allow.
    async fn rate_limit(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        route_name: &str,
        policies: &[Arc<crate::ratelimit::Policy>],
        rt: &Runtime,
    ) -> std::result::Result<(), GatewayError> {
        let req = session.req_header();
        let ip = ctx
            .client_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let claims = ctx.claims.as_deref();
        let claim = |name: &str| claims.and_then(|c| c.get_str(name));
        let keys: Vec<String> = policies
            .iter()
            .map(|p| match &p.key {
                KeySpec::ClientIp | KeySpec::Global => p.key.bucket_key(None, ip),
                KeySpec::Jwt(c) => p.key.bucket_key(claim(c).as_deref(), ip),
                KeySpec::Header(h) => p
                    .key
                    .bucket_key(req.headers.get(h).and_then(|v| v.to_str().ok()), ip),
                KeySpec::Route => p.key.bucket_key(Some(route_name), ip),
            })
            .collect();
        let checks: Vec<Check> = policies
            .iter()
            .zip(&keys)
            .map(|(p, key)| {
                let tier = p.tiers.as_ref().and_then(|t| claim(&t.claim));
                Check {
                    policy: p,
                    key,
                    params: p.params_for(tier.as_deref()),
                }
            })
            .collect();
        let decision = rt.rate_store.check(&checks).await;
        if decision.allowed {
            ctx.rate = decision.headers;
            return Ok(());
        }
        let policy = decision.rejected_by.as_deref().unwrap_or("store");
        self.metrics
            .rate_limited
            .with_label_values(&[route_name, policy])
            .inc();
        match decision.headers {
            Some(h) => Err(GatewayError::RateLimited(Box::new(h))),
            None => Err(GatewayError::RateLimitUnavailable),
        }
    }

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
        self.metrics
            .record_attempt(&svc.name, &svc.upstreams[i].state.address, outcome);
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

    /// Write an error response (JSON body, `X-Request-Id`, extra headers).
    async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        err: GatewayError,
    ) -> Result<()> {
        let body = json_body(err.code(), &ctx.request_id);
        let status = err.status();
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header(header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        for (name, value) in err.extra_headers() {
            resp.insert_header(name, value)?;
        }
        ctx.own_status = status;
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `Host` header, or the authority of an absolute-form request target.
fn request_host(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(header::HOST) {
        Some(v) => std::str::from_utf8(v.as_bytes()).ok(),
        None => Some(req.uri.authority().map_or("", |a| a.as_str())),
    }
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

/// The bytes a consistent-hash service hashes; other balancers ignore the key.
fn hash_key(session: &Session, ctx: &Ctx, key: &crate::config::HashKey) -> Vec<u8> {
    use crate::config::HashKey;
    let req = session.req_header();
    let from_ip = || {
        ctx.client_ip
            .map(|ip| ip.to_string().into_bytes())
            .unwrap_or_default()
    };
    match key {
        HashKey::ClientIp => from_ip(),
        HashKey::Header(name) => req
            .headers
            .get(name)
            .map_or_else(from_ip, |v| v.as_bytes().to_vec()),
        HashKey::Cookie(name) => cookie(req, name).map_or_else(from_ip, |v| v.to_vec()),
        HashKey::Claim(name) => ctx
            .claims
            .as_ref()
            .and_then(|c| c.get_str(name))
            .map_or_else(from_ip, |v| v.as_bytes().to_vec()),
    }
}

fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}
