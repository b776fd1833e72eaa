//! A workaround for Tokio's timer driver on the proxy's worker threads.

/// Keep one timer pending on this worker thread's runtime: a 1 s tick that does
/// nothing. When Tokio's time driver parks, it plans its wake-up for the earliest
/// pending timer; a timer registered later that is due before that plan wakes the
/// driver with an `eventfd` write (a system call), whether or not it sleeps. Without a
/// short timer pending, every request's upstream read timeout (30 s) comes before the
/// pooled connections' idle timers (60 s) and makes that write, often more than once
/// per two requests (the README's benchmark notes give the cost). With the tick
/// pending, the plan is at most 1 s away and timers of 1 s or more (every default) wake
/// no one.
pub(super) fn anchor_timer_wheel() {
    thread_local! {
        static ANCHORED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    ANCHORED.with(|anchored| {
        if anchored.replace(true) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                }
            });
        }
    });
}
