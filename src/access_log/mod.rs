//! One access-log line per request (`logging` phase), to stderr or to
//! `server.access_log.path` ([`sink`]: reopened on SIGUSR1), as JSON, text, nginx's
//! `combined` or a `template` of `$variables` ([`template`]).
//!
//! The line is built in a reused per-thread buffer and appended to a process-wide
//! buffer; a writer thread flushes it at most [`FLUSH_INTERVAL`] after the first line
//! lands in it, and a request that fills it past [`FLUSH_BYTES`] flushes it at once
//! (nginx's `access_log … buffer= flush=`). So a busy gateway makes one `write(2)` per
//! batch, not per request, and a quiet one still shows each line within 100 ms. What is
//! buffered is written when the process exits normally (an `atexit` hook), and lines
//! stay whole and in order.
//!
//! On stderr `RUST_LOG` still decides: the lines are on when the `log` target
//! `gatehouse::access` is enabled at `info` (so `RUST_LOG=gatehouse::access=off` silences
//! them), checked once. Lines to a file are always on (`format: off` turns them off).
//!
//! Never logged: the query string (tokens travel there), request headers (Authorization,
//! cookies), bodies. The path (and a `Referer`) is logged without its query.

use crate::error::push_json_str;
use pingora::http::RequestHeader;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod sink;
mod template;

pub use sink::{reopen, set_path};
pub use template::Template;

pub const TARGET: &str = "gatehouse::access";

/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this full is written at once.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// `server.access_log.format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Text,
    /// nginx's and Apache's `combined`.
    Combined,
    Template(Arc<Template>),
    Off,
}

impl AccessLogFormat {
    pub const NAMES: &'static str = "json, text, combined, template, off";

    /// A format by name; `template` comes with its compiled template.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "json" => Some(AccessLogFormat::Json),
            "text" => Some(AccessLogFormat::Text),
            "combined" => Some(AccessLogFormat::Combined),
            "off" => Some(AccessLogFormat::Off),
            _ => None,
        }
    }
}

pub struct Entry<'a> {
    pub req: &'a RequestHeader,
    /// Response body bytes sent to the client.
    pub body_bytes_sent: usize,
    pub request_id: &'a str,
    /// The W3C trace id when the request is traced (joins the line to its trace).
    pub trace_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub status: u16,
    pub elapsed: Duration,
    pub route: &'a str,
    pub service: &'a str,
    pub upstream: Option<&'a str>,
    pub attempts: usize,
}

pub fn write(format: &AccessLogFormat, e: &Entry) {
    if *format == AccessLogFormat::Off || !(sink::to_file() || enabled()) {
        return;
    }
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        format_line(&mut line, format, e, SystemTime::now());
        line.push('\n');
        sink::push(line.as_bytes());
        if line.capacity() > 16 * 1024 {
            // One huge line (a long path) does not keep its buffer forever.
            *line = String::with_capacity(512);
        }
    });
}

/// Whether `RUST_LOG` lets access lines through (fixed at start-up, so asked once).
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| log::log_enabled!(target: TARGET, log::Level::Info))
}

fn format_line(line: &mut String, format: &AccessLogFormat, e: &Entry, now: SystemTime) {
    let req = e.req;
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .unwrap_or("");
    let path = req.uri.path();
    let sent = e.body_bytes_sent;
    let mut num = itoa::Buffer::new();
    match format {
        AccessLogFormat::Json => {
            line.push_str("{\"ts\":\"");
            push_timestamp(line, now);
            line.push_str("\",\"request_id\":");
            push_json_str(line, e.request_id);
            line.push_str(",\"client_ip\":\"");
            if let Some(ip) = e.client_ip {
                // Digits, hex, `.` and `:` only: nothing to escape.
                line.push_str(crate::headers::ip_text(ip, &mut [0; 48]));
            }
            line.push_str("\",\"method\":");
            push_json_str(line, req.method.as_str());
            line.push_str(",\"host\":");
            push_json_str(line, host);
            line.push_str(",\"path\":");
            push_json_str(line, path);
            line.push_str(",\"status\":");
            line.push_str(num.format(e.status));
            line.push_str(",\"duration_ms\":");
            push_millis(line, e.elapsed);
            line.push_str(",\"bytes_sent\":");
            line.push_str(num.format(sent));
            line.push_str(",\"route\":");
            push_json_str(line, e.route);
            line.push_str(",\"service\":");
            push_json_str(line, e.service);
            line.push_str(",\"upstream\":");
            match e.upstream {
                Some(u) => push_json_str(line, u),
                None => line.push_str("null"),
            }
            line.push_str(",\"attempts\":");
            line.push_str(num.format(e.attempts));
            if let Some(t) = e.trace_id {
                // Hex digits: nothing to escape.
                line.push_str(",\"trace_id\":\"");
                line.push_str(t);
                line.push('"');
            }
            line.push('}');
        }
        AccessLogFormat::Text => {
            push_timestamp(line, now);
            line.push(' ');
            if let Some(ip) = e.client_ip {
                line.push_str(crate::headers::ip_text(ip, &mut [0; 48]));
            }
            let _ = write!(
                line,
                " \"{} {host}{}\" {} ",
                req.method,
                path.escape_debug(),
                e.status
            );
            push_millis(line, e.elapsed);
            let _ = write!(
                line,
                "ms {sent}B route={} service={} upstream={} attempts={} id={}",
                e.route,
                e.service,
                e.upstream.unwrap_or("-"),
                e.attempts,
                e.request_id
            );
            if let Some(t) = e.trace_id {
                let _ = write!(line, " trace={t}");
            }
        }
        AccessLogFormat::Combined => template::combined(line, e, now),
        AccessLogFormat::Template(t) => t.render(line, e, now),
        AccessLogFormat::Off => {}
    }
}

/// `12.345`: milliseconds with 3 decimals, from integers.
fn push_millis(line: &mut String, d: Duration) {
    let us = d.as_micros();
    let mut num = itoa::Buffer::new();
    line.push_str(num.format(us / 1000));
    line.push('.');
    let frac = (us % 1000) as u16;
    line.push(char::from(b'0' + (frac / 100) as u8));
    line.push(char::from(b'0' + (frac / 10 % 10) as u8));
    line.push(char::from(b'0' + (frac % 10) as u8));
}

/// [`rfc3339`] of `now`, with the date and time of day formatted once per second per
/// thread.
fn push_timestamp(line: &mut String, now: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    SECOND.with(|cached| match cached.try_borrow_mut() {
        Ok(mut c) => {
            if c.0 != secs {
                let full = rfc3339(now);
                // "YYYY-MM-DDTHH:MM:SS" of ".mmmZ".
                c.1 = full[..full.len() - 5].to_string();
                c.0 = secs;
            }
            line.push_str(&c.1);
            let ms = d.subsec_millis();
            line.push('.');
            line.push(char::from(b'0' + (ms / 100) as u8));
            line.push(char::from(b'0' + (ms / 10 % 10) as u8));
            line.push(char::from(b'0' + (ms % 10) as u8));
            line.push('Z');
        }
        Err(_) => line.push_str(&rfc3339(now)),
    });
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
mod tests;
