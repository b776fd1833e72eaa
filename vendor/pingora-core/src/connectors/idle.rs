// (Gatehouse patch) The keep-alive pool of upstream connections, without a task per
// idle connection.
//
// Pingora's `pingora_pool::ConnectionPool` gives every released connection a task that
// watches it: each request paid for an `Arc<Mutex<Stream>>`, an LRU insertion with its
// `Notify`, a oneshot channel, a spawned task with its idle timer, and on reuse a wake-up
// of that task and a wait for it to let go of the stream (about a tenth of bare Pingora's
// CPU per request). Here an idle connection is an entry in a list per peer, under a lock
// held for a push or a pop and never across an `.await`.
//
// What the watching task did is done otherwise: Tokio's reactor keeps recording a
// registered socket's readiness whether or not a task waits on it, so a connection the
// peer closed (or sent unexpected bytes on) reads so at once when it is taken (the
// caller's `test_reusable_stream`); a connection past its idle timeout is never handed
// out; and a sweep every `SWEEP_EVERY` closes both kinds while nobody asks for them.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often idle connections are checked while nobody takes them.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    stream: Stream,
    /// When it was released (the oldest is evicted when the pool is full; the eviction
    /// callback is told how long it was idle).
    since: Instant,
    /// Past this it is closed, not reused (`None`: no idle timeout).
    deadline: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

#[derive(Default)]
struct Lists {
    /// Per reuse hash, oldest first. A list that empties is kept (with its buffer) for
    /// the next release to the same peer, so a peer with one connection costs no
    /// allocation per request; the sweep removes the empty ones.
    peers: HashMap<u64, VecDeque<Entry>>,
    len: usize,
}

impl Lists {
    /// Remove and return the oldest connection of the whole pool.
    fn pop_oldest(&mut self) -> Option<Entry> {
        let key = self
            .peers
            .iter()
            .filter_map(|(k, list)| list.front().map(|e| (e.since, *k)))
            .min()?
            .1;
        let entry = self.peers.get_mut(&key)?.pop_front();
        if entry.is_some() {
            self.len -= 1;
        }
        entry
    }
}

/// Idle upstream connections by reuse hash, at most `capacity` in all.
pub(crate) struct IdlePool {
    lists: Mutex<Lists>,
    capacity: usize,
    /// A sweep task is running (it clears this when it ends, with its runtime).
    sweeping: AtomicBool,
}

impl IdlePool {
    pub(crate) fn new(capacity: usize) -> Self {
        IdlePool {
            lists: Mutex::new(Lists::default()),
            capacity,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently released connection for `key` that is within its idle
    /// timeout (most recent first: the warmest socket, and the older ones age out).
    /// Expired ones met on the way are closed, after the lock is released.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        let mut expired: Vec<Entry> = Vec::new();
        let found = {
            let mut lists = self.lists.lock();
            let list = lists.peers.get_mut(&key)?;
            let found = loop {
                match list.pop_back() {
                    Some(e) if e.expired(now) => expired.push(e),
                    other => break other,
                }
            };
            lists.len -= expired.len() + usize::from(found.is_some());
            found
        };
        drop(expired);
        found.map(|e| e.stream)
    }

    /// Keep `stream` for reuse under `key`. When the pool is full the oldest connection
    /// of any peer is closed (and `evicted` told how long it was idle); the oldest of
    /// this peer is closed too when its idle timeout has passed.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        evicted: Option<&PoolCallback>,
        unexpected_data: &Arc<AtomicU64>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut closing: Vec<Entry> = Vec::new();
        {
            let mut lists = self.lists.lock();
            let list = lists.peers.entry(key).or_default();
            if list.front().is_some_and(|e| e.expired(now)) {
                closing.extend(list.pop_front());
            }
            list.push_back(Entry {
                stream,
                since: now,
                deadline: idle_timeout.map(|t| now + t),
            });
            lists.len = lists.len + 1 - closing.len();
            while lists.len > self.capacity {
                match lists.pop_oldest() {
                    Some(e) => {
                        if let Some(callback) = evicted {
                            callback(now.saturating_duration_since(e.since));
                        }
                        closing.push(e);
                    }
                    None => break,
                }
            }
        }
        drop(closing);
        if !self.sweeping.load(Ordering::Relaxed) {
            self.start_sweeping(unexpected_data.clone());
        }
    }

    /// Close the connections that are past their idle timeout, or that the peer closed
    /// or sent bytes on, and drop the empty lists.
    fn sweep(&self, unexpected_data: &AtomicU64) {
        let now = Instant::now();
        let mut closing: Vec<Entry> = Vec::new();
        {
            let mut lists = self.lists.lock();
            lists.peers.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    let keep = !list[i].expired(now)
                        && test_reusable_stream(&mut list[i].stream, unexpected_data);
                    if keep {
                        i += 1;
                    } else {
                        closing.extend(list.remove(i));
                    }
                }
                !list.is_empty()
            });
            lists.len -= closing.len();
        }
        drop(closing);
    }

    /// One sweep task per pool, on the runtime of the first release (when that runtime
    /// ends, the next release starts another).
    fn start_sweeping(self: &Arc<Self>, unexpected_data: Arc<AtomicU64>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        struct Running(Weak<IdlePool>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(pool) = self.0.upgrade() {
                    pool.sweeping.store(false, Ordering::Release);
                }
            }
        }
        let running = Running(Arc::downgrade(self));
        pingora_runtime::current_handle().spawn(async move {
            let running = running;
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = running.0.upgrade() else {
                    return;
                };
                pool.sweep(&unexpected_data);
            }
        });
    }
}
