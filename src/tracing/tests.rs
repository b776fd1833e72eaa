use super::context::{parse_traceparent, traceparent};
use super::*;

fn config(ratio: f64) -> TracingConfig {
    let mut errors = Vec::new();
    let v: serde_yaml::Value = serde_yaml::from_str(&format!(
        "{{ otlp_endpoint: \"http://127.0.0.1:4318/v1/traces\", sample_ratio: {ratio} }}"
    ))
    .expect("yaml");
    let c = config::validate(Some(v), &mut errors).expect("valid");
    assert!(errors.is_empty(), "{errors:?}");
    c
}

#[test]
fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
    let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let p = parse_traceparent(v).expect("valid");
    assert!(p.sampled);
    assert_eq!(traceparent(&p.trace_id, &p.span_id, true).as_bytes(), v);
    assert!(
        !parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .expect("valid")
            .sampled
    );
    // A later version may append fields; version 00 may not.
    assert!(
        parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some()
    );
    for bad in [
        &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"[..],
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        b"",
    ] {
        assert!(
            parse_traceparent(bad).is_none(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn sampling_is_by_ratio_and_follows_a_parent() {
    let req = |tp: Option<&str>| {
        let mut r = pingora::http::RequestHeader::build("GET", b"/", None).expect("req");
        if let Some(tp) = tp {
            r.insert_header("traceparent", tp).expect("header");
            r.insert_header("tracestate", "a=b").expect("header");
        }
        r
    };
    let never = Tracer::new(config(0.0));
    let always = Tracer::new(config(1.0));
    let half = Tracer::new(config(0.5));
    assert!(!never.start(&req(None)).sampled);
    assert!(always.start(&req(None)).sampled);
    let n = (0..4000).filter(|_| half.start(&req(None)).sampled).count();
    assert!((1800..2200).contains(&n), "{n} of 4000");
    let t = never.start(&req(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )));
    assert!(t.sampled, "a sampled parent wins over the ratio");
    assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        t.tracestate.as_ref().map(|v| v.as_bytes()),
        Some(&b"a=b"[..])
    );
    let t = always.start(&req(Some(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )));
    assert!(!t.sampled, "so does an unsampled one");
    let t = always.start(&req(Some("garbage")));
    assert!(
        t.parent.is_none() && t.tracestate.is_none(),
        "a bad traceparent drops tracestate too"
    );
}

#[test]
fn spans_link_the_attempts_to_the_request() {
    let tracer = Tracer::new(config(1.0));
    let req = pingora::http::RequestHeader::build("GET", b"/x", None).expect("req");
    let mut t = tracer.start(&req);
    t.begin_attempt("10.0.0.1:80".into());
    let first = t.attempt_header().expect("header");
    t.end_attempt("timeout", 0);
    t.begin_attempt("10.0.0.2:80".into());
    t.end_attempt("ok", 200);
    t.end_attempt("error", 502); // the first outcome stays
    assert_ne!(Some(first), t.attempt_header());
    let f = Finished {
        trace: t,
        end: SystemTime::now(),
        method: http::Method::GET,
        path: "/x".into(),
        host: Some("h".into()),
        status: 200,
        route: Some("r".into()),
        service: Some("s".into()),
        client_ip: None,
        request_id: HeaderValue::from_static("id"),
        auth: "none",
        rate_limit: None,
        error: None,
        cache: None,
        consumer: None,
    };
    let mut buf = Vec::new();
    assert_eq!(encode::spans(&f, &mut buf), 3);
    // Decoded with the OpenTelemetry project's generated types.
    use prost::Message as _;
    let body = encode::request("gh", &buf);
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
        &body[..],
    )
    .expect("valid OTLP protobuf");
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().expect("resource");
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().and_then(|v| v.value.clone())
            == Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("gh".into())
            )));
    let ss = &rs.scope_spans[0];
    assert_eq!(
        ss.scope.as_ref().map(|s| s.name.as_str()),
        Some("gatehouse")
    );
    let out = &ss.spans;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].name, "GET r");
    assert_eq!(out[0].kind, 2);
    assert_eq!(out[0].flags, 0x101);
    assert!(
        out[0].start_time_unix_nano > 0 && out[0].end_time_unix_nano >= out[0].start_time_unix_nano
    );
    assert!(out[0].attributes.iter().any(|kv| kv.key == "url.path"));
    assert!(out[0].parent_span_id.is_empty());
    for (i, a) in out[1..].iter().enumerate() {
        assert_eq!(a.parent_span_id, out[0].span_id);
        assert_eq!(a.trace_id, out[0].trace_id);
        assert!(a.attributes.iter().any(|kv| kv.key == "gatehouse.retry"
            && kv.value.as_ref().and_then(|v| v.value.clone())
                == Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(i as i64)
                )));
    }
    assert_eq!(out[1].kind, 3);
    assert_eq!(out[1].name, "GET s");
    assert!(
        out[1].status.as_ref().is_some_and(|s| s.code == 2),
        "a timed-out attempt is an error"
    );
    assert!(out[2].status.is_none());
    assert!(out[2]
        .attributes
        .iter()
        .any(|kv| kv.key == "http.response.status_code"
            && kv.value.as_ref().and_then(|v| v.value.clone())
                == Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(200))));
}

#[test]
fn config_errors_name_their_keys() {
    let mut errors = Vec::new();
    let v: serde_yaml::Value = serde_yaml::from_str(
        "{ otlp_endpoint: \"ftp://x\", sample_ratio: 2, batch_size: 0, queue_size: 0, timeout: 0s, headers: { \"bad name\": x } }",
    )
    .expect("yaml");
    assert!(config::validate(Some(v), &mut errors).is_none());
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "tracing.otlp_endpoint",
        "tracing.sample_ratio",
        "tracing.batch_size",
        "tracing.queue_size",
        "tracing.timeout",
        "tracing.headers.bad name",
    ] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    let mut errors = Vec::new();
    let v: serde_yaml::Value = serde_yaml::from_str("{ sample_ratio: 1 }").expect("yaml");
    assert!(config::validate(Some(v), &mut errors).is_none());
    assert!(
        errors[0].to_string().contains("otlp_endpoint"),
        "{errors:?}"
    );
}
