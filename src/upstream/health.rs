//! Active health checks: Pingora's TCP or HTTP check behind a `HealthRegistry`, and the
//! loop that runs it for as long as a runtime uses the service's probe.

use super::config::{HealthCheckConfig, HealthKind};
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::{Backend, HealthRegistry};
use pingora::{Error, ErrorType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A service's active health checking: Pingora's `HealthRegistry` (the probe and the
/// health of each upstream) and how often to run it. Shared by the old and new runtime
/// of a service across a reload when the health-check settings did not change, so health
/// state carries over and only one loop probes.
pub struct HealthProbe {
    pub(super) registry: Arc<HealthRegistry>,
    interval: Duration,
    started: AtomicBool,
}

impl HealthProbe {
    pub fn new(registry: HealthRegistry, interval: Duration) -> Self {
        HealthProbe {
            registry: Arc::new(registry),
            interval,
            started: AtomicBool::new(false),
        }
    }
}

/// Logs each health transition once, with the service and the configured address.
struct HealthLogger {
    service: String,
}

#[async_trait]
impl HealthObserve for HealthLogger {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "service {}: upstream {} is healthy again",
                self.service,
                target.addr
            );
        } else {
            log::warn!(
                "service {}: upstream {} failed its health check and is out of rotation",
                self.service,
                target.addr
            );
        }
    }
}

pub(super) fn health_check(
    service: &str,
    hc: &HealthCheckConfig,
) -> Box<dyn HealthCheck + Send + Sync> {
    let observer = Box::new(HealthLogger {
        service: service.to_string(),
    });
    match &hc.kind {
        HealthKind::Tcp => {
            let mut c = TcpHealthCheck::new();
            c.consecutive_success = hc.healthy_after as usize;
            c.consecutive_failure = hc.unhealthy_after as usize;
            c.peer_template.options.connection_timeout = Some(hc.timeout);
            c.peer_template.options.total_connection_timeout = Some(hc.timeout);
            c.health_changed_callback = Some(observer);
            c
        }
        HealthKind::Http {
            path,
            host,
            expect_status,
        } => {
            let host = host.as_deref().unwrap_or("localhost");
            let mut c = HttpHealthCheck::new(host, false);
            c.consecutive_success = hc.healthy_after as usize;
            c.consecutive_failure = hc.unhealthy_after as usize;
            c.peer_template.options.connection_timeout = Some(hc.timeout);
            c.peer_template.options.total_connection_timeout = Some(hc.timeout);
            c.peer_template.options.read_timeout = Some(hc.timeout);
            c.peer_template.options.write_timeout = Some(hc.timeout);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                // Validated at load: path and host are plain ASCII.
                let _ = req.insert_header("Host", host);
                let _ = req.insert_header("User-Agent", "gatehouse-health-check");
                c.req = req;
            }
            let expect = *expect_status;
            c.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == expect {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                        "during http health check",
                    )
                }
            }));
            c.health_changed_callback = Some(observer);
            Box::new(c)
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
