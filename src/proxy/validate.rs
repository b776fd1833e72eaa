//! The request head checks made before anything else (and before anything goes
//! upstream), for what Pingora's parser lets through: RFC 9112 §3.2 (exactly one `Host`
//! in HTTP/1.1; a request target in origin, absolute or asterisk form), RFC 9113 §8.2.1
//! (no HTTP/2 field value that starts or ends with whitespace), RFC 9110 §8.6
//! (`Content-Length` is digits; one value), and `server.limits` (header count and size,
//! `431`). Pingora itself refuses a malformed request line (no autocorrection, see the
//! patch notes), a chunked body with bad framing, and `Content-Length` together with
//! `Transfer-Encoding`.

use crate::config::server::HeadLimits;
use crate::error::GatewayError;
use http::{header, HeaderValue, Method, Version};
use pingora::proxy::Session;

/// Check the request head; normalises a `Content-Length` with leading zeros. One pass
/// over the fields, comparing names (no hashing): it runs on every request.
pub(super) fn check_head(session: &mut Session, limits: &HeadLimits) -> Result<(), GatewayError> {
    let h2 = session.is_http2();
    let req = session.req_header();
    if req.headers.len() > limits.request_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    let (mut size, mut hosts, mut lengths) = (0, 0, 0);
    let mut length = None;
    for (name, value) in &req.headers {
        size += name.as_str().len() + value.len() + 4;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            lengths += 1;
            length = Some(value);
        }
        if h2 {
            let v = value.as_bytes();
            if matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t')) {
                return Err(GatewayError::BadRequest);
            }
        }
    }
    if size > limits.request_head {
        return Err(GatewayError::HeadersTooLarge);
    }
    if !h2 {
        if hosts > 1 || (hosts == 0 && req.version == Version::HTTP_11) {
            return Err(GatewayError::BadRequest);
        }
        if !target_form_ok(req.raw_path(), &req.method) {
            return Err(GatewayError::BadRequest);
        }
    }
    let Some(cl) = length else {
        return Ok(());
    };
    let v = cl.as_bytes();
    if lengths > 1 || v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(GatewayError::BadRequest);
    }
    if v.len() > 1 && v[0] == b'0' {
        // `010` is 10: forward the canonical form.
        let digits = v
            .iter()
            .position(|&b| b != b'0')
            .map_or(&b"0"[..], |i| &v[i..]);
        let canonical = HeaderValue::from_bytes(digits).map_err(|_| GatewayError::BadRequest)?;
        session
            .req_header_mut()
            .insert_header(header::CONTENT_LENGTH, canonical)
            .map_err(|_| GatewayError::BadRequest)?;
    }
    Ok(())
}

/// RFC 9112 §3.2: origin form (`/…`), absolute form (`http://…`, `https://…`), or `*`
/// for OPTIONS. (Authority form is CONNECT's, which the gateway does not proxy.)
fn target_form_ok(target: &[u8], method: &Method) -> bool {
    let starts = |p: &[u8]| {
        target
            .get(..p.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    target.first() == Some(&b'/')
        || (target == b"*" && method == Method::OPTIONS)
        || starts(b"http://")
        || starts(b"https://")
}

/// Bytes of a response head's header fields, `name: value\r\n` each (the status line
/// is not counted).
pub(super) fn response_head_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// Read the first bytes of an HTTP/1 request body before anything goes upstream, so a
/// chunk framing error in them (`0_2e`, `5\r\r;…`, data not followed by CRLF) is answered
/// `400` and a body that never comes `408`, with nothing forwarded. What is read stays in
/// Pingora's retry buffer (one read is at most its 64 KiB), which the proxy sends first,
/// through the body filters, before it streams the rest. Skipped for bodiless requests,
/// HTTP/2 (framed by the protocol) and `Expect: 100-continue` (the client waits for us).
/// A framing error further into a streamed body still ends the upstream request without
/// its last chunk: the upstream never sees a complete request.
pub(super) async fn prefetch_body(session: &mut Session) -> pingora::Result<()> {
    if session.is_http2() || session.as_mut().is_body_empty() {
        return Ok(());
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return Ok(());
    }
    session.as_mut().enable_retry_buffering();
    session
        .as_mut()
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?;
    Ok(())
}
