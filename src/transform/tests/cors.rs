use crate::transform::cors::*;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN,
    VARY,
};
use http::{HeaderName, HeaderValue};

fn cors(yaml: &str) -> Cors {
    let raw: RawCors = serde_yaml::from_str(yaml).unwrap();
    build_cors(&raw, "routes[0].cors").unwrap()
}

fn errors(yaml: &str) -> Vec<String> {
    let raw: RawCors = serde_yaml::from_str(yaml).unwrap();
    let errs = build_cors(&raw, "routes[1].cors").unwrap_err();
    errs.iter().map(ToString::to_string).collect()
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

fn pairs(list: &[(HeaderName, HeaderValue)]) -> Vec<(&str, &str)> {
    list.iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect()
}

const SPEC: &str = "{ allow_origins: [https://app.example.com], allow_methods: [GET, POST], allow_headers: [Content-Type, Authorization], expose_headers: [X-Request-Id], allow_credentials: true, max_age: 10m }";

#[test]
fn preflight_allowed_exact_headers() {
    let c = cors(SPEC);
    let p = c.preflight(
        Some(&hv("https://app.example.com")),
        Some(&hv("POST")),
        Some(&hv("authorization, Content-Type")),
    );
    let Preflight::Allowed(h) = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        pairs(&h),
        [
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-methods", "GET, POST"),
            (
                "access-control-allow-headers",
                "authorization, content-type"
            ),
            ("access-control-max-age", "600"),
            ("access-control-allow-credentials", "true"),
            (
                "vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
            ),
        ]
    );
    // No requested headers: no Allow-Headers.
    let Preflight::Allowed(h) =
        c.preflight(Some(&hv("https://app.example.com")), Some(&hv("GET")), None)
    else {
        panic!()
    };
    assert!(!h.iter().any(|(n, _)| n == ACCESS_CONTROL_ALLOW_HEADERS));
}

#[test]
fn preflight_refusals() {
    let c = cors(SPEC);
    let app = hv("https://app.example.com");
    let evil = hv("https://evil.example.com");
    assert_eq!(
        c.preflight(Some(&evil), Some(&hv("GET")), None),
        Preflight::Denied
    );
    assert_eq!(
        c.preflight(Some(&app), Some(&hv("DELETE")), None),
        Preflight::Denied
    );
    assert_eq!(
        c.preflight(Some(&app), Some(&hv("get")), None),
        Preflight::Denied
    );
    assert_eq!(
        c.preflight(
            Some(&app),
            Some(&hv("GET")),
            Some(&hv("content-type, x-secret"))
        ),
        Preflight::Denied
    );
    assert_eq!(
        c.preflight(Some(&app), Some(&hv("GET")), Some(&hv("bad header"))),
        Preflight::Denied
    );
    assert_eq!(
        c.preflight(None, Some(&hv("GET")), None),
        Preflight::NotCors
    );
    assert_eq!(c.preflight(Some(&app), None, None), Preflight::NotCors);
    // A refused origin gets no CORS headers on actual responses, only Vary.
    let h = c.response_headers(Some(&evil)).unwrap();
    assert_eq!(pairs(&h), [("vary", "Origin")]);
    let h = c.response_headers(None).unwrap();
    assert_eq!(pairs(&h), [("vary", "Origin")]);
}

#[test]
fn wildcard_origin_and_headers() {
    let c = cors("{ allow_origins: ['*'], allow_headers: ['*'], expose_headers: ['*'] }");
    let p = c.preflight(
        Some(&hv("https://any.example")),
        Some(&hv("HEAD")),
        Some(&hv("X-Custom,Authorization")),
    );
    let Preflight::Allowed(h) = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        pairs(&h)[..3],
        [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET, HEAD, POST"),
            ("access-control-allow-headers", "x-custom, authorization"),
        ]
    );
    assert!(!h.iter().any(|(n, _)| n == ACCESS_CONTROL_ALLOW_CREDENTIALS));
    let h = c.response_headers(Some(&hv("null"))).unwrap();
    assert_eq!(
        pairs(&h),
        [
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", "*")
        ]
    );
    assert_eq!(c.response_headers(None), None);
}

#[test]
fn simple_request_headers_and_vary() {
    let c = cors(SPEC);
    let h = c
        .response_headers(Some(&hv("https://app.example.com")))
        .unwrap();
    assert_eq!(
        pairs(&h),
        [
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-request-id"),
            ("vary", "Origin"),
        ]
    );
    let mut m = http::HeaderMap::new();
    m.insert(ACCESS_CONTROL_ALLOW_ORIGIN, STAR);
    m.insert(VARY, hv("Accept-Encoding"));
    c.apply_response_headers(Some(&hv("https://evil.example")), &mut m);
    assert!(m.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let vary: Vec<_> = m.get_all(VARY).iter().collect();
    assert_eq!(vary, [&hv("Accept-Encoding"), &hv("Origin")]);
    c.apply_response_headers(Some(&hv("https://app.example.com")), &mut m);
    assert_eq!(m.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().count(), 1);
}

#[test]
fn max_age_and_origin_normalization() {
    let c = cors("{ allow_origins: ['HTTPS://App.Example.com:443', 'http://localhost:3000', 'http://[::1]:8080'], max_age: 90s }");
    assert_eq!(c.max_age, Some(hv("90")));
    assert_eq!(
        c.origins,
        Some(vec![
            "https://app.example.com".to_string(),
            "http://localhost:3000".to_string(),
            "http://[::1]:8080".to_string(),
        ])
    );
    let c = cors("{ allow_origins: [https://a.example], max_age: 1h }");
    assert_eq!(c.max_age, Some(hv("3600")));
    let c = cors("{ allow_origins: [https://a.example] }");
    assert_eq!(c.max_age, None);
    assert_eq!(c.expose, None);
}

#[test]
fn config_errors() {
    assert_eq!(
        errors("{ allow_origins: ['*'], allow_credentials: true }"),
        ["routes[1].cors.allow_origins[0]: \"*\" cannot be combined with allow_credentials: true (browsers reject it); list the origins"]
    );
    let errs = errors(
        "{ allow_origins: ['a.example'], allow_methods: ['*', 'GE T'], allow_headers: ['*'], expose_headers: ['bad name'], allow_credentials: true }",
    );
    let expect = [
        "allow_origins[0]: invalid origin \"a.example\"",
        "allow_methods[0]: \"*\" is not supported here",
        "allow_methods[1]: invalid method \"GE T\"",
        "allow_headers[0]: \"*\" cannot be combined with allow_credentials",
        "expose_headers[0]: invalid header name \"bad name\"",
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (e, x) in errs.iter().zip(expect) {
        assert!(e.starts_with(&format!("routes[1].cors.{x}")), "{e}");
    }
    assert_eq!(
        errors("{ allow_origins: [], allow_methods: [] }"),
        [
            "routes[1].cors.allow_origins: list at least one origin (or \"*\")",
            "routes[1].cors.allow_methods: list at least one method",
        ]
    );
    assert!(errors("{ allow_origins: ['*', 'https://a.example'] }")[0].contains("only entry"));
    assert!(serde_yaml::from_str::<RawCors>("{ allow_origin: ['*'] }").is_err());
}
