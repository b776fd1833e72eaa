//! Active health checks behind Pingora's `HealthRegistry`, and the loop that runs them
//! for as long as a runtime uses the service's probe.
//!
//! The check is Gatehouse's own [`Probe`] rather than Pingora's TCP/HTTP checks so that
//! it reaches each member exactly as requests do: the same peer (TLS settings, client
//! certificate, SNI of that member, HTTP version), built by [`super::peer::build`].

use super::adaptive::{HealthState, Rules, Tracker};
use super::config::{HealthCheckConfig, HealthKind, ServiceConfig};
use super::discovery::MemberInfo;
use super::peer::{self, PeerTimeouts};
use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::connectors::TransportConnector;
use pingora::http::RequestHeader;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::{Backend, HealthRegistry};
use pingora::{Error, ErrorType, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A service's active health checking: Pingora's `HealthRegistry` (the probe and the
/// health of each upstream) and how often to run it. Shared by the old and new runtime
/// of a service across a reload when the check and the way to reach the upstreams did
/// not change, so health state carries over and only one loop probes.
pub struct HealthProbe {
    pub(super) registry: Arc<HealthRegistry>,
    /// How often the loop runs a pass (adaptive checks: how often it looks for
    /// upstreams that are due).
    interval: Duration,
    started: AtomicBool,
    /// Adaptive checks: each upstream's state and next check.
    pub(super) adaptive: Option<Arc<Tracker>>,
}

impl HealthProbe {
    pub fn new(config: &ServiceConfig, hc: &HealthCheckConfig) -> Self {
        // Health is keyed by address alone, so a weight change keeps it.
        let registry = HealthRegistry::with_equivalence(|b| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            b.addr.hash(&mut h);
            h.finish()
        });
        let adaptive = hc.adaptive.map(|adaptive| {
            Arc::new(Tracker::new(Rules {
                adaptive,
                healthy_after: hc.healthy_after,
                unhealthy_after: hc.unhealthy_after,
            }))
        });
        let mut probe = Probe::new(config, hc);
        probe.adaptive = adaptive.clone();
        registry.set_health_check(Box::new(probe));
        HealthProbe {
            registry: Arc::new(registry),
            interval: adaptive.as_ref().map_or(hc.interval, |t| t.tick()),
            started: AtomicBool::new(false),
            adaptive,
        }
    }
}

/// One check of one member: a TCP (and TLS) connection, or an HTTP exchange whose
/// status must be the expected one.
struct Probe {
    service: String,
    config: ServiceConfig,
    check: HealthCheckConfig,
    http: Connector,
    tcp: TransportConnector,
    adaptive: Option<Arc<Tracker>>,
}

impl Probe {
    fn new(config: &ServiceConfig, check: &HealthCheckConfig) -> Self {
        Probe {
            service: config.name.clone(),
            config: config.clone(),
            check: check.clone(),
            http: Connector::new(None),
            tcp: TransportConnector::new(None),
            adaptive: None,
        }
    }

    async fn http(
        &self,
        peer: &pingora::prelude::HttpPeer,
        path: &str,
        host: &str,
        expect: u16,
    ) -> Result<()> {
        let (mut session, _reused) = self.http.get_http_session(peer).await?;
        session.set_write_timeout(Some(self.check.timeout));
        session.set_read_timeout(Some(self.check.timeout));
        let mut req = RequestHeader::build("GET", path.as_bytes(), None)?;
        req.insert_header("Host", host)?;
        req.insert_header("User-Agent", "gatehouse-health-check")?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let status = session.response_header().map_or(0, |r| r.status.as_u16());
        if status != expect {
            return Error::e_explain(
                ErrorType::CustomCode("unexpected status", status),
                "during http health check",
            );
        }
        while session.read_response_body().await?.is_some() {}
        Ok(())
    }
}

#[async_trait]
impl HealthCheck for Probe {
    fn health_threshold(&self, success: bool) -> usize {
        if self.adaptive.is_some() {
            // The tracker decides; the registry mirrors each verdict.
            1
        } else if success {
            self.check.healthy_after as usize
        } else {
            self.check.unhealthy_after as usize
        }
    }

    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(tracker) = &self.adaptive else {
            return self.probe(target).await;
        };
        let Some(&addr) = target.addr.as_inet() else {
            return Error::e_explain(ErrorType::InternalError, "not an IP upstream");
        };
        if let Err(state) = tracker.due(addr, std::time::Instant::now()) {
            // Not due: the verdict stands.
            return verdict(state, None);
        }
        let result = self.probe(target).await;
        let (before, state) = tracker.record(addr, result.is_ok(), std::time::Instant::now());
        if before != state && state.in_rotation() && before.in_rotation() {
            // Into or out of rotation is logged by health_status_change.
            log::info!(
                "service {}: upstream {addr} is now {} ({})",
                self.service,
                state.name(),
                result
                    .as_ref()
                    .err()
                    .map_or_else(|| "check passed".to_string(), |e| e.to_string())
            );
        }
        verdict(state, result.err())
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let label = target
            .ext
            .get::<MemberInfo>()
            .map_or_else(|| target.addr.to_string(), |m| m.label.to_string());
        if healthy {
            log::info!(
                "service {}: upstream {label} is healthy again",
                self.service
            );
        } else {
            log::warn!(
                "service {}: upstream {label} failed its health check and is out of rotation",
                self.service
            );
        }
    }
}

/// What an adaptive check tells the registry: in rotation or not (with the check's own
/// error when there is one).
fn verdict(state: HealthState, error: Option<Box<Error>>) -> Result<()> {
    if state.in_rotation() {
        return Ok(());
    }
    match error {
        Some(e) => Err(e),
        None => Error::e_explain(
            ErrorType::CustomCode("unhealthy", 0),
            "failing its adaptive health checks",
        ),
    }
}

impl Probe {
    /// One check of one member.
    async fn probe(&self, target: &Backend) -> Result<()> {
        let host = target
            .ext
            .get::<MemberInfo>()
            .and_then(|m| m.host.as_deref());
        let t = self.check.timeout;
        let timeouts = PeerTimeouts {
            connect: t,
            read: t,
            write: t,
            idle: t,
        };
        let Some(&addr) = target.addr.as_inet() else {
            return Error::e_explain(ErrorType::InternalError, "not an IP upstream");
        };
        let peer = peer::build(&self.config, addr, host, timeouts);
        let work = async {
            match &self.check.kind {
                HealthKind::Tcp => self.tcp.new_stream(&peer).await.map(drop),
                HealthKind::Http {
                    path,
                    host: header,
                    expect_status,
                } => {
                    let header = header.as_deref().or(host).unwrap_or("localhost");
                    self.http(&peer, path, header, *expect_status).await
                }
            }
        };
        // The whole check, TLS and all, within twice the timeout.
        match tokio::time::timeout(t * 2, work).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(ErrorType::ConnectTimedout, "health check timed out"),
        }
    }
}

/// Start the probe's loop unless it runs already. The loop holds only a weak reference
/// to its probe, so it ends when no runtime uses the probe any more (the service was
/// removed or its health-check settings changed).
pub(super) fn spawn(probe: &Arc<HealthProbe>) {
    if probe.started.swap(true, Ordering::SeqCst) {
        return;
    }
    let interval = probe.interval;
    let weak: Weak<HealthProbe> = Arc::downgrade(probe);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(probe) = weak.upgrade() else {
                return;
            };
            probe.registry.run_health_check(true).await;
        }
    });
}
