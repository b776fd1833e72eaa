//! A stored response and the collector that assembles one from a streamed upstream body.

use super::rules;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, Instant};

/// Fixed per-entry overhead counted against `max_bytes` (key, node, `Arc`s, map slots), so
/// a flood of tiny entries cannot use far more memory than the budget says.
const ENTRY_OVERHEAD: u64 = 160;
/// Per-header overhead (the `HeaderName`/`HeaderValue` structs around the bytes).
const HEADER_OVERHEAD: u64 = 32;

/// A response as stored, immutable and shared (`Arc`) by every hit.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    pub status: u16,
    /// Upstream headers minus hop-by-hop, `Set-Cookie` and `Age`, plus a `Content-Length`
    /// matching `body` (except for 204).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// When the response was produced, as far as we know: the time it was stored, moved back
    /// by the upstream `Age`, so that [`age_secs`](Self::age_secs) is the true age.
    pub stored_at: Instant,
    /// Freshness lifetime counted from `stored_at`.
    pub ttl: Duration,
}

impl CachedResponse {
    /// Value for the `Age` header of a hit.
    pub fn age_secs(&self) -> u64 {
        self.age_secs_at(Instant::now())
    }

    pub fn age_secs_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.stored_at).as_secs()
    }

    /// The instant from which the entry is stale (and never served again).
    pub fn expires_at(&self) -> Instant {
        self.stored_at
            .checked_add(self.ttl)
            .unwrap_or(self.stored_at)
    }

    pub fn is_fresh_at(&self, now: Instant) -> bool {
        now < self.expires_at()
    }

    /// Whether it carries a validator (`ETag` or `Last-Modified`) to revalidate it with.
    pub fn has_validators(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| *n == header::ETAG || *n == header::LAST_MODIFIED)
    }

    /// The stored value of a header.
    pub fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// This response refreshed by an upstream `304` (RFC 9111 §4.3.4): each header the
    /// `304` carries replaces the stored ones of that name (hop-by-hop headers,
    /// `Content-Length` and `Set-Cookie` excepted), the body stays, and it is fresh again
    /// for `ttl` from now (less the `304`'s `Age`).
    pub fn refreshed(&self, update: &HeaderMap, ttl: Duration, now: Instant) -> CachedResponse {
        let fresh = rules::storable_headers(update);
        let mut headers: Vec<(HeaderName, HeaderValue)> = self
            .headers
            .iter()
            .filter(|(n, _)| !fresh.iter().any(|(f, _)| f == n))
            .cloned()
            .collect();
        headers.extend(fresh);
        let age = Duration::from_secs(rules::upstream_age(update));
        let (stored_at, ttl) = match now.checked_sub(age) {
            Some(t) => (t, ttl.saturating_add(age)),
            None => (now, ttl),
        };
        CachedResponse {
            status: self.status,
            headers,
            body: self.body.clone(),
            stored_at,
            ttl,
        }
    }

    /// Approximate memory use, the unit of `max_bytes`.
    pub fn approx_size(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64 + HEADER_OVERHEAD)
            .sum();
        ENTRY_OVERHEAD + headers + self.body.len() as u64
    }
}

/// Accumulates a response body chunk by chunk while it streams to the client, giving up (and
/// freeing what it held) as soon as it exceeds `max_body`, so a large download never sits in
/// memory just to be rejected at the end.
#[derive(Debug)]
pub struct BodyCollector {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    ttl: Duration,
    upstream_age: Duration,
    max_body: u64,
    buf: BytesMut,
    overflowed: bool,
}

impl BodyCollector {
    /// `ttl` is what [`RouteCache::storable`](super::RouteCache::storable) returned for
    /// these headers. Chunks are copied: upstream `Bytes` may be slices of large read
    /// buffers, which an entry must not keep alive (nor miscount).
    pub fn new(status: u16, headers: &HeaderMap, ttl: Duration, max_body: u64) -> Self {
        let hint = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(max_body);
        BodyCollector {
            status,
            headers: rules::storable_headers(headers),
            ttl,
            upstream_age: Duration::from_secs(rules::upstream_age(headers)),
            max_body,
            buf: BytesMut::with_capacity(usize::try_from(hint).unwrap_or(0)),
            overflowed: false,
        }
    }

    /// Add a chunk. Returns `false` once the body is over `max_body` (and for every chunk
    /// after that): the caller can then drop the collector and the fill guard.
    pub fn push(&mut self, chunk: &Bytes) -> bool {
        if self.overflowed {
            return false;
        }
        if (self.buf.len() + chunk.len()) as u64 > self.max_body {
            self.overflowed = true;
            self.buf = BytesMut::new();
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The complete response, or `None` if the body overflowed. Call only at end of stream:
    /// a truncated body must never be stored.
    pub fn finish(self) -> Option<CachedResponse> {
        self.finish_at(Instant::now())
    }

    pub fn finish_at(self, now: Instant) -> Option<CachedResponse> {
        if self.overflowed {
            return None;
        }
        let mut headers = self.headers;
        if self.status != 204 {
            headers.push((header::CONTENT_LENGTH, HeaderValue::from(self.buf.len())));
        }
        let (stored_at, ttl) = match now.checked_sub(self.upstream_age) {
            Some(t) => (t, self.ttl.saturating_add(self.upstream_age)),
            None => (now, self.ttl),
        };
        Some(CachedResponse {
            status: self.status,
            headers,
            body: self.buf.freeze(),
            stored_at,
            ttl,
        })
    }
}
