//! `format: template` (nginx-style `$variable` lines, compiled once at load) and the
//! `combined` format (nginx's and Apache's, which goaccess and friends read).

use super::entry::{civil_from_days, push_millis, push_timestamp, Entry};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The variables a template may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    TimeIso8601,
    TimeLocal,
    RequestId,
    TraceId,
    Method,
    Host,
    Path,
    Protocol,
    Request,
    Status,
    BodyBytesSent,
    RequestTime,
    DurationMs,
    Route,
    Service,
    Upstream,
    Attempts,
    UserAgent,
    Referer,
}

const VARS: [(&str, Var); 20] = [
    ("remote_addr", Var::RemoteAddr),
    ("time_iso8601", Var::TimeIso8601),
    ("time_local", Var::TimeLocal),
    ("request_id", Var::RequestId),
    ("trace_id", Var::TraceId),
    ("method", Var::Method),
    ("host", Var::Host),
    ("path", Var::Path),
    ("protocol", Var::Protocol),
    ("request", Var::Request),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("request_time", Var::RequestTime),
    ("duration_ms", Var::DurationMs),
    ("route", Var::Route),
    ("service", Var::Service),
    ("upstream", Var::Upstream),
    ("attempts", Var::Attempts),
    ("http_user_agent", Var::UserAgent),
    ("http_referer", Var::Referer),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A compiled `server.access_log.template`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// `$name` (the longest run of letters, digits and `_`); `$$` is a `$`. Every
    /// unknown name is an error.
    pub fn compile(src: &str) -> Result<Template, Vec<String>> {
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                text.push('$');
                rest = r;
                continue;
            }
            // (`${…}` never gets here: the config loader expands it from the
            // environment first.)
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (name, after) = (&rest[..end], &rest[end..]);
            if name.is_empty() {
                errors.push(format!(
                    "a lone $ at {:?} (write $$ for a dollar sign)",
                    truncate(rest)
                ));
                rest = after;
                continue;
            }
            match VARS.iter().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(*v));
                }
                None => errors.push(format!(
                    "unknown variable ${name} (valid: {})",
                    VARS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )),
            }
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if pieces.is_empty() && errors.is_empty() {
            errors.push("the template is empty".to_string());
        }
        if errors.is_empty() {
            Ok(Template(pieces))
        } else {
            Err(errors)
        }
    }

    pub(super) fn render(&self, line: &mut String, e: &Entry, now: SystemTime) {
        for p in &self.0 {
            match p {
                Piece::Text(t) => line.push_str(t),
                Piece::Var(v) => push_var(line, *v, e, now),
            }
        }
    }
}

fn truncate(s: &str) -> &str {
    s.get(..s.len().min(20)).unwrap_or(s)
}

/// nginx's `combined`. `$remote_user` is always `-` (no credential is ever logged).
const COMBINED: &str = "$remote_addr - - [$time_local] \"$request\" $status $body_bytes_sent \
                        \"$http_referer\" \"$http_user_agent\"";

pub(super) fn combined(line: &mut String, e: &Entry, now: SystemTime) {
    static COMPILED: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    COMPILED
        .get_or_init(|| Template::compile(COMBINED).unwrap_or(Template(Vec::new())))
        .render(line, e, now);
}

fn header<'a>(e: &'a Entry, name: http::header::HeaderName) -> &'a [u8] {
    e.req.headers.get(name).map_or(b"", |v| v.as_bytes())
}

fn push_var(line: &mut String, v: Var, e: &Entry, now: SystemTime) {
    let mut num = itoa::Buffer::new();
    match v {
        Var::RemoteAddr => match e.client_ip {
            Some(ip) => line.push_str(crate::headers::ip_text(ip, &mut [0; 48])),
            None => line.push('-'),
        },
        Var::TimeIso8601 => push_timestamp(line, now),
        Var::TimeLocal => push_time_local(line, now),
        Var::RequestId => push_escaped(line, e.request_id.as_bytes()),
        Var::TraceId => push_or_dash(line, e.trace_id.unwrap_or("")),
        Var::Method => push_escaped(line, e.req.method.as_str().as_bytes()),
        Var::Host => push_escaped(line, header(e, http::header::HOST)),
        Var::Path => push_escaped(line, e.req.uri.path().as_bytes()),
        Var::Protocol => line.push_str(protocol(e.req.version)),
        Var::Request => {
            push_escaped(line, e.req.method.as_str().as_bytes());
            line.push(' ');
            push_escaped(line, e.req.uri.path().as_bytes());
            line.push(' ');
            line.push_str(protocol(e.req.version));
        }
        Var::Status => line.push_str(num.format(e.status)),
        Var::BodyBytesSent => line.push_str(num.format(e.body_bytes_sent)),
        Var::RequestTime => {
            let ms = e.elapsed.as_millis();
            let _ = write!(line, "{}.{:03}", ms / 1000, ms % 1000);
        }
        Var::DurationMs => push_millis(line, e.elapsed),
        Var::Route => push_escaped(line, e.route.as_bytes()),
        Var::Service => push_escaped(line, e.service.as_bytes()),
        Var::Upstream => push_or_dash(line, e.upstream.unwrap_or("")),
        Var::Attempts => line.push_str(num.format(e.attempts)),
        Var::UserAgent => push_or_dash_bytes(line, header(e, http::header::USER_AGENT)),
        Var::Referer => {
            // Without its query: tokens travel there.
            let r = header(e, http::header::REFERER);
            let end = r.iter().position(|&b| b == b'?').unwrap_or(r.len());
            push_or_dash_bytes(line, &r[..end]);
        }
    }
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn push_or_dash(line: &mut String, s: &str) {
    push_or_dash_bytes(line, s.as_bytes());
}

fn push_or_dash_bytes(line: &mut String, s: &[u8]) {
    if s.is_empty() {
        line.push('-');
    } else {
        push_escaped(line, s);
    }
}

/// nginx's escaping: `"`, `\`, control bytes and non-ASCII as `\xHH`, so a line cannot
/// be split or a field closed early by what a client sent.
pub(super) fn push_escaped(line: &mut String, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            line.push_str("\\x");
            line.push(char::from(HEX[usize::from(b >> 4)]));
            line.push(char::from(HEX[usize::from(b & 15)]));
        } else {
            line.push(char::from(b));
        }
    }
}

/// `02/Dec/2026:11:01:59 +0000` (UTC).
pub(super) fn push_time_local(line: &mut String, now: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    let _ = write!(
        line,
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m as usize).saturating_sub(1) % 12],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
}
