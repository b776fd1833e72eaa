//! The response cache in the proxy phases: look up (serve a hit, wait for a concurrent
//! fill, or lead the fill) in `request_filter`, and store what the upstream answers.

use super::request::{request_host, Admit};
use super::{Ctx, Gateway};
use crate::cache::{CacheStatus, CachedResponse, Lookup, RequestInfo, RouteCache, WaitOutcome};
use crate::error::GatewayError;
use crate::routing::Route;
use bytes::Bytes;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::Duration;

/// The parts of the request the cache keys and classifies on.
fn request_info(req: &RequestHeader) -> RequestInfo<'_> {
    RequestInfo {
        method: &req.method,
        host: request_host(req).unwrap_or(""),
        path_and_query: req.uri.path_and_query().map_or("/", |p| p.as_str()),
        headers: &req.headers,
    }
}

impl Gateway {
    /// Serve a hit, wait for a concurrent fill, or become the one that fills.
    pub(super) async fn cache_lookup(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        cache: Arc<RouteCache>,
    ) -> Result<Admit, GatewayError> {
        let lookup = cache.lookup(&request_info(session.req_header()));
        ctx.cache = Some(cache);
        let hit = match lookup {
            Lookup::Hit(r) => r,
            Lookup::Bypass => {
                ctx.cache_status = Some(CacheStatus::Bypass);
                return Ok(Admit::Proxy);
            }
            Lookup::Miss(guard) => {
                ctx.cache_status = Some(CacheStatus::Miss);
                ctx.cache_fill = Some(Box::new(guard));
                return Ok(Admit::Proxy);
            }
            Lookup::Revalidate(guard, stored) => {
                ctx.cache_status = Some(CacheStatus::Miss);
                ctx.cache_fill = Some(Box::new(guard));
                ctx.cache_stale = Some(stored);
                return Ok(Admit::Proxy);
            }
            Lookup::Wait(waiter) => {
                // As long as the leader may take: connecting plus reading its answer.
                let wait = route.service.as_ref().map_or(Duration::from_secs(1), |s| {
                    s.config.timeouts.connect + s.config.timeouts.read
                });
                match waiter.wait(wait).await {
                    WaitOutcome::Hit(r) => r,
                    WaitOutcome::Fetch => {
                        ctx.cache_status = Some(CacheStatus::Miss);
                        return Ok(Admit::Proxy);
                    }
                }
            }
        };
        ctx.cache_status = Some(CacheStatus::Hit);
        self.serve_cached(session, ctx, &hit)
            .await
            .map_err(|_| GatewayError::Internal)?;
        Ok(Admit::Served)
    }

    /// Answer from the cache: the stored status, headers and body, plus `Age` — or a
    /// `304` when the client's conditional request (`If-None-Match`, else
    /// `If-Modified-Since`) finds the fresh entry unchanged (RFC 9110 §13.1).
    async fn serve_cached(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        hit: &CachedResponse,
    ) -> Result<()> {
        if hit.status == 200 && not_modified(&session.req_header().headers, &hit.headers) {
            let mut resp = ResponseHeader::build(304, Some(8))?;
            for (name, value) in &hit.headers {
                if matches!(
                    name.as_str(),
                    "etag"
                        | "cache-control"
                        | "expires"
                        | "vary"
                        | "content-location"
                        | "last-modified"
                ) {
                    resp.append_header(name.clone(), value.clone())?;
                }
            }
            resp.insert_header(header::AGE, hit.age_secs())?;
            self.decorate(session, &mut resp, ctx);
            ctx.own_status = 304;
            return session.write_response_header(Box::new(resp), true).await;
        }
        let mut resp = ResponseHeader::build(hit.status, Some(hit.headers.len() + 6))?;
        for (name, value) in &hit.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        resp.insert_header(header::AGE, hit.age_secs())?;
        self.decorate(session, &mut resp, ctx);
        ctx.own_status = hit.status;
        let head = session.req_header().method == http::Method::HEAD || hit.body.is_empty();
        session.write_response_header(Box::new(resp), head).await?;
        if !head {
            session
                .write_response_body(Some(hit.body.clone()), true)
                .await?;
        }
        Ok(())
    }

    /// On an upstream `304` to a revalidation: refresh the stored response (store it
    /// and release the waiters) and keep it to serve. Returns whether this was one; the
    /// caller then ends the upstream exchange with an error that `fail_to_proxy` answers
    /// with the refreshed response (Pingora cannot turn a header-only upstream answer
    /// into one with a body).
    pub(super) fn cache_revalidated(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> bool {
        if resp.status.as_u16() != 304 {
            ctx.cache_stale = None;
            return false;
        }
        let (Some(cache), Some(stale)) = (ctx.cache.clone(), ctx.cache_stale.take()) else {
            return false;
        };
        let now = std::time::Instant::now();
        // Freshness from the merged headers, as if the whole response had come again.
        let merged = stale.refreshed(&resp.headers, Duration::ZERO, now);
        let headers: http::HeaderMap = merged.headers.iter().cloned().collect();
        let ttl = cache.storable(&request_info(session.req_header()), stale.status, &headers);
        let fresh = Arc::new(stale.refreshed(&resp.headers, ttl.unwrap_or_default(), now));
        // No longer storable: served this once; dropping the guard sends the waiters
        // upstream themselves.
        if let (Some(guard), Some(_)) = (ctx.cache_fill.take(), ttl) {
            guard.store((*fresh).clone());
        }
        ctx.cache_status = Some(CacheStatus::Revalidated);
        ctx.cache_revalidated = Some(fresh);
        true
    }

    /// `fail_to_proxy` after [`Self::cache_revalidated`]: answer from the refreshed entry.
    pub(super) async fn serve_revalidated(&self, session: &mut Session, ctx: &mut Ctx) -> bool {
        let Some(fresh) = ctx.cache_revalidated.take() else {
            return false;
        };
        if let Err(e) = self.serve_cached(session, ctx, &fresh).await {
            log::debug!("could not send the revalidated response: {e}");
        }
        true
    }

    /// On the upstream's response header: start collecting the body if this request is
    /// filling the cache and the response may be stored; else release the waiters now.
    pub(super) fn cache_response_header(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) {
        let (Some(cache), true) = (&ctx.cache, ctx.cache_fill.is_some()) else {
            return;
        };
        let status = resp.status.as_u16();
        let info = request_info(session.req_header());
        match cache.storable(&info, status, &resp.headers) {
            Some(ttl) => {
                ctx.cache_collector = Some(Box::new(cache.collector(status, &resp.headers, ttl)))
            }
            None => ctx.cache_fill = None,
        }
    }

    /// On each upstream body chunk: collect; at the end, store and release the waiters.
    pub(super) fn cache_response_body(&self, body: &Option<Bytes>, end: bool, ctx: &mut Ctx) {
        let Some(collector) = ctx.cache_collector.as_mut() else {
            return;
        };
        if let Some(chunk) = body {
            if !collector.push(chunk) {
                ctx.cache_collector = None;
                ctx.cache_fill = None;
                return;
            }
        }
        if end {
            let stored = ctx.cache_collector.take().and_then(|c| (*c).finish());
            if let (Some(guard), Some(entry)) = (ctx.cache_fill.take(), stored) {
                guard.store(entry);
            }
        }
    }

    /// `gatehouse_cache_requests_total` for this request's cache status (at its end).
    pub(super) fn count_cache(&self, ctx: &Ctx) {
        if let Some(result) = ctx.cache_status.and_then(CacheStatus::metric_label) {
            self.metrics
                .cache_requests
                .with_label_values(&[ctx.route_label(), result])
                .inc();
        }
    }
}

/// Whether a conditional GET/HEAD finds the stored response unchanged: `If-None-Match`
/// by weak comparison (`*` matches any), or, without it, `If-Modified-Since` not before
/// the stored `Last-Modified`.
fn not_modified(req: &http::HeaderMap, stored: &[(http::HeaderName, http::HeaderValue)]) -> bool {
    let stored_header = |name: &http::HeaderName| {
        stored
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    };
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored_header(&header::ETAG) else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let etag = opaque(etag);
        return inm.to_str().is_ok_and(|list| {
            list.split(',')
                .any(|t| t.trim() == "*" || opaque(t) == etag)
        });
    }
    let (Some(ims), Some(lm)) = (
        req.get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        stored_header(&header::LAST_MODIFIED).and_then(|v| httpdate::parse_http_date(v).ok()),
    ) else {
        return false;
    };
    lm <= ims
}
