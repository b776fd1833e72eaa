use super::*;

#[test]
fn timestamps() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_795_340_899_123);
    assert_eq!(rfc3339(t), "2026-11-22T09:48:19.123Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert!(rfc3339(leap).starts_with("2000-02-29T"));
}

#[test]
fn cached_timestamps_match_the_full_format() {
    let base = UNIX_EPOCH + Duration::from_millis(1_795_340_899_000);
    for ms in [0u64, 7, 123, 999, 1_000, 1_001, 86_400_000, 86_400_999] {
        let t = base + Duration::from_millis(ms);
        let mut line = String::new();
        push_timestamp(&mut line, t);
        assert_eq!(line, rfc3339(t), "at +{ms} ms");
    }
}

#[test]
fn millis_with_three_decimals() {
    let cases = [
        (0, "0.000"),
        (1, "0.001"),
        (999, "0.999"),
        (12_345, "12.345"),
    ];
    for (us, want) in cases {
        let mut s = String::new();
        push_millis(&mut s, Duration::from_micros(us));
        assert_eq!(s, want);
    }
    let mut s = String::new();
    push_millis(&mut s, Duration::from_secs(3) + Duration::from_nanos(1_999));
    assert_eq!(s, "3000.001");
}
