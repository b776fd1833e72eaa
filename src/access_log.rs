//! One access-log line per request (`logging` phase), to stderr through `log` with the
//! target `gatehouse::access` (so `RUST_LOG=gatehouse::access=off` also silences it).
//!
//! Never logged: the query string (tokens travel there), request headers (Authorization,
//! cookies), bodies. The path is logged without its query.

use crate::config::AccessLogFormat;
use crate::error::push_json_str;
use pingora::proxy::Session;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const TARGET: &str = "gatehouse::access";

pub struct Entry<'a> {
    pub session: &'a Session,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub status: u16,
    pub elapsed: Duration,
    pub route: &'a str,
    pub service: &'a str,
    pub upstream: Option<&'a str>,
    pub attempts: usize,
}

pub fn write(format: AccessLogFormat, e: &Entry) {
    if format == AccessLogFormat::Off || !log::log_enabled!(target: TARGET, log::Level::Info) {
        return;
    }
    let req = e.session.req_header();
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .unwrap_or("");
    let path = req.uri.path();
    let ms = e.elapsed.as_secs_f64() * 1000.0;
    let client = e.client_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let sent = e.session.body_bytes_sent();
    let mut line = String::with_capacity(256);
    match format {
        AccessLogFormat::Json => {
            line.push_str("{\"ts\":");
            push_json_str(&mut line, &rfc3339(SystemTime::now()));
            line.push_str(",\"request_id\":");
            push_json_str(&mut line, e.request_id);
            line.push_str(",\"client_ip\":");
            push_json_str(&mut line, &client);
            line.push_str(",\"method\":");
            push_json_str(&mut line, req.method.as_str());
            line.push_str(",\"host\":");
            push_json_str(&mut line, host);
            line.push_str(",\"path\":");
            push_json_str(&mut line, path);
            let _ = write!(
                line,
                ",\"status\":{},\"duration_ms\":{ms:.3},\"bytes_sent\":{sent},\"route\":",
                e.status
            );
            push_json_str(&mut line, e.route);
            line.push_str(",\"service\":");
            push_json_str(&mut line, e.service);
            line.push_str(",\"upstream\":");
            match e.upstream {
                Some(u) => push_json_str(&mut line, u),
                None => line.push_str("null"),
            }
            let _ = write!(line, ",\"attempts\":{}}}", e.attempts);
        }
        AccessLogFormat::Text => {
            let _ = write!(
                line,
                "{} {client} \"{} {host}{}\" {} {ms:.3}ms {sent}B route={} service={} upstream={} attempts={} id={}",
                rfc3339(SystemTime::now()),
                req.method,
                path.escape_debug(),
                e.status,
                e.route,
                e.service,
                e.upstream.unwrap_or("-"),
                e.attempts,
                e.request_id
            );
        }
        AccessLogFormat::Off => return,
    }
    log::info!(target: TARGET, "{line}");
}

/// `2026-11-22T07:48:19.123Z` without a date-time dependency.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_340_899_123);
        assert_eq!(rfc3339(t), "2026-11-22T09:48:19.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T"));
    }
}
