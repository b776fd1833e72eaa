// Gatehouse patch (see PATCHES.md); licensed as the rest of this crate (Apache-2.0).

//! Coarse timers for long timeouts on single-threaded Tokio runtimes.
//!
//! A proxy arms a long timeout (an upstream read of 30 s, a pooled connection's idle
//! wait of 60 s) on almost every request and cancels it almost every time. On Tokio's
//! wheel each of those takes the time driver's lock twice (register, cancel) and two heap
//! blocks; on Pingora's fast timer it keeps a `Notify` for each 10 ms deadline until it
//! expires. Here each thread keeps its own table of deadlines, with no lock:
//! registering takes a slot, cancelling frees it, and one task per thread scans the
//! table every [`RESOLUTION`] and wakes whoever is due.
//!
//! A coarse timer never fires before its deadline and normally at most one
//! [`RESOLUTION`] (plus scheduling delay) after it, so it is meant only for timeouts that
//! are long beside it (see [`crate::fast_timeout::set_coarse_timeout_threshold`]).
//!
//! The table belongs to the thread. [`sleep`] uses it only on a current-thread runtime
//! (whose tasks never move between threads); elsewhere, or if polled on another thread
//! after all, the sleep falls back to Tokio's timer for the time that is left. The
//! scanning task runs on the runtime that first needed it; if it stops scanning (that
//! runtime dropped, or no longer driven while another current-thread runtime on the same
//! thread registers timers), the next registration starts another on its own runtime.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often each thread's table is scanned for expired timers.
pub const RESOLUTION: Duration = Duration::from_millis(100);

/// A scanning task that has not scanned for this long is taken to be stuck (its runtime
/// no longer driven) and replaced by one on the runtime registering a timer.
const STALE: Duration = Duration::from_millis(500);

/// Identifies a thread's table, so that a sleep polled or dropped elsewhere never
/// touches another thread's slots.
static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::new());
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Free,
    Pending,
    Fired,
}

struct Slot {
    deadline: Instant,
    waker: Option<Waker>,
    generation: u32,
    state: State,
}

/// The scanning task serving a table. Its token is shared with the task: the task
/// clears it when it ends or is dropped (its runtime shutting down, on whatever thread),
/// and exits at its next wake-up once the table has moved on to another token.
struct Scanner {
    token: Arc<AtomicBool>,
    /// The task's waker while it waits for a pending timer (none was left at its last
    /// scan).
    parked: Option<Waker>,
    last_scan: Instant,
}

struct Table {
    id: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    pending: usize,
    scanner: Option<Scanner>,
}

/// What registering asks the caller to do once the table is released.
enum Kick {
    Nothing,
    /// Start a scanning task with this token (and wake the replaced one, if it was
    /// parked, so that it sees it is retired and exits).
    Spawn(Arc<AtomicBool>, Option<Waker>),
    Wake(Waker),
}

impl Table {
    fn new() -> Self {
        Table {
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            slots: Vec::new(),
            free: Vec::new(),
            pending: 0,
            scanner: None,
        }
    }

    fn new_scanner(&mut self, now: Instant) -> Kick {
        let token = Arc::new(AtomicBool::new(true));
        let old = self.scanner.replace(Scanner {
            token: token.clone(),
            parked: None,
            last_scan: now,
        });
        Kick::Spawn(token, old.and_then(|o| o.parked))
    }

    fn register(&mut self, now: Instant, deadline: Instant, waker: Waker) -> (u32, u32, Kick) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    deadline,
                    waker: None,
                    generation: 0,
                    state: State::Free,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.deadline = deadline;
        slot.waker = Some(waker);
        slot.state = State::Pending;
        self.pending += 1;
        let generation = slot.generation;
        let kick = match &mut self.scanner {
            Some(sc) if sc.token.load(Ordering::Relaxed) => match sc.parked.take() {
                Some(w) => {
                    // Counts as on time until it has had the chance to run.
                    sc.last_scan = now;
                    Kick::Wake(w)
                }
                // Running and scanning on time.
                None if now.saturating_duration_since(sc.last_scan) <= STALE => Kick::Nothing,
                // Running but not scanning (its runtime not driven, or this thread held
                // up): a new task takes over; the old one retires at its next scan.
                None => self.new_scanner(now),
            },
            // None yet, or ended with its runtime.
            _ => self.new_scanner(now),
        };
        (index, generation, kick)
    }

    fn slot(&mut self, index: u32, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation && s.state != State::Free)
    }

    /// Free a slot; its waker is handed back to be dropped outside the table.
    fn cancel(&mut self, index: u32, generation: u32) -> Option<Waker> {
        let slot = self
            .slots
            .get_mut(index as usize)
            .filter(|s| s.generation == generation && s.state != State::Free)?;
        let was_pending = slot.state == State::Pending;
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        let waker = slot.waker.take();
        if was_pending {
            self.pending -= 1;
        }
        self.free.push(index);
        waker
    }

    /// Mark every pending timer due by `now` as fired, collecting the wakers to call.
    fn expire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        if self.pending == 0 {
            return;
        }
        for slot in &mut self.slots {
            if slot.state == State::Pending && slot.deadline <= now {
                slot.state = State::Fired;
                self.pending -= 1;
                if let Some(w) = slot.waker.take() {
                    due.push(w);
                }
            }
        }
    }
}

/// Clears the task's token when the scanning task ends or is dropped (its runtime
/// shutting down, on whatever thread), so that the next registration starts a new one.
struct ScannerGuard(Arc<AtomicBool>);

impl Drop for ScannerGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Whether `token` is still the table's scanner.
fn is_current(t: &Table, token: &Arc<AtomicBool>) -> bool {
    t.scanner
        .as_ref()
        .is_some_and(|sc| Arc::ptr_eq(&sc.token, token))
}

async fn scan(token: Arc<AtomicBool>) {
    let guard = ScannerGuard(token);
    let mut tick = tokio::time::interval(RESOLUTION);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due = Vec::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let idle = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            if !is_current(&t, &guard.0) {
                return None;
            }
            t.expire(now, &mut due);
            if let Some(sc) = t.scanner.as_mut() {
                sc.last_scan = now;
            }
            Some(t.pending == 0)
        });
        // Woken outside the table: a wake may run code that registers or cancels.
        for w in due.drain(..) {
            w.wake();
        }
        match idle {
            None => return,
            Some(false) => continue,
            Some(true) => {}
        }
        let retired = std::future::poll_fn(|cx| {
            TABLE.with(|t| {
                let mut t = t.borrow_mut();
                if !is_current(&t, &guard.0) {
                    return Poll::Ready(true);
                }
                let pending = t.pending;
                let sc = t.scanner.as_mut().expect("current");
                if pending > 0 {
                    sc.parked = None;
                    Poll::Ready(false)
                } else {
                    sc.parked = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        if retired {
            return;
        }
        tick.reset();
        TABLE.with(|t| {
            if let Some(sc) = t.borrow_mut().scanner.as_mut() {
                sc.last_scan = Instant::now();
            }
        });
    }
}

/// Whether the current thread runs a current-thread Tokio runtime, where a coarse
/// timer's task stays on this thread.
pub fn available() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Wait for `duration` on this thread's coarse table (or Tokio's timer where the table
/// cannot be used, see the module documentation).
pub fn sleep(duration: Duration) -> CoarseSleep {
    CoarseSleep {
        duration,
        deadline: None,
        registered: None,
        fallback: None,
    }
}

/// The future returned by [`sleep`].
pub struct CoarseSleep {
    duration: Duration,
    /// Set at the first poll.
    deadline: Option<Instant>,
    /// (table id, slot, generation) once registered.
    registered: Option<(u64, u32, u32)>,
    fallback: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CoarseSleep {
    fn poll_fallback(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        self.fallback
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())))
            .as_mut()
            .poll(cx)
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.filter(|_| this.fallback.is_some()) {
            return this.poll_fallback(deadline, cx);
        }
        let Some((table, index, generation)) = this.registered else {
            // The first poll.
            let now = Instant::now();
            // A duration too long to add is, in practice, forever (30 years).
            let deadline = now
                .checked_add(this.duration)
                .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
            this.deadline = Some(deadline);
            if !available() {
                return this.poll_fallback(deadline, cx);
            }
            let (id, index, generation, kick) = TABLE.with(|t| {
                let mut t = t.borrow_mut();
                let (index, generation, kick) = t.register(now, deadline, cx.waker().clone());
                (t.id, index, generation, kick)
            });
            this.registered = Some((id, index, generation));
            match kick {
                Kick::Nothing => {}
                Kick::Spawn(token, retired) => {
                    tokio::spawn(scan(token));
                    if let Some(w) = retired {
                        w.wake();
                    }
                }
                Kick::Wake(w) => w.wake(),
            }
            return Poll::Pending;
        };
        let state = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            if t.id != table {
                return None;
            }
            let slot = t.slot(index, generation)?;
            if slot.state == State::Fired {
                return Some(State::Fired);
            }
            match &mut slot.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            Some(State::Pending)
        });
        match state {
            Some(State::Fired) => Poll::Ready(()),
            Some(_) => Poll::Pending,
            // Polled on another thread than the one it registered on: Tokio's timer
            // takes over for the time left (the slot left behind fires into a stale
            // waker, harmlessly).
            None => {
                this.registered = None;
                let deadline = this.deadline.unwrap_or_else(Instant::now);
                this.poll_fallback(deadline, cx)
            }
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        let Some((table, index, generation)) = self.registered else {
            return;
        };
        let waker = TABLE
            .try_with(|t| {
                let mut t = t.try_borrow_mut().ok()?;
                if t.id != table {
                    return None;
                }
                t.cancel(index, generation)
            })
            .ok()
            .flatten();
        drop(waker);
    }
}

/// Timers pending on this thread's coarse table (for tests and diagnostics).
pub fn pending_on_this_thread() -> usize {
    TABLE.with(|t| t.borrow().pending)
}

/// Slots this thread's table holds, free or not (for tests and diagnostics).
pub fn slots_on_this_thread() -> usize {
    TABLE.with(|t| t.borrow().slots.len())
}
