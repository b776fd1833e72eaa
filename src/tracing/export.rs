//! The exporter task: queued requests → OTLP/HTTP protobuf posts, in batches.

use super::{encode, Finished, TracingConfig};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Encoded spans waiting to be sent.
struct Batch {
    spans: Vec<u8>,
    count: u64,
}

impl Batch {
    fn add(&mut self, f: &Finished) {
        self.count += encode::spans(f, &mut self.spans);
    }
}

pub(super) async fn run(
    config: TracingConfig,
    mut rx: mpsc::Receiver<Finished>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Batch {
        spans: Vec::with_capacity(64 * 1024),
        count: 0,
    };
    let mut last_log: Option<Instant> = None;
    let full = config.batch_size as u64;
    loop {
        let Some(first) = rx.recv().await else {
            break;
        };
        batch.add(&first);
        drop(first);
        let deadline = tokio::time::Instant::now() + config.flush_interval;
        while batch.count < full {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(f) => batch.add(&f),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        export(&config, &mut batch, &metrics, &mut last_log).await;
    }
    // The tracer is gone (a reload replaced it, or shutdown): send what is left.
    if batch.count > 0 {
        export(&config, &mut batch, &metrics, &mut last_log).await;
    }
}

/// Post the batch (emptied either way); count what the collector took or what was lost.
async fn export(
    config: &TracingConfig,
    batch: &mut Batch,
    metrics: &Metrics,
    last_log: &mut Option<Instant>,
) {
    let n = std::mem::take(&mut batch.count);
    let body = encode::request(&config.service_name, &batch.spans);
    batch.spans.clear();
    if batch.spans.capacity() > 4 * 1024 * 1024 {
        batch.spans.shrink_to(64 * 1024);
    }
    let sent = async {
        let client = crate::http_client::shared()?;
        let mut req = client
            .post(config.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body);
        for (name, value) in &config.headers {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(crate::http_client::describe)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", resp.status()))
        }
    };
    let result = match tokio::time::timeout(config.timeout, sent).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", config.timeout)),
    };
    match result {
        Ok(()) => metrics.spans_exported.inc_by(n),
        Err(e) => {
            metrics.spans_dropped.inc_by(n);
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                *last_log = Some(Instant::now());
                log::warn!(
                    "tracing: export of {n} spans to {} failed: {e} (dropped; logged at most every 10 s)",
                    crate::http_client::redacted(&config.endpoint)
                );
            }
        }
    }
}
