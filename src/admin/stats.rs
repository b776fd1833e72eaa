//! The dashboard's recent history (`GET /admin/stats`): every [`INTERVAL`] the
//! supervisor reads the gateway's own counters and keeps what changed, for the last
//! [`KEEP`] intervals (10 minutes): requests, 5xx, 429s and latency quantiles overall,
//! and per route over the last minute.

use crate::metrics::Metrics;
use prometheus::core::Collector;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const INTERVAL: Duration = Duration::from_secs(5);
/// Intervals kept: 10 minutes.
const KEEP: usize = 120;
/// Intervals in the per-route window: 1 minute.
const ROUTE_WINDOW: usize = 12;

/// Requests, 5xx and 429 answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    errors: u64,
    limited: u64,
}

impl Counts {
    fn since(self, before: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
            limited: self.limited.saturating_sub(before.limited),
        }
    }
}

/// The counters at one instant.
#[derive(Debug, Clone, Default)]
struct Totals {
    all: Counts,
    routes: BTreeMap<String, Counts>,
    /// Cumulative duration buckets over every route: (upper bound, count).
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Clone)]
struct Sample {
    unix_ms: u64,
    counts: Counts,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Default)]
struct History {
    /// The last [`ROUTE_WINDOW`] + 1 totals (the window's start and its end).
    totals: VecDeque<Totals>,
    samples: VecDeque<Sample>,
}

#[derive(Default)]
pub struct Stats {
    history: Mutex<History>,
}

impl Stats {
    /// Read the counters and record the interval since the last call.
    pub fn sample(&self, metrics: &Metrics) {
        let now = totals(metrics);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = h.totals.back() {
            let counts = now.all.since(prev.all);
            let deltas: Vec<(f64, u64)> = now
                .buckets
                .iter()
                .zip(prev.buckets.iter().map(|b| b.1).chain(std::iter::repeat(0)))
                .map(|(&(le, c), p)| (le, c.saturating_sub(p)))
                .collect();
            let sample = Sample {
                unix_ms,
                counts,
                p50_ms: quantile(&deltas, 0.5).map(|s| s * 1000.0),
                p99_ms: quantile(&deltas, 0.99).map(|s| s * 1000.0),
            };
            h.samples.push_back(sample);
            if h.samples.len() > KEEP {
                h.samples.pop_front();
            }
        }
        h.totals.push_back(now);
        if h.totals.len() > ROUTE_WINDOW + 1 {
            h.totals.pop_front();
        }
    }

    /// The `/admin/stats` document.
    pub fn report(&self) -> Value {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let samples: Vec<Value> = h
            .samples
            .iter()
            .map(|s| {
                json!({
                    "t": s.unix_ms,
                    "requests": s.counts.requests,
                    "errors": s.counts.errors,
                    "limited": s.counts.limited,
                    "p50_ms": s.p50_ms.map(round3),
                    "p99_ms": s.p99_ms.map(round3),
                })
            })
            .collect();
        let routes: Vec<Value> = match (h.totals.front(), h.totals.back()) {
            (Some(first), Some(last)) => last
                .routes
                .iter()
                .map(|(name, c)| {
                    let d = c.since(first.routes.get(name).copied().unwrap_or_default());
                    json!({
                        "route": name,
                        "requests": d.requests,
                        "errors": d.errors,
                        "limited": d.limited,
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        json!({
            "interval_seconds": INTERVAL.as_secs(),
            "samples": samples,
            "routes": routes,
        })
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn totals(metrics: &Metrics) -> Totals {
    let mut t = Totals::default();
    for family in metrics.requests.collect() {
        for m in family.get_metric() {
            let mut route = "";
            let mut status = "";
            for l in m.get_label() {
                match l.name() {
                    "route" => route = l.value(),
                    "status" => status = l.value(),
                    _ => {}
                }
            }
            let n = m.get_counter().get_value() as u64;
            let c = Counts {
                requests: n,
                errors: if status.starts_with('5') { n } else { 0 },
                limited: if status == "429" { n } else { 0 },
            };
            for target in [&mut t.all, t.routes.entry(route.to_string()).or_default()] {
                target.requests += c.requests;
                target.errors += c.errors;
                target.limited += c.limited;
            }
        }
    }
    for family in metrics.duration.collect() {
        for m in family.get_metric() {
            let buckets = m.get_histogram().get_bucket();
            if t.buckets.is_empty() {
                t.buckets = buckets.iter().map(|b| (b.upper_bound(), 0)).collect();
            }
            for (sum, b) in t.buckets.iter_mut().zip(buckets) {
                sum.1 += b.cumulative_count();
            }
        }
    }
    t
}

/// Prometheus' `histogram_quantile` over cumulative buckets (linear within a bucket;
/// the last finite bound when it falls in +Inf).
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last().map(|b| b.1)?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut prev_bound = 0.0;
    let mut prev_count = 0u64;
    for &(le, count) in buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return Some(prev_bound);
            }
            let in_bucket = (count - prev_count) as f64;
            if in_bucket == 0.0 {
                return Some(le);
            }
            return Some(prev_bound + (le - prev_bound) * (rank - prev_count as f64) / in_bucket);
        }
        prev_bound = le;
        prev_count = count;
    }
    // Past every bucket the histogram has (prometheus always ends with +Inf).
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.1, 50), (0.2, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&b, 0.5), Some(0.1));
        let q = quantile(&b, 0.75).expect("data");
        assert!((q - 0.15).abs() < 1e-9, "{q}");
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        // Everything above the last finite bound: that bound.
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 10)], 0.99), Some(0.1));
    }

    #[test]
    fn samples_count_what_changed_per_interval_and_per_route() {
        let m = Metrics::new();
        let stats = Stats::default();
        stats.sample(&m);
        let get = http::Method::GET;
        for _ in 0..3 {
            m.record_request(None, ["a", "s"], &get, 200, 0.004, [0, 0]);
        }
        m.record_request(None, ["a", "s"], &get, 503, 0.004, [0, 0]);
        m.record_request(None, ["b", "s"], &get, 429, 0.0001, [0, 0]);
        stats.sample(&m);
        m.record_request(None, ["b", "s"], &get, 200, 0.004, [0, 0]);
        stats.sample(&m);
        let r = stats.report();
        let samples = r["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0]["requests"], 5);
        assert_eq!(samples[0]["errors"], 1);
        assert_eq!(samples[0]["limited"], 1);
        assert_eq!(samples[1]["requests"], 1);
        let p50 = samples[1]["p50_ms"].as_f64().expect("p50");
        assert!(p50 > 2.5 && p50 <= 5.0, "{p50}");
        let routes = r["routes"].as_array().expect("routes");
        let a = routes.iter().find(|x| x["route"] == "a").expect("route a");
        assert_eq!(
            (a["requests"].as_u64(), a["errors"].as_u64()),
            (Some(4), Some(1))
        );
        let b = routes.iter().find(|x| x["route"] == "b").expect("route b");
        assert_eq!(
            (b["requests"].as_u64(), b["limited"].as_u64()),
            (Some(2), Some(1))
        );
    }
}
