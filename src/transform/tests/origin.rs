use crate::transform::origin::normalize_origin as norm;

#[test]
fn normalized_like_browsers_send_them() {
    assert_eq!(
        norm("HTTPS://App.Example.com:443").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(norm("http://localhost:80").unwrap(), "http://localhost");
    assert_eq!(
        norm("http://localhost:3000").unwrap(),
        "http://localhost:3000"
    );
    assert_eq!(norm("http://[::1]:8080").unwrap(), "http://[::1]:8080");
    assert_eq!(
        norm("chrome-extension://abc").unwrap(),
        "chrome-extension://abc"
    );
}

#[test]
fn mistakes_refused() {
    let cases = [
        (
            "https://a.example/",
            "must not end with `/` (browsers send https://a.example)",
        ),
        ("a.example", "invalid origin"),
        ("https://*.a.example", "wildcards are not supported"),
        ("null", "the \"null\" origin"),
        ("https://a.example/x", "must not contain a path"),
        ("https://user@a.example", "user info"),
        ("https://a.example:99999", "invalid port"),
        ("https://a.example:+80", "invalid port"),
        ("https://a.example:", "invalid port"),
        ("ftp://:21", "invalid host"),
        ("https://bücher.example", "xn--"),
        ("https://[::g]", "invalid IPv6 host"),
        ("1http://a", "invalid scheme"),
    ];
    for (input, want) in cases {
        let e = norm(input).unwrap_err();
        assert!(e.contains(want), "{input}: {e}");
    }
}
