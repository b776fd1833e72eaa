//! The `HttpPeer` for one upstream: the service's timeouts, HTTP/2 choice and TLS
//! settings, for requests and health checks alike.

use super::config::ServiceConfig;
use crate::tls::Alpn;
use pingora::prelude::HttpPeer;
use std::net::SocketAddr;
use std::time::Duration;

/// HTTP/2 streams one pooled upstream connection may carry at once.
const H2_STREAMS: usize = 100;

/// How long each step of an exchange may take.
#[derive(Debug, Clone, Copy)]
pub struct PeerTimeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

/// A peer for `addr`. `host` is the member's host name (SNI and the name its certificate
/// must carry, unless `tls.sni` says otherwise); a fixed IP without one uses its IP.
pub fn build(
    config: &ServiceConfig,
    addr: SocketAddr,
    host: Option<&str>,
    t: PeerTimeouts,
) -> HttpPeer {
    let mut peer = match &config.tls {
        None => {
            let mut peer = HttpPeer::new(addr, false, String::new());
            if config.http2 {
                // Plaintext HTTP/2 to the upstream: prior knowledge, no fallback.
                peer.options.set_http_version(2, 2);
            }
            peer
        }
        Some(tls) => {
            let sni = tls
                .sni
                .as_deref()
                .or(host)
                .map_or_else(|| addr.ip().to_string(), str::to_string);
            let mut peer = HttpPeer::new(addr, true, sni);
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            peer.options.ca = tls.ca.clone();
            peer.client_cert_key = tls.client.clone();
            match tls.alpn {
                Alpn::H1 => peer.options.set_http_version(1, 1),
                Alpn::H2 => peer.options.set_http_version(2, 2),
                Alpn::H2H1 => peer.options.set_http_version(2, 1),
            }
            if tls.alpn != Alpn::H1 {
                peer.options.max_h2_streams = H2_STREAMS;
            }
            // Pingora's pool key covers the address, SNI, client certificate and verify
            // flags but not the CA or ALPN: the fingerprint keeps connections made with
            // other TLS settings apart.
            peer.group_key = tls.fingerprint;
            peer
        }
    };
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.read);
    peer.options.write_timeout = Some(t.write);
    peer.options.idle_timeout = Some(t.idle);
    // The response goes to the client with canonical header names (see
    // `add_gateway_headers`): no map of each name's original spelling.
    peer.options.discard_header_case = true;
    peer
}
