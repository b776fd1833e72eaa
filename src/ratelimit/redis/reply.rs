//! Parsing the scripts' replies.

use super::super::gcra::Outcome;

/// One bucket's answer to a lease request (hybrid store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Requests granted (charged in Redis); 0 when the bucket is empty.
    pub granted: u64,
    pub remaining: u64,
    /// µs until the bucket is full again.
    pub reset_us: u64,
    /// µs until one request would be granted (when none was).
    pub retry_after_us: u64,
}

/// The batch script's reply: per request (`sizes[q]` buckets each), separated by `;`.
pub fn parse_batch(raw: &[u8], sizes: &[usize]) -> Result<Vec<Vec<Outcome>>, String> {
    let mut parts = raw.split(|&b| b == b';');
    let out = sizes
        .iter()
        .map(|&n| match parts.next() {
            Some(part) => parse_reply(part, n),
            None => Err(format!(
                "script reply {:?} is short",
                String::from_utf8_lossy(raw)
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parts.next().is_some() {
        return Err(format!(
            "script reply {:?} is long",
            String::from_utf8_lossy(raw)
        ));
    }
    Ok(out)
}

/// `all,allowed,remaining,reset,retry_after,…` (non-negative integers) into outcomes.
fn parse_reply(raw: &[u8], n: usize) -> Result<Vec<Outcome>, String> {
    let bad = || format!("unexpected script reply {:?}", String::from_utf8_lossy(raw));
    let mut values = raw.split(|&b| b == b',').map(|v| {
        v.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit()
                .then(|| acc.saturating_mul(10).saturating_add(u64::from(d - b'0')))
        })
    });
    values.next().flatten().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut next = || values.next().flatten().ok_or_else(bad);
        let (allowed, remaining, reset, retry_after) = (next()?, next()?, next()?, next()?);
        out.push(Outcome {
            allowed: allowed == 1,
            tat: 0,
            remaining,
            reset,
            retry_after,
        });
    }
    if values.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

pub fn parse_lease(raw: &[i64]) -> Result<Lease, String> {
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    match raw {
        [g, r, reset, retry] => Ok(Lease {
            granted: u(*g),
            remaining: u(*r),
            reset_us: u(*reset),
            retry_after_us: u(*retry),
        }),
        _ => Err(format!("unexpected lease reply of {} values", raw.len())),
    }
}
