//! Shared store for several gateway instances: one Redis round trip per request.
//!
//! Every decision is a single `EVALSHA` of [`LUA`] (loaded once; `redis::Script` falls
//! back to `SCRIPT LOAD` + retry on `NOSCRIPT`, e.g. after a Redis restart). The script
//! reads all the request's buckets, evaluates GCRA for each using the **Redis server's
//! clock** (`TIME`, so instances with skewed clocks agree), and writes the new TATs only if
//! every policy allowed: a Lua script runs atomically, so hierarchical limits are exact
//! across instances. Each written key gets a `PX` equal to the time until its bucket is
//! full again (+1 ms): an expired key is an empty bucket, so Redis memory is bounded by the
//! keys active within one refill period and nothing has to be cleaned up.
//!
//! Keys are `<prefix><policy>:<bucket key>`. Policy names contain no `:` (validated), so
//! keys cannot collide across policies. For Redis Cluster, all keys of one script must
//! share a slot: that needs a hash-tag prefix such as `{gh}:` and a cluster client, which
//! this store does not use (standalone/sentinel-fronted Redis only).
//!
//! # Failure handling
//! The connection is a `redis::aio::ConnectionManager` (multiplexed, reconnects by itself),
//! created lazily on the first check (it needs a Tokio runtime), with a background warm-up
//! that connects and loads the script; nothing blocks startup. Each call is wrapped in
//! `tokio::time::timeout(redis.timeout)`. On timeout or error the store answers per
//! `on_error`, increments [`RedisStore::redis_errors`], and logs at most one line per
//! [`LOG_EVERY`]. A failed connection is retried with short backoff when traffic asks for
//! it, so limiting resumes by itself once Redis is back.

use super::config::{OnError, RedisSettings};
use super::decision::{Check, Decision};
use super::gcra::{decide, Outcome, Rate};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one log line per this interval about Redis errors.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
const MICROS_PER_SEC: u64 = 1_000_000;

/// KEYS[i]: bucket i. ARGV[2i-1], ARGV[2i]: its period T and horizon burst*T, in µs.
/// Returns {all_allowed, then per bucket: allowed, remaining, reset_us, retry_after_us}.
/// Times are integral µs since the epoch (~1.8e15 < 2^53, exact in Lua's doubles); TATs
/// are written with `%.0f` because Lua's default number formatting keeps 14 digits only.
pub const LUA: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pending = {}
local out = {1}
for i = 1, #KEYS do
  local key = KEYS[i]
  local period = tonumber(ARGV[2 * i - 1])
  local horizon = now + tonumber(ARGV[2 * i])
  local tat = pending[key]
  if tat == nil then tat = tonumber(redis.call('GET', key) or '0') or 0 end
  if tat < now then tat = now end
  local nt = tat + period
  if nt <= horizon then
    pending[key] = nt
    out[#out + 1] = 1
    out[#out + 1] = math.floor((horizon - nt) / period)
    out[#out + 1] = nt - now
    out[#out + 1] = 0
  else
    pending[key] = tat
    out[1] = 0
    out[#out + 1] = 0
    out[#out + 1] = 0
    out[#out + 1] = tat - now
    out[#out + 1] = nt - horizon
  end
end
if out[1] == 1 then
  for key, tat in pairs(pending) do
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
  end
end
return out
"#;

/// The Redis-backed store. Long-lived: keep it across reloads while `redis:` is unchanged.
pub struct RedisStore {
    client: redis::Client,
    settings: RedisSettings,
    script: redis::Script,
    manager: OnceLock<ConnectionManager>,
    errors: AtomicU64,
    /// ms since `epoch` of the last error log line, +1 (0 = never).
    last_log: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .finish()
    }
}

impl RedisStore {
    /// Parses the URL; does not connect (that happens on first use, in the background).
    pub fn new(settings: RedisSettings) -> Result<RedisStore, String> {
        let client = match &settings.ca_pem {
            None => redis::Client::open(settings.url.as_str()),
            Some(ca) => redis::Client::build_with_tls(
                settings.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
        }
        .map_err(|e| format!("invalid redis url {:?}: {e}", settings.url))?;
        Ok(RedisStore {
            client,
            settings,
            script: redis::Script::new(LUA),
            manager: OnceLock::new(),
            errors: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Calls that failed or timed out (and were answered per `on_error`) since creation.
    pub fn redis_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Starts connecting now, in the background (must be called inside a Tokio runtime).
    /// Optional: the first [`Self::check`] does the same.
    pub fn warm_up(&self) {
        if let Err(e) = self.manager() {
            self.note_error(&e);
        }
    }

    /// One atomic decision for all of a request's policies.
    pub async fn check(&self, checks: &[Check<'_>]) -> Decision {
        if checks.is_empty() {
            return Decision::allow_without_headers();
        }
        let res = tokio::time::timeout(self.settings.timeout, self.eval(checks)).await;
        let err = match res {
            Ok(Ok(outcomes)) => return decide(checks, &outcomes, MICROS_PER_SEC),
            Ok(Err(e)) => e,
            Err(_) => format!("timed out after {:?}", self.settings.timeout),
        };
        self.note_error(&err);
        Decision {
            allowed: self.settings.on_error == OnError::Allow,
            rejected_by: None,
            headers: None,
            store_error: true,
        }
    }

    async fn eval(&self, checks: &[Check<'_>]) -> Result<Vec<Outcome>, String> {
        let mut conn = self.manager()?;
        let mut inv = self.script.prepare_invoke();
        for c in checks {
            let rate = Rate::for_check(c, 1000);
            inv.key(format!(
                "{}{}:{}",
                self.settings.prefix, c.policy.name, c.key
            ));
            inv.arg(rate.period).arg(rate.horizon);
        }
        let raw: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        parse_reply(&raw, checks.len())
    }

    fn manager(&self) -> Result<ConnectionManager, String> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("not inside a Tokio runtime".to_string());
        }
        let t = self.settings.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t.max(Duration::from_millis(500))))
            .set_response_timeout(Some(t.max(Duration::from_millis(100))))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // Spawns its push-listener task on the current runtime; does not connect.
        let created = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| e.to_string())?;
        let mut first = false;
        let m = self.manager.get_or_init(|| {
            first = true;
            created
        });
        if first {
            let mut conn = m.clone();
            let script = self.script.clone();
            // Drive the first connection and load the script without waiting for traffic.
            // Ends by itself after the manager's bounded retries.
            tokio::spawn(async move {
                match script.load_async(&mut conn).await {
                    Ok(_) => log::info!("rate limit redis store connected"),
                    Err(e) => log::debug!("rate limit redis store warm-up failed: {e}"),
                }
            });
        }
        Ok(m.clone())
    }

    fn note_error(&self, what: &str) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now_ms.saturating_sub(last) >= every)
            && self
                .last_log
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "rate limit redis store: {what}; answering on_error={:?} ({n} errors so far)",
                self.settings.on_error
            );
        }
    }
}

fn parse_reply(raw: &[i64], n: usize) -> Result<Vec<Outcome>, String> {
    if raw.len() != 1 + 4 * n {
        return Err(format!(
            "unexpected script reply of {} values for {n} keys",
            raw.len()
        ));
    }
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(raw[1..]
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            tat: 0,
            remaining: u(c[1]),
            reset: u(c[2]),
            retry_after: u(c[3]),
        })
        .collect())
}
