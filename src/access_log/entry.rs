//! What one access line is made of, and the time formats every format shares.

use pingora::http::RequestHeader;
use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// `12.345`: milliseconds with 3 decimals, from integers.
pub fn push_millis(line: &mut String, d: Duration) {
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
pub fn push_timestamp(line: &mut String, now: SystemTime) {
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
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
