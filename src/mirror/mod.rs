//! Request mirroring (`routes[].mirror: { service, percent }`) for shadow testing: a
//! copy of a share of a route's requests goes to another service, fire-and-forget.
//!
//! - The copy is the request exactly as the route's own upstream receives it (after
//!   rewrites, with the forwarded identity and `X-Forwarded-*` headers), plus
//!   `X-Gatehouse-Mirror: 1`, taken in `upstream_request_filter` of the first attempt;
//!   its body is collected as the primary request streams it (up to `max_body`; a
//!   longer body is not mirrored). Requests the gateway refused (auth, limits) or
//!   answered itself (cache hits, redirects) are not mirrored.
//! - Which requests: the golden-ratio sequence over `percent`, so any stretch of
//!   requests is mirrored close to the share and the choice costs one atomic add.
//! - The copy is sent from its own task over Pingora's connector to an upstream of the
//!   mirror service (healthy, not draining, breaker closed), bounded by that service's
//!   connect + read timeouts; its answer is read and discarded. It never delays, fails
//!   or retries the primary request, and it does not count in the service's breakers
//!   or upstream metrics.
//! - At most `max_in_flight` copies per route are under way; the next ones are dropped
//!   and counted (`gatehouse_mirror_requests_total{outcome="dropped"}`).

use crate::config::de::de;
use crate::config::error::ConfigError;
use crate::config::units::Size;
use crate::metrics::Metrics;
use crate::upstream::ServiceRuntime;
use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use serde::Deserialize;
use serde_yaml::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    service: String,
    percent: Option<f64>,
    max_in_flight: Option<usize>,
    max_body: Option<Size>,
}

/// A validated `mirror:` block.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    pub service: String,
    /// Share of the route's requests copied, 0 < percent ≤ 100.
    pub percent: f64,
    pub max_in_flight: usize,
    pub max_body: usize,
}

pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024;

/// Validate `path` (`routes[i].mirror`) against the declared service names.
pub fn validate(
    v: Value,
    path: &str,
    services: &[String],
    errors: &mut Vec<ConfigError>,
) -> Option<MirrorConfig> {
    let raw: RawMirror = de(v, path, errors)?;
    let before = errors.len();
    if !services.contains(&raw.service) {
        errors.push(ConfigError::new(
            format!("{path}.service"),
            format!(
                "unknown service {:?} (known: {})",
                raw.service,
                services.join(", ")
            ),
        ));
    }
    let percent = raw.percent.unwrap_or(100.0);
    if !(percent > 0.0 && percent <= 100.0) {
        errors.push(ConfigError::new(
            format!("{path}.percent"),
            "must be above 0 and at most 100",
        ));
    }
    let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !(1..=10_000).contains(&max_in_flight) {
        errors.push(ConfigError::new(
            format!("{path}.max_in_flight"),
            "must be between 1 and 10000",
        ));
    }
    let max_body = raw.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0);
    if max_body > 16 << 20 {
        errors.push(ConfigError::new(
            format!("{path}.max_body"),
            "must be at most 16MiB (each copy in flight holds its body)",
        ));
    }
    (errors.len() == before).then(|| MirrorConfig {
        service: raw.service,
        percent,
        max_in_flight,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
    })
}

/// A route's mirror at run time.
pub struct Mirror {
    pub service: Arc<ServiceRuntime>,
    /// `percent` as a fraction of 2^64 (the sequence's threshold).
    threshold: u128,
    max_in_flight: usize,
    max_body: usize,
    /// Requests considered so far (the sequence's index).
    counter: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    connector: Arc<Connector>,
}

/// A copy waiting for the rest of its body.
pub struct PendingCopy {
    header: RequestHeader,
    body: BytesMut,
}

impl Mirror {
    pub fn new(config: &MirrorConfig, service: Arc<ServiceRuntime>) -> Mirror {
        Mirror {
            service,
            threshold: ((config.percent / 100.0) * 2f64.powi(64)) as u128,
            max_in_flight: config.max_in_flight,
            max_body: config.max_body,
            counter: AtomicU64::new(0),
            in_flight: Arc::default(),
            connector: Arc::new(Connector::new(None)),
        }
    }

    /// Whether this request is one to copy.
    pub fn pick(&self) -> bool {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        u128::from(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) < self.threshold
    }

    /// Start a copy of the forwarded request `header`; its body follows through
    /// [`Mirror::body`].
    pub fn begin(&self, header: &RequestHeader) -> Box<PendingCopy> {
        let mut header = header.clone();
        let _ = header.insert_header("X-Gatehouse-Mirror", "1");
        Box::new(PendingCopy {
            header,
            body: BytesMut::new(),
        })
    }
}

impl PendingCopy {
    /// The body is sent again from its start (a retry replays it from the buffer).
    pub fn restart_body(&mut self) {
        self.body.clear();
    }
}

impl Mirror {
    /// Add a body chunk to the copy; false when the body outgrew `max_body` (the copy is
    /// then abandoned).
    pub fn body(&self, copy: &mut PendingCopy, chunk: &[u8]) -> bool {
        if copy.body.len() + chunk.len() > self.max_body {
            return false;
        }
        copy.body.extend_from_slice(chunk);
        true
    }

    /// Send the complete copy from its own task (or drop it when too many are under way).
    pub fn send(&self, copy: Box<PendingCopy>, metrics: &Arc<Metrics>, route: &Arc<str>) {
        let count = |outcome: &str| {
            metrics
                .mirror_requests
                .with_label_values(&[route, &self.service.name, outcome])
                .inc();
        };
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            count("dropped");
            return;
        }
        let guard = InFlight(self.in_flight.clone());
        let service = self.service.clone();
        let connector = self.connector.clone();
        let metrics = metrics.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let PendingCopy { header, body } = *copy;
            let limit = service.config.timeouts.connect + service.config.timeouts.read;
            let outcome = match tokio::time::timeout(
                limit,
                send_copy(&service, &connector, header, body.freeze()),
            )
            .await
            {
                Ok(Ok(())) => "ok",
                Ok(Err(e)) => {
                    log::debug!("mirror to service {}: {e}", service.name);
                    "error"
                }
                Err(_) => "timeout",
            };
            metrics
                .mirror_requests
                .with_label_values(&[&route, &service.name, outcome])
                .inc();
        });
    }

    /// Count a copy given up because its body was longer than `max_body`.
    pub fn skipped(&self, metrics: &Metrics, route: &str) {
        metrics
            .mirror_requests
            .with_label_values(&[route, &self.service.name, "skipped"])
            .inc();
    }
}

/// Releases an in-flight slot when the copy's task ends, however it ends.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One exchange with an upstream of the mirror service; the answer is read and dropped.
async fn send_copy(
    service: &ServiceRuntime,
    connector: &Connector,
    header: RequestHeader,
    body: Bytes,
) -> pingora::Result<()> {
    let members = service.members();
    let Some(i) = service.pick_for_copy(&members) else {
        return pingora::Error::e_explain(
            pingora::ErrorType::ConnectNoRoute,
            "no healthy upstream in the mirror service",
        );
    };
    let peer = service.peer(&members.upstreams[i]);
    let (mut session, _reused) = connector.get_http_session(&peer).await?;
    let t = &service.config.timeouts;
    session.set_write_timeout(Some(t.write));
    session.set_read_timeout(Some(t.read));
    let mut header = header;
    if !body.is_empty() || header.headers.contains_key(http::header::CONTENT_LENGTH) {
        // Sent whole: the primary's framing (chunked or not) becomes a length.
        header.remove_header(&http::header::TRANSFER_ENCODING);
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    // The copy was made for the primary's upstream: fit it to this one's protocol.
    match &session {
        HttpSession::H2(_) => to_h2(&mut header, peer.is_tls())?,
        _ => to_h1(&mut header)?,
    }
    session.write_request_header(Box::new(header)).await?;
    if !body.is_empty() {
        session.write_request_body(body, false).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    while session.read_response_body().await?.is_some() {}
    connector.release_http_session(session, &peer, None).await;
    Ok(())
}

/// A request head for HTTP/1.1: origin-form target, the authority (an HTTP/2 primary's
/// copy has it in the URI) in `Host`.
fn to_h1(header: &mut RequestHeader) -> pingora::Result<()> {
    header.set_version(http::Version::HTTP_11);
    if let Some(authority) = header.uri.authority().map(|a| a.as_str().to_string()) {
        if !header.headers.contains_key(http::header::HOST) {
            header.insert_header(http::header::HOST, authority)?;
        }
        let path = header
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = path.parse::<http::Uri>().map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "mirror URI", e)
        })?;
        header.set_uri(uri);
    }
    Ok(())
}

/// An HTTP/1.1 request head as HTTP/2 wants it: no connection-specific headers, the
/// authority (from `Host`) and scheme in the URI.
fn to_h2(header: &mut RequestHeader, tls: bool) -> pingora::Result<()> {
    for name in [
        "transfer-encoding",
        "connection",
        "upgrade",
        "keep-alive",
        "proxy-connection",
    ] {
        header.remove_header(name);
    }
    header.set_version(http::Version::HTTP_2);
    if header.uri.authority().is_none() {
        let authority = header
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        let path = header
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = http::Uri::builder()
            .scheme(if tls { "https" } else { "http" })
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| {
                pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "mirror URI", e)
            })?;
        header.set_uri(uri);
    }
    Ok(())
}
