//! Client identity and the headers the gateway adds (`request_filter`,
//! `upstream_request_filter`).
//!
//! - The client IP is the TCP peer, or — only when the peer is a configured trusted
//!   proxy — the right-most address in `X-Forwarded-For` that is not itself trusted.
//! - `X-Request-Id` is kept when the client sent a sane one (1–128 visible ASCII
//!   characters from a safe set), else generated: a per-process random prefix plus a
//!   counter, unique without a syscall or a lock.

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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
pub fn forwarded_for(peer: IpAddr, incoming: Option<&[u8]>, peer_trusted: bool) -> String {
    let peer = canonical(peer);
    match incoming.and_then(|v| std::str::from_utf8(v).ok()) {
        Some(chain) if peer_trusted && !chain.trim().is_empty() => {
            format!("{}, {peer}", chain.trim())
        }
        _ => peer.to_string(),
    }
}

/// A client-sent request id is kept if it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn sane_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 16 hex digits of per-process randomness + 16 of a counter.
pub fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(peer, Some(b"1.1.1.1"), &t), peer);
        assert_eq!(forwarded_for(peer, Some(b"1.1.1.1"), false), "203.0.113.9");
    }

    #[test]
    fn trusted_peer_gives_rightmost_untrusted_hop() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let t = nets(&["10.0.0.0/8"]);
        let xff = b"6.6.6.6, 198.51.100.7, 10.0.0.5";
        assert_eq!(
            client_ip(peer, Some(xff), &t),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            forwarded_for(peer, Some(xff), true),
            "6.6.6.6, 198.51.100.7, 10.0.0.5, 10.0.0.2"
        );
        // all hops trusted: the left-most one we saw
        assert_eq!(
            client_ip(peer, Some(b"10.1.1.1"), &t),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        // garbage stops the walk
        assert_eq!(
            client_ip(peer, Some(b"nonsense"), &t),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn mapped_v6_is_v4() {
        let peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert!(is_trusted(peer, &nets(&["10.0.0.0/8"])));
    }

    #[test]
    fn request_ids() {
        assert!(sane_request_id(b"abc-123_x.y:z"));
        assert!(!sane_request_id(b""));
        assert!(!sane_request_id(b"a b"));
        assert!(!sane_request_id(b"<script>"));
        assert!(!sane_request_id(&[b'a'; 129]));
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(sane_request_id(a.as_bytes()));
    }
}
