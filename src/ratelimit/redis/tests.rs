use super::reply::{parse_batch, parse_lease, Lease};

#[test]
fn a_batch_reply_splits_per_request() {
    let out = parse_batch(b"1,1,9,100,0;0,1,8,200,0,0,0,5000,700", &[1, 2]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].len(), 1);
    assert!(out[0][0].allowed);
    assert_eq!((out[0][0].remaining, out[0][0].reset), (9, 100));
    assert_eq!(out[1].len(), 2);
    assert!(out[1][0].allowed && !out[1][1].allowed);
    assert_eq!((out[1][1].reset, out[1][1].retry_after), (5000, 700));
}

#[test]
fn a_malformed_batch_reply_is_an_error() {
    // Too few requests, too many, a bucket short, a non-number.
    assert!(parse_batch(b"1,1,9,100,0", &[1, 1]).is_err());
    assert!(parse_batch(b"1,1,9,100,0;1,1,9,100,0", &[1]).is_err());
    assert!(parse_batch(b"1,1,9,100", &[1]).is_err());
    assert!(parse_batch(b"1,1,x,100,0", &[1]).is_err());
    assert!(parse_batch(b"1,1,9,100,0,1", &[1]).is_err());
}

#[test]
fn lease_replies() {
    assert_eq!(
        parse_lease(&[3, 7, 1000, 0]),
        Ok(Lease {
            granted: 3,
            remaining: 7,
            reset_us: 1000,
            retry_after_us: 0
        })
    );
    assert!(parse_lease(&[1, 2]).is_err());
}
