//! Distributed tracing: W3C Trace Context in and out, spans exported over OTLP/HTTP
//! (`tracing:`; off without it, and then nothing here runs).
//!
//! Each request gets a trace: the client's `traceparent` when it sends a valid one
//! (its sampling decision is kept: parent-based), else a new trace sampled at
//! `sample_ratio` by its id. Every upstream attempt gets a span id of its own, sent as
//! the parent in the upstream's `traceparent` (with the client's `tracestate`), so the
//! upstream's spans hang under Gatehouse's. A sampled request yields one SERVER span
//! (route, service, status, auth and limit outcome, request id) and one CLIENT span
//! per attempt (upstream, retry number, outcome, status).
//!
//! The request path only fills a small struct and `try_send`s it into a bounded queue
//! ([`Tracer::finish`]); a full queue drops it (counted in
//! `gatehouse_tracing_spans_dropped_total`). A background task (`export`) writes queued
//! requests as OTLP protobuf ([`encode`]) and posts them in batches, each post bounded
//! by `timeout`: a slow or dead collector costs requests nothing.

pub mod config;
pub mod context;
pub mod encode;
mod export;
#[cfg(test)]
mod tests;

pub use config::TracingConfig;

use crate::metrics::Metrics;
use http::HeaderValue;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// The tracer of one `tracing:` config; a reload with the same section keeps it.
pub struct Tracer {
    pub config: TracingConfig,
    /// Traces whose id's low 64 bits fall below this are sampled (`sample_ratio`).
    threshold: u64,
    tx: mpsc::Sender<Finished>,
    /// Taken by the exporter task when it starts.
    rx: Mutex<Option<mpsc::Receiver<Finished>>>,
    started: AtomicBool,
}

impl Tracer {
    pub fn new(config: TracingConfig) -> Tracer {
        let (tx, rx) = mpsc::channel(config.queue_size);
        Tracer {
            threshold: ratio_threshold(config.sample_ratio),
            config,
            tx,
            rx: Mutex::new(Some(rx)),
            started: AtomicBool::new(false),
        }
    }

    /// Start the exporter (once; call inside the tokio runtime). It ends, after
    /// sending what is queued, when the last request holding this tracer is done.
    pub fn start_background(&self, metrics: &Arc<Metrics>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx {
            tokio::spawn(export::run(self.config.clone(), rx, metrics.clone()));
        }
    }

    /// The trace of a new request, from its `traceparent` / `tracestate`.
    pub fn start(&self, req: &pingora::http::RequestHeader) -> Box<RequestTrace> {
        let parent = req
            .headers
            .get("traceparent")
            .and_then(|v| context::parse_traceparent(v.as_bytes()));
        let (trace_id, parent_span, sampled, tracestate) = match parent {
            Some(p) => (
                p.trace_id,
                Some(p.span_id),
                p.sampled,
                req.headers.get("tracestate").cloned(),
            ),
            None => {
                let id = context::new_trace_id();
                (id, None, self.samples(&id), None)
            }
        };
        let mut hex = [0u8; 32];
        context::hex_into(&trace_id, &mut hex);
        Box::new(RequestTrace {
            trace_id,
            hex,
            span_id: context::new_span_id(),
            parent: parent_span,
            sampled,
            tracestate,
            start: SystemTime::now(),
            attempts: SmallVec::new(),
        })
    }

    /// Whether a new trace with this id is recorded.
    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8]));
        self.threshold == u64::MAX || low < self.threshold
    }

    /// Queue a finished request's spans for export (only sampled ones). `Err(n)`: the
    /// queue was full and its `n` spans were dropped.
    pub fn finish(&self, f: Finished) -> Result<(), u64> {
        if !f.trace.sampled {
            return Ok(());
        }
        let spans = 1 + f.trace.attempts.len() as u64;
        self.tx.try_send(f).map_err(|_| spans)
    }
}

/// `ratio` of the u64 range (u64::MAX: always).
fn ratio_threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    }
}

/// One request's trace: its ids, start, and its upstream attempts.
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The trace id as hex (the access log's `trace_id`).
    hex: [u8; 32],
    /// The request's (SERVER) span.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
    /// The client's `tracestate`, passed on as it came.
    pub tracestate: Option<HeaderValue>,
    pub start: SystemTime,
    pub attempts: SmallVec<[Attempt; 2]>,
}

/// One upstream attempt's (CLIENT) span.
pub struct Attempt {
    pub span_id: [u8; 8],
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub upstream: Arc<str>,
    /// `ok`, `error`, `timeout`, `refused`, `tls_error`; empty while running.
    pub outcome: &'static str,
    /// The upstream's status, 0 without one.
    pub status: u16,
}

impl RequestTrace {
    pub fn trace_id_hex(&self) -> &str {
        std::str::from_utf8(&self.hex).unwrap_or("")
    }

    /// A new attempt on `upstream` ([`RequestTrace::attempt_header`] is its
    /// `traceparent`).
    pub fn begin_attempt(&mut self, upstream: Arc<str>) {
        let span_id = context::new_span_id();
        self.attempts.push(Attempt {
            span_id,
            start: SystemTime::now(),
            end: None,
            upstream,
            outcome: "",
            status: 0,
        });
    }

    /// The `traceparent` of the current attempt (sent with its request).
    pub fn attempt_header(&self) -> Option<HeaderValue> {
        let a = self.attempts.last()?;
        Some(context::traceparent(
            &self.trace_id,
            &a.span_id,
            self.sampled,
        ))
    }

    /// The current attempt ended (first outcome wins).
    pub fn end_attempt(&mut self, outcome: &'static str, status: u16) {
        if let Some(a) = self.attempts.last_mut() {
            if a.end.is_none() {
                a.end = Some(SystemTime::now());
                a.outcome = outcome;
                a.status = status;
            }
        }
    }
}

/// What the request span says, gathered at `logging`.
pub struct Finished {
    pub trace: Box<RequestTrace>,
    pub end: SystemTime,
    pub method: http::Method,
    pub path: String,
    pub host: Option<String>,
    pub status: u16,
    pub route: Option<Arc<str>>,
    pub service: Option<Arc<str>>,
    pub client_ip: Option<IpAddr>,
    pub request_id: HeaderValue,
    /// `ok` (a credential was accepted), `refused`, or `none` (the route needs none).
    pub auth: &'static str,
    /// `ok` or `limited` on routes with rate limits.
    pub rate_limit: Option<&'static str>,
    /// The gateway's error code when it answered itself.
    pub error: Option<&'static str>,
    /// `HIT`, `MISS` or `BYPASS` on cached routes.
    pub cache: Option<&'static str>,
    /// The consumer the request was authenticated as.
    pub consumer: Option<Arc<str>>,
}
