//! Upstream attempts: choosing the upstream for each try, counting each try's outcome
//! exactly once (metric and circuit breaker), and deciding whether a failed try may be
//! sent again: connect failures go to another upstream for any method; a request the
//! upstream may have acted on is repeated only when it is safe to (idempotent, its body
//! replayable, nothing sent to the client yet) and the service's retry budget allows.

use super::forward::choose_request_policy;
use super::request::hash_key;
use super::{Ctx, Gateway};
use crate::error::GatewayError;
use crate::metrics::Outcome;
use crate::upstream::{Balance, Selection};
use pingora::prelude::*;
use pingora::proxy::Session;

impl Gateway {
    /// `upstream_peer`: the next upstream for this request, with its breaker ticket and
    /// in-flight guard, as a peer carrying the service's timeouts.
    pub(super) fn next_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let rt = ctx
            .rt
            .clone()
            .ok_or_else(|| Error::explain(InternalError, "no runtime snapshot"))?;
        let route = ctx
            .route
            .and_then(|i| rt.routes.get(i))
            .ok_or_else(|| Error::explain(InternalError, "no route"))?;
        let svc = match (ctx.split_service, &route.split) {
            (Some(i), Some(split)) => split.services.get(i),
            _ => route.service.as_ref(),
        }
        .ok_or_else(|| Error::explain(InternalError, "no service"))?;
        if ctx.service_guard.is_none() {
            ctx.service_guard = Some(svc.inflight.begin());
            svc.retry_budget.deposit();
        }
        let key = if svc.config.balance == Balance::ConsistentHash {
            hash_key(session, ctx, &svc.config.hash_key)
        } else {
            Vec::new()
        };
        if ctx.members.is_none() {
            ctx.members = Some(svc.members());
        }
        let mut members = ctx
            .members
            .clone()
            .ok_or_else(|| Error::explain(InternalError, "no members"))?;
        let first = ctx.tried.is_empty();
        let mut reloaded = false;
        let (i, ticket) = loop {
            if first {
                if let Some(sticky) = &svc.config.sticky {
                    ctx.sticky_named = super::request::cookie(session.req_header(), &sticky.cookie)
                        .and_then(|v| members.sticky_index(v));
                }
            }
            match svc.select(&members, &key, &ctx.tried, ctx.sticky_named) {
                Selection::Chosen(i, ticket) => break (i, ticket),
                Selection::Unavailable { retry_after } => {
                    // The set this request loaded may have been replaced since, its
                    // members that left now draining (a DNS change): a first attempt
                    // chooses once more from the current set.
                    let current = svc.members();
                    if first && !reloaded && !std::sync::Arc::ptr_eq(&current, &members) {
                        reloaded = true;
                        members = current;
                        ctx.members = Some(members.clone());
                        continue;
                    }
                    ctx.error = Some(GatewayError::NoHealthyUpstream { retry_after });
                    return Error::e_explain(HTTPStatus(503), "no healthy upstream");
                }
            }
        };
        ctx.tried.push(i);
        ctx.attempt_recorded = false;
        ctx.ticket = Some(ticket);
        let upstream = &members.upstreams[i];
        ctx.attempt_start = std::time::Instant::now();
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.begin_attempt(upstream.state.address.clone());
        }
        ctx.upstream_guard = Some(upstream.state.inflight.begin());
        let mut peer = svc.peer(upstream);
        choose_request_policy(session, &mut peer, ctx);
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

    /// `fail_to_connect`: nothing reached the upstream, so any method may go to another
    /// upstream, and the retry adds no upstream load: it is bounded by `attempts` only.
    pub(super) fn connect_failed(&self, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        let outcome = match e.etype() {
            ConnectTimedout => Outcome::Timeout,
            ConnectRefused => Outcome::Refused,
            TLSHandshakeFailure => Outcome::TlsError,
            _ => Outcome::Error,
        };
        if outcome == Outcome::TlsError {
            self.log_tls_failure(ctx, &e);
        }
        self.finish_attempt(ctx, outcome, 0);
        ctx.upstream_guard = None;
        e.set_retry(attempts_left(ctx));
        e
    }

    /// `error_while_proxy`: the upstream may have acted on the request.
    pub(super) fn proxy_failed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        peer: &HttpPeer,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.cache_revalidated.is_some() {
            // Not a failure: the upstream confirmed the stored response, served next.
            e.set_retry(false);
            return e;
        }
        if client_side(session, &e) {
            // The client failed (it closed, sent a malformed body, or stalled), not the
            // upstream: nothing is counted against the upstream, and the request is
            // never sent again.
            ctx.ticket = None;
            ctx.attempt_recorded = true;
            ctx.upstream_guard = None;
            if e.etype() == &ReadTimedout {
                ctx.error = Some(GatewayError::RequestTimeout);
            }
            let mut e = e.more_context(format!("Peer: {peer}"));
            e.set_retry(false);
            return e;
        }
        let refused_tls = peer.is_tls() && tls_refused(&e);
        let outcome = match e.etype() {
            _ if refused_tls => Outcome::TlsError,
            ReadTimedout | WriteTimedout => Outcome::Timeout,
            _ => Outcome::Error,
        };
        if refused_tls {
            self.log_tls_failure(ctx, &e);
        }
        // A 5xx already counted in upstream_response_filter is not counted twice.
        self.finish_attempt(ctx, outcome, 0);
        ctx.upstream_guard = None;
        let mut e = e.more_context(format!("Peer: {peer}"));
        if refused_tls {
            // The upstream refused the TLS session (TLS 1.3 sends a refused client
            // certificate's alert after the handshake): it never saw the request, so
            // this is retried like a connect failure.
            e.set_retry(attempts_left(ctx));
            return e;
        }
        if ctx.upstream().is_some_and(|u| u.state.drain_expired()) {
            // Cut at the end of its drain time: not sent again.
            e.set_retry(false);
            return e;
        }
        if std::mem::take(&mut ctx.retrying_status) {
            // `upstream_status` already decided (and spent the budget): a 5xx it turned
            // into this error is retried, never answered as an error.
            e.set_retry(true);
            return e;
        }
        e.set_retry(replay_safe(session) && self.may_retry(ctx));
        e
    }

    /// `upstream_response_filter`: count the attempt (a 5xx other than 501 is a failure);
    /// a failed one is turned into an error, so the loop retries it elsewhere, when that
    /// is safe and another upstream could answer.
    pub(super) fn upstream_status(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        code: u16,
    ) -> Result<()> {
        let failed = code >= 500 && code != 501;
        self.finish_attempt(ctx, if failed { Outcome::Error } else { Outcome::Ok }, code);
        if failed
            && replay_safe(session)
            && ctx.members.as_ref().is_some_and(|m| m.upstreams.len() > 1)
            && self.may_retry(ctx)
        {
            // Not sent downstream: error_while_proxy sees this and the loop retries.
            ctx.retrying_status = true;
            return Error::e_explain(HTTPStatus(code), "upstream 5xx, retrying elsewhere");
        }
        Ok(())
    }

    /// Count the current attempt's outcome exactly once: the metric, and the breaker
    /// (anything but `Ok` is a failure).
    /// `status`: the upstream's, 0 without an answer.
    pub(super) fn finish_attempt(&self, ctx: &mut Ctx, outcome: Outcome, status: u16) {
        if ctx.attempt_recorded {
            return;
        }
        ctx.attempt_recorded = true;
        if let Some(ticket) = ctx.ticket.take() {
            ticket.record(outcome == Outcome::Ok);
        }
        if let Some(t) = ctx.trace.as_deref_mut() {
            t.end_attempt(outcome.label(), status);
        }
        let (Some(svc), Some(upstream)) = (ctx.service(), ctx.upstream()) else {
            return;
        };
        let state = &upstream.state;
        let (counters, duration) = state.attempt_metrics.get_or_init(|| {
            (
                self.metrics.attempt_counters(&svc.name, &state.address),
                self.metrics
                    .upstream_duration
                    .with_label_values(&[&*svc.name, &*state.address]),
            )
        });
        counters[outcome.index()].inc();
        duration.observe(ctx.attempt_start.elapsed().as_secs_f64());
    }

    /// One line per upstream every 10 s at most: which upstream, which service, why.
    fn log_tls_failure(&self, ctx: &Ctx, e: &Error) {
        let (Some(svc), Some(upstream)) = (ctx.service(), ctx.upstream()) else {
            return;
        };
        if upstream.state.tls_log_due() {
            log::warn!(
                "service {}: TLS with upstream {} failed: {}",
                svc.name,
                upstream.state.address,
                e.context
                    .as_ref()
                    .map_or_else(|| e.to_string(), |c| c.as_str().to_string())
            );
        }
    }

    /// Whether a request the upstream already received may be sent again: within the
    /// first try plus `retries`, and within the service's retry budget (which this
    /// call spends), so failing upstreams do not face a retry storm.
    fn may_retry(&self, ctx: &Ctx) -> bool {
        attempts_left(ctx) && ctx.service().is_some_and(|svc| svc.retry_budget.withdraw())
    }
}

/// Whether the request can be sent again as it was: a method that may be repeated, a
/// body still held in the retry buffer, and nothing sent to the client yet.
fn replay_safe(session: &Session) -> bool {
    session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// Whether an error during proxying is the client's: raised reading from or writing to
/// it, or an upstream read timeout while the client had not finished sending the body
/// (the upstream was waiting for the client).
fn client_side(session: &mut Session, e: &Error) -> bool {
    match e.esource() {
        pingora::ErrorSource::Downstream => true,
        pingora::ErrorSource::Upstream => {
            e.etype() == &ReadTimedout && !session.as_mut().is_body_done()
        }
        _ => false,
    }
}

/// Whether the upstream refused the TLS session after the handshake: with TLS 1.3 a
/// server that requires a client certificate sends its alert on the first read.
fn tls_refused(e: &Error) -> bool {
    matches!(e.etype(), ReadError | ConnectionClosed) && e.to_string().contains("alert")
}

/// Whether the first try plus `retries` leaves another attempt.
fn attempts_left(ctx: &Ctx) -> bool {
    ctx.service()
        .is_some_and(|svc| ctx.tried.len() <= svc.config.retries as usize)
}
