//! Shared store for several gateway instances: every decision is made in Redis.
//!
//! A decision is part of an `EVALSHA` of [`scripts::CHECK`]: it reads all the request's
//! buckets, evaluates GCRA for each on Redis's clock and writes the new TATs only if
//! every policy allowed. A Lua script runs atomically, so hierarchical limits are exact
//! across instances. Concurrent decisions share one call ([`batch`]; not on a Cluster,
//! where keys live on different nodes). `redis::Script` loads the script when Redis
//! does not know it (after a restart, on a new Cluster node).
//!
//! Keys are `<prefix><policy>:<bucket key>` (policy names contain no `:`). On a Cluster
//! each bucket is its own hash tag (`<prefix>{<policy>:<bucket key>}`), so buckets spread
//! over the slots and a MOVED or ASK is followed by the cluster client rather than
//! turned into an error. A decision whose buckets live in one slot is still one atomic
//! call; one whose buckets are in several slots charges each bucket in its own call (in
//! parallel) and gives the charges back if any bucket refused: never over the limit, and
//! a refused request holds the others' capacity only for a round trip.
//!
//! # Failures
//! Every decision is bounded by `timeout`, reconnects and retries included. A failed or
//! timed-out decision answers per `on_error`, counts in [`RedisStore::redis_errors`] and
//! logs at most one line per [`LOG_EVERY`]. After `breaker.failures` in a row the store's
//! [`breaker::StoreBreaker`] opens: decisions apply `on_error` at once for
//! `breaker.cool_down`, and a background probe closes it as soon as Redis answers again
//! (following a Sentinel failover on the way).

mod batch;
mod breaker;
mod conn;
mod probe;
mod reply;
mod scripts;

pub use breaker::StoreState;
pub use probe::Probe;

use super::config::{OnError, RedisSettings};
use super::decision::{Check, Decision};
use super::gcra::{decide, Outcome, Rate};
use batch::{Batcher, Job};
use breaker::StoreBreaker;
use conn::{Conn, Connector};
pub use reply::Lease;
use reply::{parse_batch, parse_lease};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// At most one log line per this interval about Redis errors.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
const MICROS_PER_SEC: u64 = 1_000_000;
/// How often a probe asks a Redis the breaker gave up on.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The Redis-backed store. Long-lived: kept across reloads while `redis:` is unchanged.
pub struct RedisStore {
    settings: RedisSettings,
    connector: Arc<Connector>,
    check: redis::Script,
    refund: redis::Script,
    lease: redis::Script,
    breaker: Arc<StoreBreaker>,
    /// Shares script calls among concurrent decisions (not on a Cluster); started on
    /// first use, inside the runtime.
    batcher: OnceLock<Batcher>,
    errors: AtomicU64,
    /// ms since `epoch` of the last error log line, +1 (0 = never).
    last_log: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.settings.target)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Checks the settings; does not connect (that happens on first use).
    pub fn new(settings: RedisSettings) -> Result<RedisStore, String> {
        let connector = Arc::new(Connector::new(&settings)?);
        Ok(RedisStore {
            breaker: Arc::new(StoreBreaker::new(
                settings.breaker_failures,
                settings.cool_down,
            )),
            settings,
            connector,
            check: redis::Script::new(scripts::CHECK),
            refund: redis::Script::new(scripts::REFUND),
            lease: redis::Script::new(scripts::LEASE),
            batcher: OnceLock::new(),
            errors: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Decisions that failed or timed out (and were answered per `on_error`) since
    /// creation, including those answered while the breaker was open.
    pub fn redis_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> StoreState {
        self.breaker.state()
    }

    /// Check what the configured Redis is (see [`probe`]): over connections of its own.
    pub async fn probe(&self) -> Probe {
        probe::probe(&self.settings).await
    }

    /// Starts connecting now, in the background (inside a Tokio runtime). Optional: the
    /// first decision does the same.
    pub fn warm_up(&self) {
        match self.connector.get() {
            Ok(conn) => {
                tokio::spawn(async move {
                    match conn.ping().await {
                        Ok(()) => log::info!("rate limit redis store connected"),
                        Err(e) => log::debug!("rate limit redis store warm-up failed: {e}"),
                    }
                });
            }
            Err(_) => self.connector.rediscover(),
        }
    }

    /// One decision for all of a request's policies.
    pub async fn check(&self, checks: &[Check<'_>]) -> Decision {
        if checks.is_empty() {
            return Decision::allow_without_headers();
        }
        if !self.breaker.admits() {
            return self.on_error(None);
        }
        let res = tokio::time::timeout(self.settings.timeout, self.eval(checks)).await;
        match res {
            Ok(Ok(outcomes)) => {
                self.breaker.success();
                decide(checks, &outcomes, MICROS_PER_SEC)
            }
            Ok(Err(e)) => self.on_error(Some(e)),
            Err(_) => self.on_error(Some(format!("timed out after {:?}", self.settings.timeout))),
        }
    }

    /// Lease up to `want` requests' worth of each bucket (hybrid store), bounded by the
    /// timeout; `None` when Redis failed (the caller applies `on_error`).
    pub async fn lease(&self, wants: &[(Check<'_>, u64)]) -> Option<Vec<Lease>> {
        if !self.breaker.admits() {
            self.on_error(None);
            return None;
        }
        let work = async {
            let conn = self.connector.get()?;
            let calls = wants.iter().map(|(c, want)| {
                let rate = Rate::for_check(c, 1000);
                let mut inv = self.lease.prepare_invoke();
                inv.key(self.key(c))
                    .arg(rate.period)
                    .arg(rate.horizon)
                    .arg(*want);
                let conn = conn.clone();
                async move {
                    let raw: Vec<i64> = conn.invoke(&inv).await.map_err(|e| self.failed(&e))?;
                    parse_lease(&raw)
                }
            });
            futures::future::try_join_all(calls).await
        };
        match tokio::time::timeout(self.settings.timeout, work).await {
            Ok(Ok(leases)) => {
                self.breaker.success();
                Some(leases)
            }
            Ok(Err(e)) => {
                self.on_error(Some(e));
                None
            }
            Err(_) => {
                self.on_error(Some(format!("timed out after {:?}", self.settings.timeout)));
                None
            }
        }
    }

    fn key(&self, c: &Check<'_>) -> String {
        let p = &self.settings.prefix;
        if self.connector.is_cluster() {
            format!("{p}{{{}:{}}}", c.policy.name, c.key)
        } else {
            format!("{p}{}:{}", c.policy.name, c.key)
        }
    }

    async fn eval(&self, checks: &[Check<'_>]) -> Result<Vec<Outcome>, String> {
        let keys: Vec<String> = checks.iter().map(|c| self.key(c)).collect();
        if !self.connector.is_cluster() {
            let batcher = self
                .batcher
                .get_or_init(|| Batcher::start(self.connector.clone(), self.check.clone()));
            let (reply, answer) = tokio::sync::oneshot::channel();
            let rates = checks
                .iter()
                .map(|c| {
                    let r = Rate::for_check(c, 1000);
                    (r.period, r.horizon)
                })
                .collect();
            batcher.submit(Job { keys, rates, reply })?;
            return answer
                .await
                .map_err(|_| "rate limit batch dropped".to_string())?;
        }
        let conn = self.connector.get()?;
        let one_slot = {
            let first = redis::cluster_routing::Slot::for_key(&keys[0]);
            keys.iter()
                .all(|k| redis::cluster_routing::Slot::for_key(k) == first)
        };
        if one_slot {
            return self.eval_atomic(&conn, checks, &keys).await;
        }
        // Buckets in several slots: charge each, and give back the charges of a request
        // another bucket refused.
        let each = checks.iter().zip(&keys).map(|(c, k)| {
            self.eval_atomic(&conn, std::slice::from_ref(c), std::slice::from_ref(k))
        });
        let outcomes: Vec<Outcome> = futures::future::try_join_all(each)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if outcomes.iter().any(|o| !o.allowed) {
            let refunds = checks
                .iter()
                .zip(&keys)
                .zip(&outcomes)
                .filter(|(_, o)| o.allowed)
                .map(|((c, k), _)| {
                    let mut inv = self.refund.prepare_invoke();
                    inv.key(k).arg(Rate::for_check(c, 1000).period);
                    let conn = conn.clone();
                    async move {
                        let _: i64 = conn.invoke(&inv).await.map_err(|e| self.failed(&e))?;
                        Ok::<(), String>(())
                    }
                });
            futures::future::try_join_all(refunds).await?;
        }
        Ok(outcomes)
    }

    async fn eval_atomic(
        &self,
        conn: &Conn,
        checks: &[Check<'_>],
        keys: &[String],
    ) -> Result<Vec<Outcome>, String> {
        // A batch of one request.
        let mut inv = self.check.prepare_invoke();
        inv.arg(1).arg(checks.len());
        for (c, key) in checks.iter().zip(keys) {
            let rate = Rate::for_check(c, 1000);
            inv.key(key);
            inv.arg(rate.period).arg(rate.horizon);
        }
        let raw: Vec<u8> = conn.invoke(&inv).await.map_err(|e| self.failed(&e))?;
        parse_batch(&raw, &[checks.len()])?
            .pop()
            .ok_or_else(|| "empty script reply".to_string())
    }

    fn failed(&self, e: &redis::RedisError) -> String {
        self.connector.failed(e)
    }

    /// The `on_error` answer; `what` went wrong, or `None` when the breaker is open.
    fn on_error(&self, what: Option<String>) -> Decision {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(what) = &what {
            if self.breaker.failure() {
                self.start_probe();
            }
            self.log(&format!(
                "{what}; answering on_error={:?} ({n} errors so far)",
                self.settings.on_error
            ));
        }
        Decision {
            allowed: self.settings.on_error == OnError::Allow,
            rejected_by: None,
            headers: None,
            store_error: true,
        }
    }

    /// While the breaker is open: ask Redis every [`PROBE_EVERY`] (for Sentinel, ask for
    /// the master first), and close the breaker on the first answer.
    fn start_probe(&self) {
        if self.breaker.probing.swap(true, Ordering::SeqCst)
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        log::warn!(
            "rate limit redis store is down: decisions answer on_error={:?} without asking it until it answers again",
            self.settings.on_error
        );
        let (breaker, connector, timeout) = (
            self.breaker.clone(),
            self.connector.clone(),
            self.settings.timeout,
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if Arc::strong_count(&breaker) == 1 {
                    break; // the store is gone
                }
                let probe = async {
                    connector.discover().await?;
                    let conn = connector.get()?;
                    conn.ping().await.map_err(|e| connector.failed(&e))
                };
                let limit = timeout.max(Duration::from_millis(200));
                if let Ok(Ok(())) = tokio::time::timeout(limit, probe).await {
                    breaker.success();
                    log::info!("rate limit redis store answers again");
                    break;
                }
            }
            breaker.probing.store(false, Ordering::SeqCst);
        });
    }

    fn log(&self, what: &str) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now_ms.saturating_sub(last) >= every)
            && self
                .last_log
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("rate limit redis store: {what}");
        }
    }
}

#[cfg(test)]
mod tests;
