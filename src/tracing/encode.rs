//! OTLP protobuf, written directly: a request's spans go from [`Finished`] to the
//! wire bytes of `ScopeSpans.spans` entries without building message structs, and a
//! batch is wrapped into an `ExportTraceServiceRequest` by prefixing the few outer
//! fields. The field numbers are those of opentelemetry-proto's `trace.proto`,
//! `common.proto`, `resource.proto` and `trace_service.proto` (v1); the tests decode
//! the output with the generated types of the `opentelemetry-proto` crate.
//!
//! Written by hand because building the generated (prost) structs — a `String` per
//! attribute key and value, nested `Vec`s — and encoding them, which computes each
//! nested message's length once per level, cost ~25,000 instructions per traced
//! request; this costs a few thousand.

use super::Finished;
use std::time::{SystemTime, UNIX_EPOCH};

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A length-delimited field whose content `f` writes in place: one placeholder byte for
/// the length, widened afterwards if the content is 128 bytes or more.
fn nested(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    f(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(&mut prefix, len as u64);
        out.splice(at..=at, prefix);
    }
}

/// `KeyValue { key, value: AnyValue { string_value } }` as field `field`.
fn attr_str(out: &mut Vec<u8>, field: u32, key: &str, value: &[u8]) {
    nested(out, field, |out| {
        bytes(out, 1, key.as_bytes());
        nested(out, 2, |out| bytes(out, 1, value));
    });
}

/// `KeyValue { key, value: AnyValue { int_value } }`.
fn attr_int(out: &mut Vec<u8>, field: u32, key: &str, value: i64) {
    nested(out, field, |out| {
        bytes(out, 1, key.as_bytes());
        nested(out, 2, |out| {
            tag(out, 3, VARINT);
            varint(out, value as u64);
        });
    });
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// `Status { message, code: ERROR }`.
fn error_status(out: &mut Vec<u8>, message: &str) {
    nested(out, 15, |out| {
        bytes(out, 2, message.as_bytes());
        tag(out, 3, VARINT);
        varint(out, 2);
    });
}

const SERVER: u64 = 2;
const CLIENT: u64 = 3;
/// Span flags: sampled, and "whether the parent is remote" is known (bit 8); bit 9
/// says it is.
const FLAGS_LOCAL_PARENT: u32 = 0x100 | 1;
const FLAGS_REMOTE_PARENT: u32 = 0x300 | 1;

/// Append the request's span and one per attempt, each as a `ScopeSpans.spans` entry
/// (field 2). Returns how many spans were written.
pub fn spans(f: &Finished, out: &mut Vec<u8>) -> u64 {
    let t = &f.trace;
    let tracestate = t.tracestate.as_ref().map(|v| v.as_bytes()).unwrap_or(b"");
    let route = f.route.as_deref().unwrap_or("none");
    nested(out, 2, |out| {
        bytes(out, 1, &t.trace_id);
        bytes(out, 2, &t.span_id);
        if !tracestate.is_empty() {
            bytes(out, 3, tracestate);
        }
        if let Some(p) = &t.parent {
            bytes(out, 4, p);
        }
        nested(out, 5, |out| {
            out.extend_from_slice(f.method.as_str().as_bytes());
            if f.route.is_some() {
                out.push(b' ');
                out.extend_from_slice(route.as_bytes());
            }
        });
        tag(out, 6, VARINT);
        varint(out, SERVER);
        fixed64(out, 7, nanos(t.start));
        fixed64(out, 8, nanos(f.end));
        attr_str(out, 9, "http.request.method", f.method.as_str().as_bytes());
        attr_str(out, 9, "url.path", f.path.as_bytes());
        attr_int(out, 9, "http.response.status_code", i64::from(f.status));
        attr_str(out, 9, "gatehouse.route", route.as_bytes());
        attr_str(out, 9, "gatehouse.request_id", f.request_id.as_bytes());
        attr_str(out, 9, "gatehouse.auth", f.auth.as_bytes());
        attr_int(out, 9, "gatehouse.attempts", t.attempts.len() as i64);
        if let Some(h) = &f.host {
            attr_str(out, 9, "server.address", h.as_bytes());
        }
        if let Some(ip) = f.client_ip {
            attr_str(
                out,
                9,
                "client.address",
                crate::headers::ip_text(ip, &mut [0; 48]).as_bytes(),
            );
        }
        if let Some(svc) = &f.service {
            attr_str(out, 9, "gatehouse.service", svc.as_bytes());
        }
        if let Some(r) = f.rate_limit {
            attr_str(out, 9, "gatehouse.rate_limit", r.as_bytes());
        }
        if let Some(e) = f.error {
            attr_str(out, 9, "gatehouse.error", e.as_bytes());
        }
        if let Some(c) = f.cache {
            attr_str(out, 9, "gatehouse.cache", c.as_bytes());
        }
        if let Some(c) = &f.consumer {
            attr_str(out, 9, "gatehouse.consumer", c.as_bytes());
        }
        if f.status >= 500 {
            error_status(out, f.error.unwrap_or("5xx"));
        }
        tag(out, 16, FIXED32);
        let flags = if t.parent.is_some() {
            FLAGS_REMOTE_PARENT
        } else {
            FLAGS_LOCAL_PARENT
        };
        out.extend_from_slice(&flags.to_le_bytes());
    });
    let service = f.service.as_deref().unwrap_or("none");
    for (retry, a) in t.attempts.iter().enumerate() {
        let outcome = if a.outcome.is_empty() {
            "cancelled"
        } else {
            a.outcome
        };
        nested(out, 2, |out| {
            bytes(out, 1, &t.trace_id);
            bytes(out, 2, &a.span_id);
            if !tracestate.is_empty() {
                bytes(out, 3, tracestate);
            }
            bytes(out, 4, &t.span_id);
            nested(out, 5, |out| {
                out.extend_from_slice(f.method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(service.as_bytes());
            });
            tag(out, 6, VARINT);
            varint(out, CLIENT);
            fixed64(out, 7, nanos(a.start));
            fixed64(out, 8, nanos(a.end.unwrap_or(f.end)));
            attr_str(out, 9, "gatehouse.service", service.as_bytes());
            attr_str(out, 9, "gatehouse.upstream", a.upstream.as_bytes());
            attr_str(out, 9, "server.address", a.upstream.as_bytes());
            attr_int(out, 9, "gatehouse.retry", retry as i64);
            attr_str(out, 9, "gatehouse.outcome", outcome.as_bytes());
            attr_str(out, 9, "http.request.method", f.method.as_str().as_bytes());
            if a.status != 0 {
                attr_int(out, 9, "http.response.status_code", i64::from(a.status));
            }
            if outcome != "ok" {
                error_status(out, outcome);
            }
            tag(out, 16, FIXED32);
            out.extend_from_slice(&FLAGS_LOCAL_PARENT.to_le_bytes());
        });
    }
    1 + t.attempts.len() as u64
}

/// `ExportTraceServiceRequest { resource_spans: [ { resource, scope_spans: [ { scope,
/// spans } ] } ] }` around `spans` (entries written by [`spans`]).
pub fn request(service_name: &str, spans: &[u8]) -> Vec<u8> {
    // ResourceSpans.resource (field 1)
    let mut resource = Vec::with_capacity(128);
    nested(&mut resource, 1, |out| {
        attr_str(out, 1, "service.name", service_name.as_bytes());
        attr_str(
            out,
            1,
            "service.version",
            env!("CARGO_PKG_VERSION").as_bytes(),
        );
        attr_str(out, 1, "telemetry.sdk.name", b"gatehouse");
        attr_str(out, 1, "telemetry.sdk.language", b"rust");
    });
    // ScopeSpans.scope (field 1)
    let mut scope = Vec::with_capacity(32);
    nested(&mut scope, 1, |out| {
        bytes(out, 1, b"gatehouse");
        bytes(out, 2, env!("CARGO_PKG_VERSION").as_bytes());
    });
    let scope_spans_len = scope.len() + spans.len();
    let resource_spans_len =
        resource.len() + 1 + varint_len(scope_spans_len as u64) + scope_spans_len;
    let mut body = Vec::with_capacity(resource_spans_len + 16);
    tag(&mut body, 1, LEN);
    varint(&mut body, resource_spans_len as u64);
    body.extend_from_slice(&resource);
    tag(&mut body, 2, LEN);
    varint(&mut body, scope_spans_len as u64);
    body.extend_from_slice(&scope);
    body.extend_from_slice(spans);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_widened_lengths() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
        let mut out = Vec::new();
        nested(&mut out, 2, |out| out.extend_from_slice(&[7u8; 300]));
        assert_eq!(&out[..3], &[0x12, 0xAC, 0x02]);
        assert_eq!(out.len(), 3 + 300);
    }
}
