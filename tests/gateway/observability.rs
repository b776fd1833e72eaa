//! What operators see: OTLP traces (received and decoded by a small collector started
//! here), access-log formats, the log file and its reopening on SIGUSR1, `promtool`
//! on `/metrics`, the Grafana dashboard's queries, the dashboard page in headless
//! Chromium, and the command-line extras.

use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An OTLP/HTTP collector: decodes every `POST /v1/traces` body as protobuf and keeps
/// the spans. With `hang`, it accepts connections and never answers.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<AtomicU64>,
    content_types: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn start(hang: bool) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind collector");
        let addr = listener.local_addr().expect("addr");
        let c = Collector {
            addr,
            spans: Arc::default(),
            posts: Arc::default(),
            content_types: Arc::default(),
            stop: Arc::default(),
        };
        let (spans, posts, types, stop) = (
            c.spans.clone(),
            c.posts.clone(),
            c.content_types.clone(),
            c.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if hang {
                    // Read nothing, answer nothing: the exporter must give up by itself.
                    held.push(conn);
                    continue;
                }
                let (spans, posts, types) = (spans.clone(), posts.clone(), types.clone());
                std::thread::spawn(move || serve(conn, &spans, &posts, &types));
            }
        });
        c
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, spans: &Mutex<Vec<Span>>, posts: &AtomicU64, types: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => types.lock().unwrap().push(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let resource = rs.resource.expect("resource");
            assert!(resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.name"));
            for ss in rs.scope_spans {
                spans.lock().unwrap().extend(ss.spans);
            }
        }
        posts.fetch_add(1, Ordering::SeqCst);
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    let v = s.attributes.iter().find(|kv| kv.key == key)?;
    match v.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn traced_gateway(up: &EchoServer, tracing: &str) -> Gateway {
    Gateway::start(&format!(
        "tracing: {tracing}\nservices:\n  s: {{ upstreams: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: r, match: {{ path_prefix: / }}, service: s }}\n",
        up.addr()
    ))
}

#[test]
fn traces_join_the_clients_and_reach_the_upstream_as_parent() {
    let collector = Collector::start(false);
    let up = upstreams(1);
    let gw = traced_gateway(
        &up[0],
        &format!(
            "{{ otlp_endpoint: \"{}\", sample_ratio: 1.0, flush_interval: 50ms }}",
            collector.endpoint()
        ),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let r = request(
        gw.addr,
        "GET",
        "/users/7",
        &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
        b"",
    )
    .expect("request");
    assert_eq!(r.status, 200);
    let seen = r.json()["headers"].clone();
    let upstream_tp = seen["traceparent"].as_str().expect("traceparent upstream");
    let parts: Vec<&str> = upstream_tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id, "01"));
    assert_ne!(
        parts[2], client_span,
        "the upstream's parent is Gatehouse's span"
    );
    assert_eq!(seen["tracestate"], "vendor=abc");

    assert!(
        wait_until(Duration::from_secs(10), || collector.spans().len() >= 2),
        "spans exported: {:?}",
        collector.spans()
    );
    let spans = collector.spans();
    assert_eq!(spans.len(), 2);
    let server = spans.iter().find(|s| s.kind == 2).expect("a SERVER span");
    let client = spans.iter().find(|s| s.kind == 3).expect("a CLIENT span");
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&client.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), client_span);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex(&client.span_id), parts[2]);
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(attr(server, "gatehouse.route").as_deref(), Some("r"));
    assert_eq!(attr(server, "gatehouse.service").as_deref(), Some("s"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server, "url.path").as_deref(), Some("/users/7"));
    assert_eq!(
        attr(server, "gatehouse.request_id").as_deref(),
        r.header("x-request-id")
    );
    assert_eq!(
        attr(client, "gatehouse.upstream"),
        Some(up[0].addr().to_string())
    );
    assert_eq!(attr(client, "gatehouse.retry").as_deref(), Some("0"));
    assert_eq!(attr(client, "gatehouse.outcome").as_deref(), Some("ok"));
    assert!(collector
        .content_types
        .lock()
        .unwrap()
        .iter()
        .all(|t| t == "application/x-protobuf"));
    // The access line carries the trace id next to the request id.
    let id = r.header("x-request-id").expect("id").to_string();
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains(&id)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains(&id)).expect("access line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
    assert_eq!(v["trace_id"], trace_id);

    // A request without a traceparent starts a trace of its own; one attempt per retry.
    let r = gw.get("/fresh");
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .expect("traceparent")
        .to_string();
    let new_trace = tp.split('-').nth(1).expect("trace id").to_string();
    assert_ne!(new_trace, trace_id);
    assert!(
        r.json()["headers"]["tracestate"].is_null(),
        "no tracestate invented"
    );
    assert!(wait_until(Duration::from_secs(10), || collector
        .spans()
        .iter()
        .any(|s| hex(&s.trace_id) == new_trace
            && s.kind == 2
            && s.parent_span_id.is_empty())));
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("gatehouse_tracing_spans_exported_total", "") == Some(4.0)
    }));
}

#[test]
fn sampling_follows_the_ratio_and_the_clients_decision() {
    let collector = Collector::start(false);
    let up = upstreams(1);
    let gw = traced_gateway(
        &up[0],
        &format!(
            "{{ otlp_endpoint: \"{}\", sample_ratio: 0, flush_interval: 50ms }}",
            collector.endpoint()
        ),
    );
    // Ratio 0: new traces are not recorded, but the upstream still gets a traceparent
    // (not sampled) whose trace id the access log names.
    for i in 0..20 {
        let r = gw.get(&format!("/quiet/{i}"));
        let tp = r.json()["headers"]["traceparent"]
            .as_str()
            .expect("traceparent")
            .to_string();
        assert!(tp.ends_with("-00"), "{tp}");
    }
    // The client's sampled flag wins (parent-based); its unsampled flag too.
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let unsampled = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let r = request(gw.addr, "GET", "/loud", &[("traceparent", sampled)], b"").expect("req");
    assert!(r.json()["headers"]["traceparent"]
        .as_str()
        .is_some_and(|t| t.ends_with("-01")));
    let r = request(gw.addr, "GET", "/hush", &[("traceparent", unsampled)], b"").expect("req");
    assert!(r.json()["headers"]["traceparent"]
        .as_str()
        .is_some_and(
            |t| t.starts_with("00-1af7651916cd43dd8448eb211c80319c-") && t.ends_with("-00")
        ));
    // Malformed ones start a new trace (upper-case hex, all-zero ids, version ff).
    for bad in [
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ] {
        let r = request(gw.addr, "GET", "/bad", &[("traceparent", bad)], b"").expect("req");
        let tp = r.json()["headers"]["traceparent"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            !tp.contains("0af7651916cd43dd8448eb211c80319c") && tp.ends_with("-00"),
            "{bad} → {tp}"
        );
    }
    assert!(wait_until(Duration::from_secs(10), || collector
        .spans()
        .len()
        >= 2));
    std::thread::sleep(Duration::from_millis(500));
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "only the sampled request: {spans:?}");
    assert!(spans
        .iter()
        .all(|s| hex(&s.trace_id) == "0af7651916cd43dd8448eb211c80319c"));

    // Ratio 0.5 over 400 new traces: about half (binomial sd = 10 traces).
    let half = Collector::start(false);
    let gw2 = traced_gateway(
        &up[0],
        &format!(
            "{{ otlp_endpoint: \"{}\", sample_ratio: 0.5, flush_interval: 50ms }}",
            half.endpoint()
        ),
    );
    let mut flagged = 0;
    for i in 0..400 {
        let r = gw2.get(&format!("/half/{i}"));
        if r.json()["headers"]["traceparent"]
            .as_str()
            .is_some_and(|t| t.ends_with("-01"))
        {
            flagged += 1;
        }
    }
    assert!((140..=260).contains(&flagged), "{flagged} of 400 sampled");
    assert!(wait_until(Duration::from_secs(10), || half
        .spans()
        .iter()
        .filter(|s| s.kind == 2)
        .count()
        == flagged));
}

#[test]
fn a_dead_collector_never_slows_or_fails_a_request() {
    let hanging = Collector::start(true);
    let up = upstreams(1);
    let gw = traced_gateway(
        &up[0],
        &format!(
            "{{ otlp_endpoint: \"{}\", timeout: 2s, queue_size: 16, batch_size: 8, flush_interval: 10ms }}",
            hanging.endpoint()
        ),
    );
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let t = Instant::now();
        let r = gw.get(&format!("/d/{i}"));
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200);
    }
    // Requests never wait for the exporter (whose posts hang for 2 s each).
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest request {slowest:?}"
    );
    // The queue (16 requests) filled: the rest were dropped and counted.
    let dropped = gw
        .metric("gatehouse_tracing_spans_dropped_total", "")
        .unwrap_or(0.0);
    assert!(dropped >= 400.0, "dropped {dropped}");
    assert_eq!(
        gw.metric("gatehouse_tracing_spans_exported_total", ""),
        Some(0.0)
    );
    // A collector that is not there at all: the same.
    let port = free_port();
    let gw = traced_gateway(
        &up[0],
        &format!("{{ otlp_endpoint: \"http://127.0.0.1:{port}/v1/traces\", timeout: 500ms, flush_interval: 10ms }}"),
    );
    for i in 0..50 {
        assert_eq!(gw.get(&format!("/gone/{i}")).status, 200);
    }
    assert!(wait_until(Duration::from_secs(10), || gw
        .metric("gatehouse_tracing_spans_dropped_total", "")
        .unwrap_or(0.0)
        >= 100.0));
    assert!(gw.log().contains("tracing: export of"));
}

#[test]
fn combined_log_to_a_file_survives_rotation_without_losing_a_line() {
    let up = upstreams(1);
    let dir = scratch_dir("rotate");
    let file = dir.join("access.log");
    let gw = Gateway::start_with(
        &one_route(&up[0]),
        &format!(
            "  access_log: {{ format: combined, path: {} }}\n",
            file.display()
        ),
    );
    let send = |from: usize, to: usize| {
        for i in from..to {
            let r = request(
                gw.addr,
                "GET",
                &format!("/r/{i}?token=SECRET"),
                &[
                    ("user-agent", "test \"agent\""),
                    ("referer", "http://ref.example/p?q=SECRET2"),
                ],
                b"",
            )
            .expect("request");
            assert_eq!(r.status, 200);
        }
    };
    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    send(0, 50);
    assert!(wait_until(Duration::from_secs(5), || lines(&file).len() == 50));
    let first = &lines(&file)[0];
    // 127.0.0.1 - - [02/Dec/2026:11:01:59 +0000] "GET /r/0 HTTP/1.1" 200 N "http://ref.example/p" "test \x22agent\x22"
    let re_ok = first.starts_with("127.0.0.1 - - [")
        && first.contains(" +0000] \"GET /r/0 HTTP/1.1\" 200 ")
        && first.ends_with(" \"http://ref.example/p\" \"test \\x22agent\\x22\"");
    assert!(re_ok, "not a combined line: {first}");
    // logrotate: move the file away, then SIGUSR1 (postrotate).
    let rotated = dir.join("access.log.1");
    std::fs::rename(&file, &rotated).expect("rotate");
    send(50, 60); // still to the old (moved) file
    gw.signal("-USR1");
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains("access log reopened")));
    send(60, 100);
    assert!(wait_until(Duration::from_secs(5), || {
        lines(&file).len() + lines(&rotated).len() == 100
    }));
    let all: Vec<String> = lines(&rotated).into_iter().chain(lines(&file)).collect();
    for i in 0..100 {
        let needle = format!("\"GET /r/{i} HTTP/1.1\"");
        assert_eq!(
            all.iter().filter(|l| l.contains(&needle)).count(),
            1,
            "request {i} logged exactly once"
        );
    }
    assert!(
        lines(&file).iter().all(|l| {
            let n: usize = l
                .split("/r/")
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            n >= 60
        }),
        "after the reopen every line goes to the new file"
    );
    assert!(
        !all.iter().any(|l| l.contains("SECRET")),
        "no query strings"
    );
    // The gateway's own log (stderr) has no access lines now.
    assert!(!gw.log().contains("/r/1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn template_format_and_bad_templates() {
    let up = upstreams(1);
    let gw = Gateway::start_with(
        &one_route(&up[0]),
        "  access_log: { format: template, template: \"$remote_addr|$request_id|$status|$route|$upstream|$$|$request_time\" }\n",
    );
    let r = gw.get("/t");
    let id = r.header("x-request-id").expect("id").to_string();
    assert!(wait_until(Duration::from_secs(5), || gw
        .log()
        .contains(&id)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains(&id)).expect("line");
    let f: Vec<&str> = line.split('|').collect();
    assert_eq!(f.len(), 7, "{line}");
    assert_eq!(
        (f[0], f[1], f[2], f[3], f[4], f[5]),
        (
            "127.0.0.1",
            id.as_str(),
            "200",
            "r",
            up[0].addr().to_string().as_str(),
            "$"
        )
    );
    assert!(f[6].contains('.'), "{line}");
    // Config errors name the path.
    let dir = scratch_dir("tpl");
    let cfg = dir.join("g.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [{{ address: 127.0.0.1:1 }}]\nserver: {{ access_log: {{ format: template, template: \"$nope $status\", path: /no/such/dir/a.log }} }}\n{}",
            one_route(&up[0])
        ),
    )
    .expect("write");
    let out = run_cli(&["-c", cfg.to_str().expect("path"), "-t"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("server.access_log.template") && err.contains("unknown variable $nope"),
        "{err}"
    );
    assert!(err.contains("server.access_log.path"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway with JWT, rate-limited and cached routes, after traffic on each, so most
/// metric families have series.
fn busy_gateway(up: &[EchoServer]) -> Gateway {
    let gw = Gateway::start(&format!(
        "jwt:\n  main: {{ algorithms: [HS256], secret: s3cret-s3cret-s3cret-s3cret-0123 }}\n\
         rate_limits:\n  policies:\n    tiny: {{ key: client_ip, limit: 2, window: 1m }}\n\
         services:\n  s:\n    upstreams:\n{}    health_check: {{ type: http, path: /health, interval: 200ms, timeout: 200ms, unhealthy_after: 1 }}\n    circuit_breaker: {{ failures: 5, open_for: 5s }}\n\
         routes:\n\
         \x20 - {{ name: open, match: {{ path_prefix: /open }}, service: s }}\n\
         \x20 - {{ name: private, match: {{ path_prefix: /private }}, service: s, auth: main }}\n\
         \x20 - {{ name: limited, match: {{ path_prefix: /limited }}, service: s, rate_limit: [tiny] }}\n\
         \x20 - {{ name: cached, match: {{ path_prefix: /cached }}, service: s, cache: {{ ttl: 30s, max_entries: 10, max_body: 1MiB }} }}\n",
        upstream_list(up, &[])
    ));
    for path in [
        "/open/a",
        "/private/a",
        "/limited/a",
        "/limited/a",
        "/limited/a",
        "/cached/a",
        "/cached/a",
        "/nowhere",
    ] {
        let _ = gw.get(path);
    }
    let _ = request(
        gw.addr,
        "POST",
        "/open/body",
        &[("content-type", "text/plain")],
        b"hello",
    );
    gw
}

#[test]
fn promtool_accepts_the_metrics_and_they_describe_the_traffic() {
    let up = upstreams(2);
    let gw = busy_gateway(&up);
    let text = gw.metrics();
    for family in [
        "gatehouse_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "gatehouse_upstream_duration_seconds_bucket",
        "gatehouse_request_bytes_total",
        "gatehouse_response_bytes_total",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert!(text.contains(&format!(
        "gatehouse_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        gatehouse::COMMIT,
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(
        metric_value(&text, "gatehouse_request_bytes_total", "route=\"open\""),
        Some(5.0),
        "the POST's 5 body bytes"
    );
    assert!(
        metric_value(&text, "gatehouse_response_bytes_total", "route=\"open\"").unwrap_or(0.0)
            > 100.0
    );
    let attempts: f64 = text
        .lines()
        .filter(|l| l.starts_with("gatehouse_upstream_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(attempts >= 5.0, "upstream attempts timed: {attempts}");

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_grafana_query_names_a_metric_gatehouse_exports() {
    let path = repo_path("contrib/grafana/gatehouse.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard JSON"))
            .expect("valid JSON");
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(s) = q.get("query").and_then(|s| s.as_str()) {
                                out.push(s.to_string());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&doc, &mut exprs);
    assert!(exprs.len() >= 30, "{} queries", exprs.len());
    let metrics = gatehouse::metrics::Metrics::new();
    let exported = metrics.family_names();
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &e[i..];
            let starts = rest.starts_with("gatehouse_") || rest.starts_with("process_");
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts && boundary {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                i += name.len();
                used.insert(name);
            } else {
                i += 1;
            }
        }
    }
    for must in [
        "gatehouse_requests_total",
        "gatehouse_request_duration_seconds_bucket",
        "gatehouse_upstream_healthy",
        "gatehouse_circuit_state",
        "gatehouse_rate_limited_total",
        "gatehouse_cache_requests_total",
        "gatehouse_config_reloads_total",
        "gatehouse_upstream_duration_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            used.contains(must),
            "the dashboard has no panel over {must}"
        );
    }
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|base| exported.iter().any(|f| f == base))
            })
            .unwrap_or(name);
        assert!(
            exported.iter().any(|f| f == family),
            "the dashboard queries {name}, which Gatehouse does not export (exported: {exported:?})"
        );
    }
}

/// Run Chromium headless with `args` + `url`, bounded.
fn chromium(args: &[&str], url: &str) -> std::process::Output {
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Containers often have a tiny /dev/shm.
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=4000",
        ])
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium (Debian package chromium; scripts/test.sh installs it)");
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("chromium output")
}

#[test]
fn the_dashboard_page_shows_routes_and_a_down_upstream_in_a_real_browser() {
    let up = upstreams(1);
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        "services:\n  users:\n    upstreams: [{{ address: \"{}\" }}, {{ address: \"{dead}\" }}]\n    \
         health_check: {{ type: tcp, interval: 200ms, timeout: 200ms, unhealthy_after: 1 }}\n\
         routes:\n  - {{ name: users-api, match: {{ path_prefix: /users }}, service: users }}\n  \
         - {{ name: orders-api, match: {{ path_prefix: /orders }}, service: users }}\n",
        up[0].addr()
    ));
    assert!(wait_until(Duration::from_secs(10), || gw
        .upstream_healthy("users", &dead)
        == Some(false)));
    for i in 0..20 {
        let _ = gw.get(&format!("/users/{i}"));
    }
    let url = format!("http://{}/", gw.admin);
    let page = gw.admin_get("/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(page.header("content-security-policy").is_some());
    let html = page.text();
    for outside in [
        "<script src",
        "rel=\"stylesheet\"",
        "@import",
        "url(http",
        "src=\"http",
        "href=\"http",
    ] {
        assert!(!html.contains(outside), "self-contained: found {outside}");
    }

    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"], &url).stdout).to_string();
    assert!(
        dom.contains("data-loaded=\"1\""),
        "the page never rendered data:\n{dom}"
    );
    assert!(
        dom.contains("<tr class=\"route\" data-route=\"users-api\""),
        "{dom}"
    );
    assert!(dom.contains("<tr class=\"route\" data-route=\"orders-api\""));
    assert!(
        dom.contains(&format!(
            "data-service=\"users\" data-upstream=\"{dead}\" data-health=\"down\""
        )),
        "the dead upstream is not shown as down"
    );
    assert!(dom.contains(&format!(
        "data-service=\"users\" data-upstream=\"{}\" data-health=\"up\"",
        up[0].addr()
    )));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    chromium(&[&arg, "--window-size=1280,1000"], &url);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // With an admin token the page still loads (it asks for the token); its data does not.
    let text = std::fs::read_to_string(&gw.config).expect("config");
    write_atomically(
        &gw.config,
        &text.replacen(
            "admin:\n  address:",
            "admin:\n  token: dashboard-token-0123456789\n  address:",
            1,
        ),
    );
    gw.signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || gw
        .admin_get("/admin/status")
        .status
        == 401));
    assert_eq!(gw.admin_get("/").status, 200);
    assert_eq!(gw.admin_get("/admin/stats").status, 401);
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"], &url).stdout).to_string();
    assert!(
        !dom.contains("data-route=\"users-api\""),
        "no data without the token"
    );
    let dom = String::from_utf8_lossy(
        &chromium(
            &["--dump-dom"],
            &format!("{url}#token=dashboard-token-0123456789"),
        )
        .stdout,
    )
    .to_string();
    assert!(
        dom.contains("data-route=\"users-api\""),
        "the token from the fragment works"
    );
}

#[test]
fn version_completions_and_man_page() {
    let v = run_cli(&["--version"], &[]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.starts_with(&format!("gatehouse {} (", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !head.is_empty() {
            assert!(text.contains(&head), "{text} should name commit {head}");
        }
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef gatehouse"),
        ("fish", "complete -c gatehouse"),
    ] {
        let out = run_cli(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}");
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains(marker) && s.contains("hash-password"),
            "{shell}: {s}"
        );
    }
    let man = run_cli(&["man"], &[]);
    let s = String::from_utf8_lossy(&man.stdout);
    assert!(s.starts_with(".ie") || s.contains(".TH gatehouse"), "{s}");
    assert!(s.contains("completions"));
}

/// Kills the listed pids on drop (daemons the test started).
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn gatehouse_ctl_upgrade_waits_until_the_new_process_answers() {
    let up = upstreams(1);
    let dir = scratch_dir("ctl");
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}",
            header_yaml(
                &dir,
                port,
                admin_port,
                &format!("  error_log: {}/error.log\n", dir.display())
            ),
            one_route(&up[0])
        ),
    )
    .expect("config");
    let pid_file = dir.join("gatehouse.pid");
    let read_pid =
        || -> Option<u32> { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() };
    let out = run_cli(&["-c", config.to_str().expect("path"), "-d"], &[]);
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(10), || read_pid().is_some()));
    let old = read_pid().expect("old pid");
    let mut reaper = Reaper(vec![old]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(wait_until(Duration::from_secs(10), || {
        request(addr, "GET", "/x", &[], b"").is_ok_and(|r| r.status == 200)
    }));

    std::fs::write(dir.join("upgrade-requested"), "").expect("mark");
    let ctl = repo_path("systemd/gatehouse-ctl");
    let admin = format!("127.0.0.1:{admin_port}");
    let mut child = std::process::Command::new("sh")
        .arg(&ctl)
        .args(["reload-or-upgrade", &old.to_string()])
        .env("GATEHOUSE_BIN", BIN)
        .env("GATEHOUSE_CONFIG", &config)
        .env("GATEHOUSE_RUN_DIR", &dir)
        .env("GATEHOUSE_UPGRADE_SOCK", dir.join("upgrade.sock"))
        .env("GATEHOUSE_PID_FILE", &pid_file)
        .env("GATEHOUSE_ADMIN", &admin)
        .env("GATEHOUSE_READY_TIMEOUT", "20")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gatehouse-ctl");
    let start = Instant::now();
    while child.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("ctl output");
    let new = read_pid().expect("new pid");
    reaper.0.push(new);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gatehouse-ctl failed: {said}");
    assert_ne!(new, old);
    assert!(
        said.contains(&format!(
            "upgraded: pid {old} -> pid {new}, serving (answered on {admin})"
        )),
        "{said}"
    );
    // The new process serves; the old one leaves after its grace period.
    assert_eq!(get(addr, "/after").status, 200);
    let health = get(
        format!("127.0.0.1:{admin_port}").parse().expect("addr"),
        "/healthz",
    );
    assert_eq!(health.status, 200);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::metadata(format!("/proc/{old}")).is_err()
            || std::fs::read_to_string(format!("/proc/{old}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    }));
    assert!(std::fs::metadata(format!("/proc/{new}")).is_ok());
    drop(reaper);
    let _ = std::fs::remove_dir_all(&dir);
}
