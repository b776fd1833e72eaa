//! The `ProxyHttp` implementation: each phase calls into the file that owns it.
//!
//! ```text
//! early_request_filter    snapshot; arm compression when some route uses it
//! request_filter          request.rs: request id, client IP, route (404/405/400), IP
//!                         rules (403), CORS preflight (204/403), WebSocket policy (403),
//!                         claim headers stripped, JWT + require_claims (401/403/503),
//!                         rate limits (429), body limit (413); cache.rs: hit served here
//! request_body_filter     body limit on streamed bodies (413)
//! upstream_peer           attempt.rs: selector (healthy, breaker admits, untried) → peer;
//!                         forward.rs: Pingora's hop-by-hop policy skipped where idle
//! fail_to_connect         attempt.rs: outcome (metric + breaker); retry elsewhere
//! upstream_request_filter forward.rs: strip_prefix, X-Forwarded-*, X-Real-IP,
//!                         X-Request-Id, claims, Connection, request header rules
//! upstream_response_filter attempt.rs: outcome, retry an idempotent 5xx elsewhere;
//!                         cache.rs: may this response be stored?
//! upstream_response_body_filter  cache.rs: collect, store at the end
//! error_while_proxy       attempt.rs: outcome; retry what is safe to repeat
//! response_filter         response.rs: X-Request-Id, RateLimit-*, X-Cache, CORS,
//!                         response header rules, compression per route
//! fail_to_proxy           error.rs: the one error → status/JSON mapping
//! logging                 metrics + access log
//! ```

mod attempt;
mod authn;
mod cache;
mod ctx;
mod forward;
mod mirror;
mod request;
mod response;
mod timer;
mod validate;

pub use ctx::Ctx;

use crate::access_log;
use crate::error::{self, GatewayError};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

pub struct Gateway {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    /// Whether to set up Pingora's response compression module. Pingora's default sets
    /// it up, disabled, for every service, and it then builds, filters and drops a
    /// module context on every request whether or not anything is compressed. So the
    /// server asks for it only when the starting config has a route with
    /// `compression: true`, and the reloader reports turning it on later as needing a
    /// binary upgrade.
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
        Ctx::new()
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<()> {
        timer::anchor_timer_wheel();
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
        // The client's side of the connection: a request that half-closes after sending
        // is still answered (RFC 9112 §9.6); requests it pipelines are served in order;
        // each read of a body and each write of a response is bounded; the connection is
        // kept for the next request for `keepalive` (a head that then begins has
        // `client_header`, set on the listener).
        session.set_abort_on_close(false);
        session.set_pipelining_enabled(true);
        if session.get_keepalive().is_some() {
            // (Not for a request that asked to close, or HTTP/1.0 without keep-alive.)
            session.set_keepalive(Some(rt.keepalive_secs));
        }
        session.set_read_timeout(Some(rt.timeouts.client_body));
        session.set_write_timeout(Some(rt.timeouts.send));
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
        if let Some(t) = &rt.tracer {
            ctx.trace = Some(t.start(session.req_header()));
        }
        self.identify(session, ctx, &rt);
        if let Err(e) = validate::check_head(session, &rt.limits) {
            // The connection's framing is not to be trusted any further.
            session.set_keepalive(None);
            self.respond_error(session, ctx, e).await?;
            return Ok(true);
        }
        match self.admit(session, ctx, &rt).await {
            Ok(request::Admit::Proxy) => match validate::prefetch_body(session).await {
                Ok(()) => Ok(false),
                Err(e) => {
                    session.set_keepalive(None);
                    if crate::error::client_gone(&e) {
                        return Err(e);
                    }
                    self.respond_error(session, ctx, crate::error::classify(&e))
                        .await?;
                    Ok(true)
                }
            },
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
        end_of_stream: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        drained(ctx)?;
        let limit = ctx.rt.as_ref().and_then(|rt| rt.max_request_body);
        if let (Some(limit), Some(chunk)) = (limit, body.as_ref()) {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > limit {
                ctx.error = Some(GatewayError::BodyTooLarge);
                return Error::e_explain(HTTPStatus(413), "request body over max_request_body");
            }
        }
        if ctx.mirror_copy.is_some() {
            self.mirror_body(body, end_of_stream, ctx);
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        self.next_peer(session, ctx)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Box<Ctx>,
        e: Box<Error>,
    ) -> Box<Error> {
        self.connect_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        _client_reused: bool,
    ) -> Box<Error> {
        self.proxy_failed(session, ctx, peer, e)
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
        drained(ctx)?;
        let limit = ctx
            .rt
            .as_ref()
            .map_or(usize::MAX, |rt| rt.limits.response_head);
        if validate::response_head_size(&resp.headers) > limit {
            ctx.error = Some(GatewayError::UpstreamFailed);
            return Error::e_explain(
                HTTPStatus(502),
                "upstream response head larger than server.limits.response_head",
            );
        }
        self.upstream_status(session, ctx, resp.status.as_u16())?;
        if ctx.cache_stale.is_some() && self.cache_revalidated(session, resp, ctx) {
            // fail_to_proxy serves the refreshed entry.
            return Error::e_explain(
                ErrorType::CustomCode("revalidated", 304),
                "stored response confirmed by the upstream",
            );
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
        drained(ctx)?;
        self.cache_response_body(body, end_of_stream, ctx);
        Ok(None)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        forward::upstream_request(session, upstream, ctx)?;
        if ctx.route().is_some_and(|r| r.mirror.is_some()) {
            self.mirror_begin(upstream, ctx);
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
        if error::client_gone(e) {
            // Nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        if self.serve_revalidated(session, ctx).await {
            return FailToProxy {
                error_code: ctx.own_status,
                can_reuse_downstream: true,
            };
        }
        let err = ctx.error.take().unwrap_or_else(|| error::classify(e));
        let code = err.status();
        // The connection is not reused after an error: say so.
        session.set_keepalive(None);
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
            request::request_host(req).unwrap_or("-"),
            ctx.request_id()
        )
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Box<Ctx>, _e: &Error) -> bool {
        // Conditions the gateway answered on purpose are not errors of the gateway.
        matches!(
            ctx.error,
            Some(GatewayError::NoHealthyUpstream { .. } | GatewayError::BodyTooLarge)
        ) || ctx.cache_status == Some(crate::cache::CacheStatus::Revalidated)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        let status = session
            .response_written()
            .map_or(ctx.own_status, |r| r.status.as_u16());
        let route = ctx.route();
        let route_name = route.map_or("none", |r| &*r.name);
        let service = ctx.service().map_or("none", |s| &*s.name);
        let elapsed = ctx.start.elapsed();
        self.metrics.record_request(
            ctx.route_metrics(),
            [route_name, service],
            &session.req_header().method,
            status,
            elapsed.as_secs_f64(),
            [
                session.as_ref().body_bytes_read() as u64,
                session.body_bytes_sent() as u64,
            ],
        );
        if let Some(rt) = ctx.rt.as_deref() {
            self.count_cache(ctx);
            let upstream = ctx.upstream().map(|u| &*u.state.address);
            access_log::write(
                &rt.access_log,
                &access_log::Entry {
                    req: session.req_header(),
                    body_bytes_sent: session.body_bytes_sent(),
                    request_id: ctx.request_id(),
                    trace_id: ctx.trace.as_deref().map(|t| t.trace_id_hex()),
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
        if let Some(trace) = ctx.trace.take() {
            self.finish_trace(session, ctx, trace, status);
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
    /// Queue a sampled request's spans for export.
    fn finish_trace(
        &self,
        session: &Session,
        ctx: &Ctx,
        trace: Box<crate::tracing::RequestTrace>,
        status: u16,
    ) {
        let (Some(rt), true) = (ctx.rt.as_deref(), trace.sampled) else {
            return;
        };
        let Some(tracer) = &rt.tracer else {
            return;
        };
        let req = session.req_header();
        let route = ctx.route();
        let auth = if ctx.claims.is_some() || ctx.consumer.is_some() {
            "ok"
        } else if matches!(
            ctx.error,
            Some(
                GatewayError::Unauthorized(_)
                    | GatewayError::Unauthenticated { .. }
                    | GatewayError::ForwardDenied(_)
                    | GatewayError::AuthUnavailable
            )
        ) {
            "refused"
        } else {
            "none"
        };
        let rate_limit = match ctx.error {
            Some(GatewayError::RateLimited(_)) => Some("limited"),
            _ => ctx.rate.as_ref().map(|_| "ok"),
        };
        let finished = crate::tracing::Finished {
            trace,
            end: std::time::SystemTime::now(),
            method: req.method.clone(),
            path: req.uri.path().to_string(),
            host: request::request_host(req).map(str::to_string),
            status,
            route: route.map(|r| r.name.clone()),
            service: route
                .and_then(|r| r.service.as_ref())
                .map(|s| s.name.clone()),
            client_ip: ctx.client_ip,
            request_id: ctx.request_id.clone(),
            auth,
            rate_limit,
            error: ctx.error.as_ref().map(GatewayError::code),
            cache: ctx.cache_status.map(|c| c.label()),
            consumer: ctx.consumer.as_ref().map(|c| c.name.clone()),
        };
        if let Err(dropped) = tracer.finish(finished) {
            self.metrics.spans_dropped.inc_by(dropped);
        }
    }
}

/// A request still on an upstream that left its service (a reload or a DNS change) and
/// whose drain time ran out is cut here: when its answer arrives, or at its next body
/// chunk either way.
fn drained(ctx: &mut Ctx) -> Result<()> {
    if ctx.upstream().is_some_and(|u| u.state.drain_expired()) {
        ctx.error = Some(GatewayError::UpstreamFailed);
        return Error::e_explain(
            ConnectionClosed,
            "the upstream left its service and its drain_timeout ran out",
        );
    }
    Ok(())
}
