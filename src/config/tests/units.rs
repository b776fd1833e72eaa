use crate::config::units::*;
use std::time::Duration;

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("ms").is_err());
    assert!(parse_duration("99999999999d").is_err());
}

#[test]
fn sizes() {
    assert_eq!(parse_size("10MiB"), Ok(10 << 20));
    assert_eq!(parse_size("1KB"), Ok(1000));
    assert_eq!(parse_size("512"), Ok(512));
    assert!(parse_size("1.5MiB").is_err());
    assert!(parse_size("10XB").is_err());
    assert!(parse_size("99999999999999999999GiB").is_err());
}

#[test]
fn deserialize_from_yaml() {
    let d: Dur = serde_yaml::from_str("30s").unwrap();
    assert_eq!(d.0, Duration::from_secs(30));
    let d: Dur = serde_yaml::from_str("2").unwrap();
    assert_eq!(d.0, Duration::from_secs(2));
    let s: Size = serde_yaml::from_str("1MiB").unwrap();
    assert_eq!(s.0, 1 << 20);
    let e = serde_yaml::from_str::<Dur>("fast").unwrap_err().to_string();
    assert!(e.contains("invalid duration"), "{e}");
}
