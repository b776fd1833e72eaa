//! What the proxy asks a store ([`Check`]) and what it answers ([`Decision`]).

use super::config::{Params, Policy};
use std::sync::Arc;

/// One policy to apply to the current request.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub policy: &'a Policy,
    /// Bucket key, already namespaced by the caller ([`KeySpec::bucket_key`](super::KeySpec::bucket_key)).
    pub key: &'a str,
    pub params: Params,
}

/// Values for the `RateLimit-*` response headers (draft-ietf-httpapi-ratelimit-headers-07).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHeaders {
    /// `RateLimit-Limit`: requests per window for this request's tier.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests that could still be made right now (<= `limit`).
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds (rounded up) until the bucket is full again.
    pub reset_secs: u64,
    /// `Retry-After`: whole seconds (rounded up, >= 1); only on refusal.
    pub retry_after_secs: Option<u64>,
    /// `RateLimit-Policy`, see [`Policy::policy_header`].
    pub policy: http::HeaderValue,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The refusing policy (the one with the longest retry-after if several refused).
    pub rejected_by: Option<Arc<str>>,
    /// The tightest policy's headers: the refusing one, else the one with the fewest
    /// remaining. `None` when there were no checks or the store failed.
    pub headers: Option<RateHeaders>,
    /// The Redis store failed or timed out and `allowed` is the `on_error` answer (a
    /// denial then has no headers; the proxy answers 503 `rate_limit_unavailable`).
    pub store_error: bool,
}

impl Decision {
    pub(crate) fn allow_without_headers() -> Decision {
        Decision {
            allowed: true,
            rejected_by: None,
            headers: None,
            store_error: false,
        }
    }
}
