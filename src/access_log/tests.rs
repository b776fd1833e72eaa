use super::entry::{push_millis, push_timestamp};
use super::*;
use pingora::http::RequestHeader;
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn timestamps() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_795_340_899_123);
    assert_eq!(rfc3339(t), "2026-11-22T09:48:19.123Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert!(rfc3339(leap).starts_with("2000-02-29T"));
}

#[test]
fn cached_timestamps_match_the_full_format() {
    let base = UNIX_EPOCH + Duration::from_millis(1_795_340_899_000);
    for ms in [0u64, 7, 123, 999, 1_000, 1_001, 86_400_000, 86_400_999] {
        let t = base + Duration::from_millis(ms);
        let mut line = String::new();
        push_timestamp(&mut line, t);
        assert_eq!(line, rfc3339(t), "at +{ms} ms");
    }
}

#[test]
fn millis_with_three_decimals() {
    let cases = [
        (0, "0.000"),
        (1, "0.001"),
        (999, "0.999"),
        (12_345, "12.345"),
    ];
    for (us, want) in cases {
        let mut s = String::new();
        push_millis(&mut s, Duration::from_micros(us));
        assert_eq!(s, want);
    }
    let mut s = String::new();
    push_millis(&mut s, Duration::from_secs(3) + Duration::from_nanos(1_999));
    assert_eq!(s, "3000.001");
}

fn entry<'a>(req: &'a RequestHeader) -> Entry<'a> {
    Entry {
        req,
        body_bytes_sent: 1234,
        request_id: "rid-1",
        trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        client_ip: Some("192.0.2.7".parse().expect("ip")),
        status: 404,
        elapsed: Duration::from_micros(12_345),
        route: "r",
        service: "s",
        upstream: None,
        attempts: 0,
    }
}

#[test]
fn combined_lines_are_what_log_analyzers_expect() {
    let mut req = RequestHeader::build("GET", b"/a%20b?token=SECRET", None).expect("req");
    let ua = http::HeaderValue::from_bytes(b"curl/8 \"x\"\t\xff").expect("ua");
    req.insert_header("user-agent", ua).expect("ua");
    req.insert_header("referer", "https://r.example/p?q=SECRET")
        .expect("referer");
    let t = UNIX_EPOCH + Duration::from_secs(1_795_340_899);
    let mut line = String::new();
    format_line(&mut line, &AccessLogFormat::Combined, &entry(&req), t);
    assert_eq!(
        line,
        "192.0.2.7 - - [22/Nov/2026:09:48:19 +0000] \"GET /a%20b HTTP/1.1\" 404 1234 \
         \"https://r.example/p\" \"curl/8 \\x22x\\x22\\x09\\xFF\""
    );
    // Without a user agent or referer: "-".
    let req = RequestHeader::build("POST", b"/", None).expect("req");
    let mut line = String::new();
    format_line(&mut line, &AccessLogFormat::Combined, &entry(&req), t);
    assert!(line.ends_with(" \"-\" \"-\""), "{line}");
}

#[test]
fn templates_compile_once_and_render_every_variable() {
    let t = Template::compile(
        "$remote_addr $time_iso8601 [$time_local] $request_id $trace_id $method $host $path \
         $protocol \"$request\" $status $body_bytes_sent $request_time $duration_ms $route \
         $service $upstream $attempts $http_user_agent $http_referer $$",
    )
    .expect("valid");
    let mut req = RequestHeader::build("GET", b"/p?q=1", None).expect("req");
    req.insert_header("host", "h.example").expect("host");
    let time = UNIX_EPOCH + Duration::from_millis(1_795_340_899_123);
    let mut line = String::new();
    format_line(
        &mut line,
        &AccessLogFormat::Template(Arc::new(t)),
        &entry(&req),
        time,
    );
    assert_eq!(
        line,
        "192.0.2.7 2026-11-22T09:48:19.123Z [22/Nov/2026:09:48:19 +0000] rid-1 \
         4bf92f3577b34da6a3ce929d0e0e4736 GET h.example /p HTTP/1.1 \"GET /p HTTP/1.1\" 404 \
         1234 0.012 12.345 r s - 0 - - $"
    );
    let errs = Template::compile("$nope $status $ x").expect_err("invalid");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("unknown variable $nope"));
    assert!(errs[1].contains("lone $"));
    assert!(Template::compile("").is_err());
}
