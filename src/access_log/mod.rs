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
use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

mod entry;
pub mod sink;
mod template;

use entry::{push_millis, push_timestamp};
pub use entry::{rfc3339, Entry};

pub use sink::{reopen, set_path};
pub use template::Template;

pub const TARGET: &str = "gatehouse::access";

pub use sink::{FLUSH_BYTES, FLUSH_INTERVAL};

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

#[cfg(test)]
mod tests;
