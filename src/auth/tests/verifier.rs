use crate::auth::verifier::*;

#[test]
fn base64url_is_strict() {
    assert_eq!(b64url_decode("aGk").as_deref(), Some(&b"hi"[..]));
    assert_eq!(b64url_decode("aGVsbG8").as_deref(), Some(&b"hello"[..]));
    assert_eq!(b64url_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(b64url_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
    assert!(b64url_decode("aGk=").is_none(), "padding");
    assert!(b64url_decode("a+k").is_none(), "standard alphabet");
    assert!(b64url_decode("aGl").is_none(), "non-zero trailing bits");
    assert!(b64url_decode("aGVsb").is_none(), "impossible length");
}
