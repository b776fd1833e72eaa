//! Request coalescing: the first miss for a key leads the fill ([`FillGuard`]), concurrent
//! misses wait for it ([`Waiter`]) instead of stampeding the upstream.
//!
//! Each fill has a `watch` channel. The leader publishes the stored variant, or that it
//! stored nothing, exactly once: on [`FillGuard::store`] or when the guard is dropped (also
//! on panic or a cancelled request), so a waiter can never wait on a fill that no one will
//! finish. Waiters hold no lock while waiting and give up after their own timeout.

use super::body::CachedResponse;
use super::shared::{FillState, Shared};
use super::store::Variant;
use http::HeaderMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Proof that this request leads the fill of its key: fetch upstream, then either
/// [`store`](Self::store) the response or drop the guard. Both release the waiters. Keep
/// it in the request context; dropping the context drops it.
pub struct FillGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) shard: usize,
    pub(super) key: Arc<str>,
    pub(super) id: u64,
    /// The leader's request headers, to record the values its response `Vary`s on.
    pub(super) headers: HeaderMap,
    pub(super) tx: watch::Sender<FillState>,
    pub(super) done: bool,
}

impl FillGuard {
    /// The key being filled (lower-cased host + path and query), for logs.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Store the complete response and hand it to the waiters. Returns whether it was
    /// stored: not if its `Vary` is unusable, its body is over `max_body`, it is larger than
    /// the store or already expired. Waiters are released either way.
    pub fn store(self, response: CachedResponse) -> bool {
        self.store_at(response, Instant::now())
    }

    /// [`store`](Self::store) with an explicit clock (tests).
    pub fn store_at(mut self, response: CachedResponse, now: Instant) -> bool {
        let too_big = response.body.len() as u64 > self.shared.policy.max_body;
        let variant = Variant::new(Arc::new(response), &self.headers)
            .filter(|_| !too_big)
            .map(Arc::new);
        let stored = self
            .shared
            .end_fill(self.shard, &self.key, self.id, variant.clone(), now);
        self.done = true;
        match variant.filter(|_| stored) {
            Some(v) => {
                self.tx.send_replace(FillState::Stored(v));
                true
            }
            None => {
                log::debug!("cache: response for {} not stored", self.key);
                self.tx.send_replace(FillState::Abandoned);
                false
            }
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .end_fill(self.shard, &self.key, self.id, None, Instant::now());
            self.tx.send_replace(FillState::Abandoned);
        }
    }
}

impl std::fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillGuard").field("key", &self.key).finish()
    }
}

/// A request that found another one fetching its key.
pub struct Waiter {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: watch::Receiver<FillState>,
    /// To check that the stored variant is one this request may be served (`Vary`).
    pub(super) headers: HeaderMap,
}

/// How a wait ended.
#[derive(Debug, Clone)]
pub enum WaitOutcome {
    /// The leader stored a response this request may be served.
    Hit(Arc<CachedResponse>),
    /// Go upstream yourself (and do not store): the leader stored nothing, stored a variant
    /// for other `Vary` values, or did not finish within the timeout.
    Fetch,
}

impl Waiter {
    /// Wait at most `timeout` (e.g. the route's connect + read timeouts) for the leader.
    pub async fn wait(mut self, timeout: Duration) -> WaitOutcome {
        let finished = tokio::time::timeout(
            timeout,
            self.rx
                .wait_for(|state| !matches!(state, FillState::Pending)),
        )
        .await;
        let variant = match finished {
            Ok(Ok(state)) => match &*state {
                FillState::Stored(v) => Some(v.clone()),
                _ => None,
            },
            // Timed out, or the sender vanished without a word (cannot happen: Drop sends).
            _ => None,
        };
        match variant {
            Some(v) if v.matches(&self.headers) && v.response.is_fresh_at(Instant::now()) => {
                self.shared.stats.hits.fetch_add(1, Relaxed);
                WaitOutcome::Hit(v.response.clone())
            }
            _ => WaitOutcome::Fetch,
        }
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiter").finish_non_exhaustive()
    }
}
