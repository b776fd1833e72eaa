//! The request as it goes upstream (`upstream_peer`, `upstream_request_filter`): the
//! path with the route's prefix stripped, `X-Forwarded-*`, `X-Real-IP`, `X-Request-Id`
//! and claim headers, hop-by-hop fields, the route's request header rules.

use super::response::{ReqSink, Vars};
use super::Ctx;
use crate::headers::{
    self, HopByHop, TRACEPARENT, TRACESTATE, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
    X_REAL_IP, X_REQUEST_ID,
};
use crate::routing;
use http::{header, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;

/// Pingora's standard upstream request policy costs as much as a header rebuild even
/// when there is nothing to strip ([`headers::hop_by_hop`]). Where it would change
/// nothing, or only remove `Connection`, the peer says "preserve" and
/// [`upstream_request`] removes `Connection` itself; anything else gets Pingora's
/// policy, unchanged.
pub(super) fn choose_request_policy(session: &Session, peer: &mut HttpPeer, ctx: &mut Ctx) {
    let hop = headers::hop_by_hop(&session.req_header().headers);
    if hop != HopByHop::Other {
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
    }
    ctx.drop_connection = hop == HopByHop::PersistenceOnly;
}

/// Everything `upstream_request_filter` does to the request an upstream receives (runs
/// again on every retry, on a fresh copy of the client's request).
pub(super) fn upstream_request(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &Ctx,
) -> Result<()> {
    let route = ctx.route();
    if let Some(route) = route.filter(|r| r.strip_prefix) {
        let original = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let stripped = routing::strip_prefix(&route.matcher, original);
        if stripped != original {
            let uri = stripped
                .parse::<http::Uri>()
                .map_err(|e| Error::because(InternalError, "rewritten path", e))?;
            upstream.set_uri(uri);
        }
    }
    let claim_headers = ctx
        .claims
        .as_deref()
        .zip(ctx.claims_from.as_ref())
        .map(|(claims, verifier)| (claims, verifier.claims_to_headers()));
    if let Some(rw) = route.and_then(|r| r.policy.rewrite.as_ref()) {
        let req = session.req_header();
        if let Some(path) = rw.apply(req.uri.path(), req.uri.query()) {
            let uri = path
                .parse::<http::Uri>()
                .map_err(|e| Error::because(InternalError, "rewritten path", e))?;
            upstream.set_uri(uri);
        }
    }
    add_forwarded_headers(session, upstream, ctx, claim_headers)?;
    if let Some(host) = route.and_then(|r| r.policy.rewrite.as_ref()?.set_host.clone()) {
        // After X-Forwarded-Host took the client's Host.
        upstream.insert_header(header::HOST, host)?;
    }
    if ctx.cache_fill.is_some() {
        // The cache needs a full response to store, not a 304 for this client; but a
        // stored response is revalidated with its own validators (a 304 refreshes it).
        upstream.remove_header(&header::IF_NONE_MATCH);
        upstream.remove_header(&header::IF_MODIFIED_SINCE);
        if let Some(stale) = &ctx.cache_stale {
            if let Some(etag) = stale.header(&header::ETAG) {
                upstream.insert_header(header::IF_NONE_MATCH, etag.clone())?;
            }
            if let Some(lm) = stale.header(&header::LAST_MODIFIED) {
                upstream.insert_header(header::IF_MODIFIED_SINCE, lm.clone())?;
            }
        }
    }
    if let Some(route) = route {
        let rules = &route.policy.request_headers;
        if !rules.is_empty() {
            let vars = Vars::new(session.req_header(), ctx);
            rules.apply(&mut ReqSink(upstream), &vars);
        }
    }
    Ok(())
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
    if let Some(t) = ctx.trace.as_deref() {
        // This attempt's span is the upstream's parent; the client's tracestate goes
        // on only with the client's traceparent (a new trace has none).
        if let Some(tp) = t.attempt_header() {
            h.insert(TRACEPARENT, tp);
        }
        match &t.tracestate {
            Some(ts) => {
                h.insert(TRACESTATE, ts.clone());
            }
            None => {
                h.remove(TRACESTATE);
            }
        }
    }
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
