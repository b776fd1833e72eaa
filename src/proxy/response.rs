//! The response phase: what the gateway adds to every answer (request id, rate-limit
//! headers, cache status, CORS, configured header rules, compression choice), and the
//! adapters the header rules need.

use super::{Ctx, Gateway};
use crate::error::rate_header_values;
use crate::headers::{RATE_HEADERS, X_CACHE, X_REQUEST_ID};
use crate::transform::{HeaderSink, TemplateVars};
use http::{header, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::net::IpAddr;

/// gzip/brotli level for routes with `compression: true`.
pub const COMPRESSION_LEVEL: u32 = 6;
/// Bodies smaller than this are not worth compressing.
pub const COMPRESSION_MIN_BYTES: u64 = 1024;

impl Gateway {
    /// Everything the gateway adds to a response, proxied or served from cache.
    pub(super) fn decorate(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &Ctx) {
        add_gateway_headers(resp, ctx);
        let (Some(rt), Some(route)) = (ctx.rt.as_deref(), ctx.route()) else {
            return;
        };
        let policy = &*route.policy;
        if ctx.split_set_cookie {
            if let (Some(split), Some(svc)) = (&route.split, ctx.service()) {
                if let Some(crate::routing::SplitSticky::Cookie { name, .. }) = &split.sticky {
                    let v = format!("{name}={}{}", svc.name, split.cookie_attributes);
                    if let Ok(v) = http::HeaderValue::from_str(&v) {
                        let _ = resp.append_header(header::SET_COOKIE, v);
                    }
                }
            }
        }
        if let (Some(members), Some(&i)) = (ctx.members.as_deref(), ctx.tried.last()) {
            if ctx.sticky_named != Some(i) {
                if let Some(v) = members.sticky_cookie(i) {
                    let _ = resp.append_header(header::SET_COOKIE, v.clone());
                }
            }
        }
        if let Some(cors) = &policy.cors {
            let origin = session.req_header().headers.get(header::ORIGIN);
            cors.apply_response_headers(origin, &mut RespSink(resp));
        }
        if !policy.response_headers.is_empty() {
            let vars = Vars::new(session.req_header(), ctx);
            policy.response_headers.apply(&mut RespSink(resp), &vars);
        }
        if rt.any_compression {
            let worth_it = policy.compression
                && !ctx.websocket
                && resp
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .is_none_or(|n| n >= COMPRESSION_MIN_BYTES);
            if !worth_it {
                if let Some(c) = session
                    .downstream_modules_ctx
                    .get_mut::<ResponseCompression>()
                {
                    c.adjust_level(0);
                }
            }
        }
    }
}

/// `X-Request-Id`, `RateLimit-*` and `X-Cache`, on every response.
///
/// As on the upstream request (see `add_forwarded_headers`), the header is taken apart
/// so the names go in as constants and the map grows once, instead of Pingora's
/// `insert_header` (two allocations per custom name, two maps grown). The response then
/// goes without the original-spelling map: header names reach the client in canonical
/// form (standard ones title-cased, others lower-case), as over HTTP/2. A non-standard
/// reason phrase is kept.
fn add_gateway_headers(resp: &mut ResponseHeader, ctx: &Ctx) {
    // Only a non-standard reason phrase needs carrying over (else the default is written).
    let reason = resp
        .get_reason_phrase()
        .filter(|r| resp.status.canonical_reason() != Some(*r))
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    let h = &mut parts.headers;
    // Exactly what is added: a larger reserve can cross the map's load-factor threshold
    // and rehash every header for nothing.
    h.reserve(1 + 4 * usize::from(ctx.rate.is_some()) + usize::from(ctx.cache_status.is_some()));
    h.insert(X_REQUEST_ID, ctx.request_id.clone());
    if let Some(rate) = &ctx.rate {
        for (name, value) in RATE_HEADERS.into_iter().zip(rate_header_values(rate)) {
            h.insert(name, value);
        }
    }
    if let Some(status) = ctx.cache_status {
        h.insert(X_CACHE, status.header_value());
    }
    let mut rebuilt = ResponseHeader::from(parts);
    if reason.is_some() {
        let _ = rebuilt.set_reason_phrase(reason.as_deref());
    }
    *resp = rebuilt;
}

/// Header-rule adapters for Pingora's header types. Values were validated when the
/// rules were compiled, so a refused insert cannot happen; it would only skip a header.
pub struct ReqSink<'a>(pub &'a mut RequestHeader);
pub struct RespSink<'a>(pub &'a mut ResponseHeader);

macro_rules! header_sink {
    ($sink:ident) => {
        impl HeaderSink for $sink<'_> {
            fn insert(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.0.insert_header(name, value);
            }
            fn append(&mut self, name: HeaderName, value: HeaderValue) {
                let _ = self.0.append_header(name, value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.0.remove_header(name);
            }
        }
    };
}
header_sink!(ReqSink);
header_sink!(RespSink);

/// What `{request_id}`, `{client_ip}`, `{jwt.sub}`, … expand to in header rules.
pub struct Vars<'a> {
    req: &'a RequestHeader,
    ctx: &'a Ctx,
}

impl<'a> Vars<'a> {
    pub fn new(req: &'a RequestHeader, ctx: &'a Ctx) -> Self {
        Vars { req, ctx }
    }
}

impl TemplateVars for Vars<'_> {
    fn request_id(&self) -> &str {
        self.ctx.request_id()
    }
    fn client_ip(&self) -> Option<IpAddr> {
        self.ctx.client_ip
    }
    fn host(&self) -> &str {
        super::request::request_host(self.req).unwrap_or("")
    }
    fn method(&self) -> &str {
        self.req.method.as_str()
    }
    fn path(&self) -> &str {
        self.req.uri.path()
    }
    fn claim(&self, name: &str) -> Option<Cow<'_, str>> {
        self.ctx.claims.as_ref()?.get_str(name)
    }
}
