use super::*;

#[test]
fn urls() {
    let u = parse_url("HTTPS://idp.example.com/.well-known/jwks.json?a=1#frag").expect("ok");
    assert_eq!(
        (u.scheme(), u.host_str(), u.port_or_known_default()),
        ("https", Some("idp.example.com"), Some(443))
    );
    assert_eq!(u.path(), "/.well-known/jwks.json");
    assert_eq!(
        redacted(&u),
        "https://idp.example.com/.well-known/jwks.json"
    );
    let u = parse_url("http://[::1]:8080").expect("ok");
    assert_eq!(
        (u.host_str(), u.port(), u.path()),
        (Some("[::1]"), Some(8080), "/")
    );
    for bad in [
        "ftp://x/",
        "http://",
        "http://h:0/",
        "http://h:99999/",
        "http://u@h/",
        "http://h/a b",
        "http://[::1/",
        "jwks.json",
    ] {
        assert!(parse_url(bad).is_err(), "{bad}");
    }
}
