use crate::ratelimit::gcra::*;
use std::time::Duration;

const MS: u64 = 1_000_000;

#[test]
fn exact_boundary() {
    let r = Rate::new(Duration::from_secs(1), 10, 10, 1);
    assert_eq!(r.period, 100 * MS);
    let mut tat = 0;
    for i in 0..10 {
        let o = r.eval(tat, 0);
        assert!(o.allowed, "request {i}");
        assert_eq!(o.remaining, 9 - i);
        tat = o.tat;
    }
    let o = r.eval(tat, 0);
    assert!(!o.allowed);
    assert_eq!(o.retry_after, 100 * MS);
    assert_eq!(o.tat, tat, "a refusal charges nothing");
    assert!(!r.eval(tat, 99 * MS).allowed);
    assert!(r.eval(tat, 100 * MS).allowed);
}

#[test]
fn period_rounds_up() {
    let r = Rate::new(Duration::from_secs(1), 3, 3, 1000);
    assert_eq!(r.period, 333_334);
    assert_eq!(r.horizon, 1_000_002);
}
