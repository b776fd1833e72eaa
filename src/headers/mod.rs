//! Client identity and the headers the gateway adds (`request_filter`,
//! `upstream_request_filter`).
//!
//! - The client IP is the TCP peer, or — only when the peer is a configured trusted
//!   proxy — the right-most address in `X-Forwarded-For` that is not itself trusted.
//! - `X-Request-Id` is kept when the client sent a sane one (1–128 visible ASCII
//!   characters from a safe set), else generated: a per-process random prefix plus a
//!   counter, unique without a syscall or a lock.

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

// The gateway's own headers, as constants: a `&str` name is parsed (and, on insert,
// allocated) every time it is used.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The authenticated consumer's name, and its groups (comma-separated), for the upstream.
/// W3C Trace Context (set on upstream requests when `tracing:` is on).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const X_CONSUMER: HeaderName = HeaderName::from_static("x-consumer");
pub const X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
/// `RateLimit-Limit`, `-Remaining`, `-Reset` and `-Policy`, in that order.
pub const RATE_HEADER_NAMES: [&str; 4] = [
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
];
pub const RATE_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static(RATE_HEADER_NAMES[0]),
    HeaderName::from_static(RATE_HEADER_NAMES[1]),
    HeaderName::from_static(RATE_HEADER_NAMES[2]),
    HeaderName::from_static(RATE_HEADER_NAMES[3]),
];

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// `::ffff:10.0.0.1` is `10.0.0.1` for trust decisions and logs.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client address per SPEC: the peer, or the right-most untrusted hop of
/// `X-Forwarded-For` when the peer is trusted. Unparsable entries end the walk (the
/// last trusted hop is then the best we know).
pub fn client_ip(peer: IpAddr, xff: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let Some(list) = xff.and_then(|v| std::str::from_utf8(v).ok()) else {
        return peer;
    };
    let mut client = peer;
    for hop in list.rsplit(',') {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let h = hop.trim();
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    h.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// The `X-Forwarded-For` value to send upstream: the incoming chain (only when the peer
/// is trusted) with the peer appended.
pub fn forwarded_for(peer: IpAddr, incoming: Option<&[u8]>, peer_trusted: bool) -> HeaderValue {
    let peer = canonical(peer);
    match incoming.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(chain) if peer_trusted && !chain.trim().is_empty() => {
            let chain = chain.trim();
            let mut v = Vec::with_capacity(chain.len() + 2 + 45);
            v.extend_from_slice(chain.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip_text(peer, &mut [0; 48]).as_bytes());
            // The chain came from a valid header value; ", <ip>" keeps it valid.
            HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).unwrap_or_else(|_| ip_value(peer))
        }
        _ => ip_value(peer),
    }
}

/// An address as a header value (`X-Real-IP`), formatted without a heap `String`. One
/// allocation holds the text, and clones share it (`X-Forwarded-For` is often the same).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = Text::default();
    text.len = ip_text(canonical(ip), &mut text.buf).len() as u8;
    // Digits, hex, `.` and `:`: always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Up to 48 bytes of header text, owned by the `Bytes` of one header value.
struct Text {
    buf: [u8; 48],
    len: u8,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len).min(48)]
    }
}

/// Each octet's decimal digits and their count.
static OCTET_TEXT: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if b >= 100 {
            ([b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10], 3)
        } else if b >= 10 {
            ([b'0' + b / 10, b'0' + b % 10, 0], 2)
        } else {
            ([b'0' + b, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// `ip` as text, written into `buf` (IPv4 from a table: `fmt` costs more than the rest of
/// a header or a rate-limit key).
pub fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for octet in v4.octets() {
                let (digits, n) = OCTET_TEXT[usize::from(octet)];
                buf[len..len + 3].copy_from_slice(&digits);
                buf[len + usize::from(n)] = b'.';
                len += usize::from(n) + 1;
            }
            len - 1
        }
        IpAddr::V6(_) => {
            // The longest IPv6 text form is 45 bytes.
            let mut cursor = &mut buf[..];
            let _ = write!(cursor, "{ip}");
            48 - cursor.len()
        }
    };
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// A client-sent request id is kept if it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 16 hex digits of per-process randomness + 16 of a counter, built
/// on the stack (one allocation: the header value itself, shared by every use).
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = Text {
        len: 32,
        ..Text::default()
    };
    hex16(prefix, &mut text.buf[..16]);
    hex16(n, &mut text.buf[16..32]);
    // One allocation; the upstream request, the response and the log share it.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn hex16(mut v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// What Pingora's standard upstream request policy (hop-by-hop fields stripped,
/// `Connection` nominations stripped or rejected, only WebSocket upgrades forwarded)
/// would do to a request with these headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopByHop {
    /// No field it acts on: the policy changes nothing.
    Absent,
    /// Only `Connection`, nominating nothing but `keep-alive` or `close` (the common
    /// HTTP/1.x client case): the policy removes `Connection` and changes nothing else.
    PersistenceOnly,
    /// Anything else (other hop-by-hop fields, nominations, upgrades): Pingora's policy
    /// must run.
    Other,
}

/// Classify a request for [`HopByHop`]. Pingora runs its policy on a copy of every
/// request, removing ten names from both of its header maps whether or not they are
/// there; a look at the names present costs a small fraction of that.
pub fn hop_by_hop(headers: &http::HeaderMap) -> HopByHop {
    let mut connection = false;
    for name in headers.keys() {
        match name.as_str() {
            "connection" => connection = true,
            // Pingora's standard hop-by-hop list, and a field named `close` (which a
            // `Connection: close` would nominate for removal).
            "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
            | "close" => return HopByHop::Other,
            _ => {}
        }
    }
    if !connection {
        return HopByHop::Absent;
    }
    // Pingora refuses ten or more nominations; stay well inside that.
    let mut tokens = 0;
    for value in headers.get_all(http::header::CONNECTION) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            tokens += 1;
            if tokens > 4
                || !(token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"close"))
            {
                return HopByHop::Other;
            }
        }
    }
    HopByHop::PersistenceOnly
}

#[cfg(test)]
mod tests;
