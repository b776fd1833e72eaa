//! Mirrored copies (see [`crate::mirror`]): begun with the first attempt's forwarded
//! header, completed as the request body streams to the primary upstream.

use super::{Ctx, Gateway};
use bytes::Bytes;
use pingora::http::RequestHeader;

impl Gateway {
    /// `upstream_request_filter`: on a mirrored route, start a copy of the forwarded
    /// request if the sequence picks this one. Decided once per request, by the first
    /// attempt that reaches an upstream (one that failed to connect never calls this);
    /// a later attempt restarts the body of a copy still collecting it.
    pub(super) fn mirror_begin(&self, upstream: &RequestHeader, ctx: &mut Ctx) {
        if let Some(copy) = ctx.mirror_copy.as_mut() {
            copy.restart_body();
            return;
        }
        if std::mem::replace(&mut ctx.mirror_decided, true) || ctx.websocket {
            return;
        }
        let Some(rt) = ctx.rt.clone() else { return };
        let Some(mirror) = ctx
            .route
            .and_then(|i| rt.routes.get(i))
            .and_then(|r| r.mirror.as_deref())
        else {
            return;
        };
        if mirror.pick() {
            ctx.mirror_copy = Some(mirror.begin(upstream));
        }
    }

    /// `request_body_filter`: add the chunk to the copy; send it at the end of the body.
    pub(super) fn mirror_body(&self, body: &Option<Bytes>, end: bool, ctx: &mut Ctx) {
        let Some(rt) = ctx.rt.clone() else { return };
        let Some(route) = ctx.route.and_then(|i| rt.routes.get(i)) else {
            return;
        };
        let (Some(mirror), Some(copy)) = (route.mirror.as_deref(), ctx.mirror_copy.as_mut()) else {
            return;
        };
        if let Some(chunk) = body {
            if !mirror.body(copy, chunk) {
                ctx.mirror_copy = None;
                mirror.skipped(&self.metrics, &route.name);
                return;
            }
        }
        if end {
            if let Some(copy) = ctx.mirror_copy.take() {
                mirror.send(copy, &self.metrics, &route.name);
            }
        }
    }
}
