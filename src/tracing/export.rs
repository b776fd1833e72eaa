//! The exporter task: queued requests → OTLP/HTTP protobuf posts, in batches.

use super::{Finished, TracingConfig};
use crate::metrics::Metrics;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Failures are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) async fn run(
    config: TracingConfig,
    mut rx: mpsc::Receiver<Finished>,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Span> = Vec::with_capacity(config.batch_size);
    let mut last_log: Option<Instant> = None;
    loop {
        let Some(first) = rx.recv().await else {
            break;
        };
        spans(&first, &mut batch);
        let deadline = tokio::time::Instant::now() + config.flush_interval;
        while batch.len() < config.batch_size {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(f) => spans(&f, &mut batch),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        export(&config, &mut batch, &metrics, &mut last_log).await;
    }
    // The tracer is gone (a reload replaced it, or shutdown): send what is left.
    if !batch.is_empty() {
        export(&config, &mut batch, &metrics, &mut last_log).await;
    }
}

/// Post `batch` (emptied either way); count what the collector took or what was lost.
async fn export(
    config: &TracingConfig,
    batch: &mut Vec<Span>,
    metrics: &Metrics,
    last_log: &mut Option<Instant>,
) {
    let n = batch.len() as u64;
    let body = request(config, std::mem::take(batch)).encode_to_vec();
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
    batch.reserve(config.batch_size);
}

fn request(config: &TracingConfig, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            kv("service.name", s(&config.service_name)),
            kv("service.version", s(env!("CARGO_PKG_VERSION"))),
            kv("telemetry.sdk.name", s("gatehouse")),
            kv("telemetry.sdk.language", s("rust")),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "gatehouse".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.to_string())
}

fn int(v: impl Into<i64>) -> any_value::Value {
    any_value::Value::IntValue(v.into())
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        message: message.to_string(),
        code: status::StatusCode::Error as i32,
    })
}

/// The request's span and one per attempt, appended to `out`.
pub(super) fn spans(f: &Finished, out: &mut Vec<Span>) {
    let t = &f.trace;
    let tracestate = t
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let flags = 0x100 | u32::from(t.parent.is_some()) << 9 | 1;
    let route = f.route.as_deref().unwrap_or("none");
    let mut attrs = vec![
        kv("http.request.method", s(f.method.as_str())),
        kv("url.path", s(&f.path)),
        kv("http.response.status_code", int(f.status)),
        kv("gatehouse.route", s(route)),
        kv(
            "gatehouse.request_id",
            s(f.request_id.to_str().unwrap_or("")),
        ),
        kv("gatehouse.auth", s(f.auth)),
        kv("gatehouse.attempts", int(t.attempts.len() as i64)),
    ];
    if let Some(h) = &f.host {
        attrs.push(kv("server.address", s(h)));
    }
    if let Some(ip) = f.client_ip {
        attrs.push(kv("client.address", s(&ip.to_string())));
    }
    if let Some(svc) = &f.service {
        attrs.push(kv("gatehouse.service", s(svc)));
    }
    if let Some(r) = f.rate_limit {
        attrs.push(kv("gatehouse.rate_limit", s(r)));
    }
    if let Some(e) = f.error {
        attrs.push(kv("gatehouse.error", s(e)));
    }
    if let Some(c) = f.cache {
        attrs.push(kv("gatehouse.cache", s(c)));
    }
    if let Some(c) = &f.consumer {
        attrs.push(kv("gatehouse.consumer", s(c)));
    }
    out.push(Span {
        trace_id: t.trace_id.to_vec(),
        span_id: t.span_id.to_vec(),
        trace_state: tracestate.clone(),
        parent_span_id: t.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name: match &f.route {
            Some(r) => format!("{} {r}", f.method),
            None => f.method.to_string(),
        },
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: nanos(t.start),
        end_time_unix_nano: nanos(f.end),
        attributes: attrs,
        status: if f.status >= 500 {
            error_status(f.error.unwrap_or("5xx"))
        } else {
            None
        },
        ..Default::default()
    });
    let service = f.service.as_deref().unwrap_or("none");
    for (retry, a) in t.attempts.iter().enumerate() {
        let outcome = if a.outcome.is_empty() {
            "cancelled"
        } else {
            a.outcome
        };
        let mut attrs = vec![
            kv("gatehouse.service", s(service)),
            kv("gatehouse.upstream", s(&a.upstream)),
            kv("server.address", s(&a.upstream)),
            kv("gatehouse.retry", int(retry as i64)),
            kv("gatehouse.outcome", s(outcome)),
            kv("http.request.method", s(f.method.as_str())),
        ];
        if a.status != 0 {
            attrs.push(kv("http.response.status_code", int(a.status)));
        }
        out.push(Span {
            trace_id: t.trace_id.to_vec(),
            span_id: a.span_id.to_vec(),
            trace_state: tracestate.clone(),
            parent_span_id: t.span_id.to_vec(),
            // Bit 8: whether the parent is remote is known; bit 9 clear: it is local.
            flags: 0x100 | 1,
            name: format!("{} {service}", f.method),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: nanos(a.start),
            end_time_unix_nano: nanos(a.end.unwrap_or(f.end)),
            attributes: attrs,
            status: if outcome == "ok" {
                None
            } else {
                error_status(outcome)
            },
            ..Default::default()
        });
    }
}
