//! Every answer the gateway gives on its own behalf, the one mapping from error to HTTP
//! status, JSON body and extra headers (SPEC "What a client sees"), and the
//! classification of Pingora's errors into those answers.
//!
//! The mapping is an exhaustive `match`: a new variant cannot silently become a 500.

use crate::auth::AuthError;
use crate::headers::RATE_HEADER_NAMES;
use crate::ratelimit::RateHeaders;
use bytes::Bytes;
use http::HeaderValue;
use pingora::prelude::*;
use pingora::ErrorSource;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// No route matches host + path + method.
    NoRoute,
    /// A route matches host + path but not the method; the `Allow` value.
    MethodNotAllowed(String),
    /// `..` segments or undecodable escapes in the path.
    BadPath,
    /// A malformed request the HTTP layer let through (e.g. no usable Host).
    BadRequest,
    /// Content-Length or the streamed body exceeds `server.max_request_body`.
    BodyTooLarge,
    /// The client stopped sending its request (head or body) for longer than
    /// `server.timeouts`.
    RequestTimeout,
    /// More request header fields, or more bytes of them, than `server.limits` allows.
    HeadersTooLarge,
    /// No, or an invalid, bearer token on an auth route (503 when no JWKS was ever fetched).
    Unauthorized(AuthError),
    /// A multi-method route found no credential (`missing_credentials`) or refused the
    /// one it found (`invalid_api_key`, `invalid_credentials`); the route's challenge.
    Unauthenticated {
        reason: &'static str,
        challenge: HeaderValue,
    },
    /// A forward-auth service answered 401/403: passed back as it answered.
    ForwardDenied(std::sync::Arc<crate::forward_auth::Denial>),
    /// A forward-auth service could not answer (down, timeout, an unexpected status).
    AuthUnavailable,
    /// Authenticated, but `require_claims` is not met; or the client IP is not allowed;
    /// or a CORS preflight from an origin or for a method the route does not allow.
    Forbidden,
    /// `Upgrade: websocket` on a route without `websocket: true`.
    WebSocketNotAllowed,
    /// A rate-limit policy refused; the tightest policy's headers.
    RateLimited(Box<RateHeaders>),
    /// The shared rate-limit store failed and `on_error: deny` is configured.
    RateLimitUnavailable,
    /// Every upstream of the service is unhealthy; seconds for `Retry-After`.
    NoHealthyUpstream { retry_after: u64 },
    /// The upstream refused, reset or spoke garbage, after retries.
    UpstreamFailed,
    /// The upstream did not connect, answer or accept data in time.
    UpstreamTimeout,
    /// A bug or an unexpected internal condition.
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NoRoute => 404,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::BadPath | GatewayError::BadRequest => 400,
            GatewayError::BodyTooLarge => 413,
            GatewayError::RequestTimeout => 408,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::Unauthorized(e) => e.status(),
            GatewayError::Unauthenticated { .. } => 401,
            GatewayError::ForwardDenied(d) => d.status,
            GatewayError::AuthUnavailable => 503,
            GatewayError::Forbidden => 403,
            GatewayError::WebSocketNotAllowed => 403,
            GatewayError::RateLimited(_) => 429,
            GatewayError::RateLimitUnavailable => 503,
            GatewayError::NoHealthyUpstream { .. } => 503,
            GatewayError::UpstreamFailed => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::Internal => 500,
        }
    }

    /// The `error` value of the JSON body: a stable, machine-readable reason class.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute => "no_route",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::BadPath => "bad_path",
            GatewayError::BadRequest => "bad_request",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::HeadersTooLarge => "request_header_fields_too_large",
            GatewayError::Unauthorized(e) => e.reason(),
            GatewayError::Unauthenticated { reason, .. } => reason,
            GatewayError::ForwardDenied(_) => "forward_denied",
            GatewayError::AuthUnavailable => "auth_unavailable",
            GatewayError::Forbidden => "forbidden",
            GatewayError::WebSocketNotAllowed => "websocket_not_allowed",
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::RateLimitUnavailable => "rate_limit_unavailable",
            GatewayError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            GatewayError::UpstreamFailed => "upstream_failed",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Internal => "internal_error",
        }
    }

    /// Headers this error adds beyond `content-type`, `content-length`, `x-request-id`.
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            GatewayError::MethodNotAllowed(allow) => vec![("allow", allow.clone())],
            GatewayError::NoHealthyUpstream { retry_after } => {
                vec![("retry-after", retry_after.max(&1).to_string())]
            }
            GatewayError::Unauthorized(AuthError::Missing) => {
                vec![("www-authenticate", "Bearer".to_string())]
            }
            GatewayError::Unauthorized(AuthError::KeysUnavailable) => {
                vec![("retry-after", "5".to_string())]
            }
            GatewayError::Unauthorized(_) => vec![(
                "www-authenticate",
                "Bearer error=\"invalid_token\"".to_string(),
            )],
            GatewayError::RateLimited(h) => {
                let mut v: Vec<(&'static str, String)> = RATE_HEADER_NAMES
                    .into_iter()
                    .zip(rate_header_values(h))
                    .map(|(name, value)| (name, value.to_str().unwrap_or("").to_string()))
                    .collect();
                v.push((
                    "retry-after",
                    h.retry_after_secs.unwrap_or(1).max(1).to_string(),
                ));
                v
            }
            GatewayError::RateLimitUnavailable | GatewayError::AuthUnavailable => {
                vec![("retry-after", "1".to_string())]
            }
            GatewayError::Unauthenticated { challenge, .. } => vec![(
                "www-authenticate",
                challenge.to_str().unwrap_or("Bearer").to_string(),
            )],
            GatewayError::ForwardDenied(d) => d
                .headers
                .iter()
                .filter(|(n, _)| n == http::header::WWW_AUTHENTICATE)
                .filter_map(|(_, v)| Some(("www-authenticate", v.to_str().ok()?.to_string())))
                .collect(),
            GatewayError::NoRoute
            | GatewayError::BadPath
            | GatewayError::BadRequest
            | GatewayError::BodyTooLarge
            | GatewayError::RequestTimeout
            | GatewayError::HeadersTooLarge
            | GatewayError::Forbidden
            | GatewayError::WebSocketNotAllowed
            | GatewayError::UpstreamFailed
            | GatewayError::UpstreamTimeout
            | GatewayError::Internal => vec![],
        }
    }
}

/// The client is gone (its connection failed or closed): there is nobody to answer.
pub fn client_gone(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Downstream)
        && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
}

/// Map a Pingora error to the answer (used when no phase set one).
pub fn classify(e: &Error) -> GatewayError {
    match e.etype() {
        HTTPStatus(413) => GatewayError::BodyTooLarge,
        HTTPStatus(503) => GatewayError::NoHealthyUpstream { retry_after: 1 },
        HTTPStatus(502) => GatewayError::UpstreamFailed,
        HTTPStatus(504) => GatewayError::UpstreamTimeout,
        HTTPStatus(c) if (400..500).contains(c) => GatewayError::BadRequest,
        HTTPStatus(_) => GatewayError::Internal,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            if matches!(e.esource(), ErrorSource::Downstream) {
                GatewayError::RequestTimeout
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

/// The values of the `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers) for one
/// policy, in the order of `headers::RATE_HEADERS`. On every response of a limited route,
/// so built without `String`s or a `Vec`.
pub fn rate_header_values(h: &RateHeaders) -> [HeaderValue; 4] {
    [
        HeaderValue::from(h.limit),
        HeaderValue::from(h.remaining),
        HeaderValue::from(h.reset_secs),
        h.policy.clone(),
    ]
}

/// `{"error":"…","request_id":"…"}`. Both values are from fixed or sanitised sets
/// (see `headers::request_id`), so no escaping beyond JSON string rules is needed.
pub fn json_body(code: &str, request_id: &str) -> Bytes {
    let mut s = String::with_capacity(40 + code.len() + request_id.len());
    s.push_str("{\"error\":");
    push_json_str(&mut s, code);
    s.push_str(",\"request_id\":");
    push_json_str(&mut s, request_id);
    s.push('}');
    Bytes::from(s)
}

/// Append `v` as a JSON string literal.
pub fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    // A fold without an early exit, so the compiler checks 16 bytes at a time.
    let plain = v
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        // The common case (ids, paths, names): nothing to escape.
        out.push_str(v);
        out.push('"');
        return;
    }
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
