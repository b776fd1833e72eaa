//! The request phase: who is asking, which route, and may it pass. Each step either
//! lets the request through, answers it (CORS preflight, cache hit) or names the
//! [`GatewayError`] to answer with.

use super::{Ctx, Gateway};
use crate::error::{json_body, GatewayError};
use crate::headers::{self, X_FORWARDED_FOR, X_REQUEST_ID};
use crate::ratelimit::{Check, KeySpec, Policy};
use crate::routing::{self, Match, Route};
use crate::runtime::Runtime;
use crate::transform::Preflight;
use crate::upstream::HashKey;
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;

/// What `request_filter` does next.
pub enum Admit {
    /// Go upstream.
    Proxy,
    /// The gateway already answered (preflight, cache hit).
    Served,
}

impl Gateway {
    /// Request id and client address (trusted-proxy aware).
    pub(super) fn identify(&self, session: &Session, ctx: &mut Ctx, rt: &Runtime) {
        let req = session.req_header();
        ctx.request_id = match req.headers.get(X_REQUEST_ID) {
            Some(v) if headers::sane_request_id(v.as_bytes()) => v.clone(),
            _ => headers::new_request_id(),
        };
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(peer) = ctx.peer_ip {
            ctx.peer_trusted = headers::is_trusted(peer, &rt.trusted_proxies);
            // Only a trusted peer's X-Forwarded-For counts, so only then is it looked up.
            let xff = ctx
                .peer_trusted
                .then(|| req.headers.get(X_FORWARDED_FOR))
                .flatten()
                .map(|v| v.as_bytes());
            ctx.client_ip = Some(headers::client_ip(peer, xff, &rt.trusted_proxies));
        }
    }

    /// Route, IP rules, CORS preflight, WebSocket policy, identity headers, JWT, rate
    /// limits, body limit, response cache — in that order.
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        rt: &Arc<Runtime>,
    ) -> Result<Admit, GatewayError> {
        let index = lookup(session, rt)?;
        ctx.route = Some(index);
        let route = rt.routes.get(index).ok_or(GatewayError::Internal)?;
        let policy = &*route.policy;

        if let Some(rules) = &policy.ip_rules {
            let ip = ctx.client_ip.ok_or(GatewayError::Forbidden)?;
            if !rules.allows(ip) {
                return Err(GatewayError::Forbidden);
            }
        }
        if let Some(redirect) = &policy.redirect {
            self.answer_redirect(session, ctx, route, redirect).await?;
            return Ok(Admit::Served);
        }
        if let Some(cors) = &policy.cors {
            let req = session.req_header();
            if req.method == http::Method::OPTIONS {
                let h = &req.headers;
                match cors.preflight(
                    h.get(header::ORIGIN),
                    h.get(header::ACCESS_CONTROL_REQUEST_METHOD),
                    h.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
                ) {
                    Preflight::NotCors => {}
                    Preflight::Denied => return Err(GatewayError::Forbidden),
                    Preflight::Allowed(allow) => {
                        self.answer_preflight(session, ctx, allow).await?;
                        return Ok(Admit::Served);
                    }
                }
            }
        }
        if is_websocket(session.req_header()) {
            if !policy.websocket {
                return Err(GatewayError::WebSocketNotAllowed);
            }
            ctx.websocket = true;
        }

        // Identity headers are the gateway's to set: never trust a client's copy.
        let req = session.req_header_mut();
        for h in &rt.claim_headers {
            req.remove_header(h);
        }
        if let Some(ra) = &route.auth {
            self.authenticate(session, ctx, route, ra, rt).await?;
        }

        if !route.limits.is_empty() {
            self.rate_limit(session, ctx, route, rt).await?;
        }
        if let Some(split) = &route.split {
            choose_split(session, ctx, split);
        }

        if let Some(limit) = rt.max_request_body {
            let declared = session
                .req_header()
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                // The body stays unread: close rather than reuse the connection.
                session.set_keepalive(None);
                return Err(GatewayError::BodyTooLarge);
            }
        }

        if let Some(cache) = &route.cache {
            return self.cache_lookup(session, ctx, route, cache.clone()).await;
        }
        Ok(Admit::Proxy)
    }

    /// `redirect:`: the `Location` from its template, nothing proxied.
    async fn answer_redirect(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        redirect: &crate::routing::rewrite::Redirect,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        let path = req.uri.path();
        let captures = route
            .matcher
            .conditions()
            .and_then(|c| c.path_regex.as_ref())
            .and_then(|r| r.captures(path));
        let location = redirect.location(
            request_host(req).unwrap_or(""),
            path,
            req.uri.query(),
            captures.as_ref(),
        );
        let location =
            http::HeaderValue::from_str(&location).map_err(|_| GatewayError::BadRequest)?;
        let write = async {
            let mut resp = ResponseHeader::build(redirect.status, Some(3))?;
            resp.insert_header(header::LOCATION, location)?;
            resp.insert_header(header::CONTENT_LENGTH, 0)?;
            resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
            ctx.own_status = redirect.status;
            session.write_response_header(Box::new(resp), true).await
        };
        write.await.map_err(|_| GatewayError::Internal)
    }

    async fn answer_preflight(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        allow: Vec<(http::HeaderName, http::HeaderValue)>,
    ) -> Result<(), GatewayError> {
        let write = async {
            let mut resp = ResponseHeader::build(204, Some(allow.len() + 2))?;
            for (name, value) in allow {
                resp.append_header(name, value)?;
            }
            resp.insert_header(header::CONTENT_LENGTH, 0)?;
            resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
            ctx.own_status = 204;
            session.write_response_header(Box::new(resp), true).await
        };
        write.await.map_err(|_| GatewayError::Internal)
    }

    /// Charge every policy of the route in one store call; all must allow.
    async fn rate_limit(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        route: &Route,
        rt: &Runtime,
    ) -> Result<(), GatewayError> {
        let req = session.req_header();
        let ip = ctx
            .client_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let claims = ctx.claims.as_deref();
        let claim = |name: &str| claims.and_then(|c| c.get_str(name));
        let policies: &[Arc<Policy>] = &route.limits;
        let consumer = ctx.consumer.as_deref().map(|c| &*c.name);
        if consumer.is_none()
            && policies
                .iter()
                .any(|p| p.key == KeySpec::Consumer { refuse: true })
        {
            return Err(GatewayError::Forbidden);
        }
        let keys: smallvec::SmallVec<[String; 4]> = policies
            .iter()
            .map(|p| match &p.key {
                KeySpec::Consumer { .. } => p.key.bucket_key(consumer, ip),
                KeySpec::ClientIp | KeySpec::Global => p.key.bucket_key(None, ip),
                KeySpec::Jwt(c) => p.key.bucket_key(claim(c).as_deref(), ip),
                KeySpec::Header(h) => p
                    .key
                    .bucket_key(req.headers.get(h).and_then(|v| v.to_str().ok()), ip),
                KeySpec::Route => p.key.bucket_key(Some(&route.name), ip),
            })
            .collect();
        let checks: smallvec::SmallVec<[Check; 4]> = policies
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
            .with_label_values(&[&*route.name, policy])
            .inc();
        match decision.headers {
            Some(h) if !decision.store_error => Err(GatewayError::RateLimited(Box::new(h))),
            _ => Err(GatewayError::RateLimitUnavailable),
        }
    }

    /// Write an error response (JSON body, `X-Request-Id`, extra headers).
    pub(super) async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        err: GatewayError,
    ) -> Result<()> {
        let status = err.status();
        let mut resp = ResponseHeader::build(status, Some(5))?;
        // A forward-auth denial goes back as the auth service wrote it.
        let body = if let GatewayError::ForwardDenied(d) = &err {
            for (name, value) in &d.headers {
                resp.insert_header(name.clone(), value.clone())?;
            }
            d.body.clone()
        } else {
            resp.insert_header(header::CONTENT_TYPE, "application/json")?;
            json_body(err.code(), ctx.request_id())
        };
        resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        let extra = match &err {
            GatewayError::ForwardDenied(_) => vec![],
            _ => err.extra_headers(),
        };
        for (name, value) in extra {
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

/// A split route's service for this request: the one its sticky cookie names (else a
/// new choice, and the cookie set on the response), the one its sticky key hashes to,
/// or the next in the weighted sequence.
fn choose_split(session: &Session, ctx: &mut Ctx, split: &routing::Split) {
    let i = match &split.sticky {
        Some(routing::SplitSticky::Cookie { name, .. }) => {
            match cookie(session.req_header(), name).and_then(|v| split.by_name(v)) {
                Some(i) => i,
                None => {
                    ctx.split_set_cookie = true;
                    split.next()
                }
            }
        }
        Some(routing::SplitSticky::Hash(key)) => split.by_key(&hash_key(session, ctx, key)),
        None => split.next(),
    };
    ctx.split_service = Some(i);
}

/// The route for this request, or why there is none. A CORS preflight is routed by
/// the method it asks about, so routes need not list OPTIONS.
fn lookup(session: &Session, rt: &Runtime) -> Result<usize, GatewayError> {
    let req = session.req_header();
    let host = request_host(req).ok_or(GatewayError::BadRequest)?;
    let host = routing::normalise_host(host);
    let preflight_method = (req.method == http::Method::OPTIONS
        && req.headers.contains_key(header::ORIGIN))
    .then(|| req.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD))
    .flatten()
    .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
    let method = preflight_method.as_ref().unwrap_or(&req.method);
    let view = routing::RequestView {
        path: req.uri.path(),
        query: req.uri.query(),
        headers: &req.headers,
    };
    match rt.routes.lookup_request(&host, &view, method) {
        Match::Found(index) => Ok(index),
        Match::MethodNotAllowed(allow) => Err(GatewayError::MethodNotAllowed(allow)),
        Match::NotFound => Err(GatewayError::NoRoute),
        Match::BadPath => Err(GatewayError::BadPath),
    }
}

/// `Upgrade: websocket` (other upgrades, like h2c, are not WebSocket requests).
fn is_websocket(req: &RequestHeader) -> bool {
    req.headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// The `Host` header, or the authority of an absolute-form request target.
pub(super) fn request_host(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(header::HOST) {
        Some(v) => std::str::from_utf8(v.as_bytes()).ok(),
        None => Some(req.uri.authority().map_or("", |a| a.as_str())),
    }
}

/// The bytes a consistent-hash service hashes; other balancers ignore the key.
pub(super) fn hash_key(session: &Session, ctx: &Ctx, key: &HashKey) -> Vec<u8> {
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

pub(super) fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    routing::conditions::cookie(&req.headers, name)
}
