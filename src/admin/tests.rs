use super::*;
use pingora::http::RequestHeader;

fn req(method: &str, path: &str, auth: Option<&str>) -> RequestHeader {
    let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    if let Some(a) = auth {
        r.insert_header("authorization", a).unwrap();
    }
    r
}

#[test]
fn a_token_guards_everything_but_health_and_readiness() {
    let token = AdminToken(b"0123456789abcdef-token".to_vec());
    let t = Some(&token);
    for path in ["/healthz", "/readyz"] {
        assert!(
            access(&req("GET", path, None), t, false).is_none(),
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/admin/status"),
        ("POST", "/admin/reload"),
    ] {
        let denied = access(&req(method, path, None), t, true).expect("refused");
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert!(denied
            .headers()
            .contains_key(http::header::WWW_AUTHENTICATE));
        let wrong = access(
            &req(method, path, Some("Bearer 0123456789abcdef-tokeN")),
            t,
            true,
        );
        assert_eq!(wrong.expect("refused").status(), StatusCode::UNAUTHORIZED);
        let basic = access(
            &req(method, path, Some("Basic 0123456789abcdef-token")),
            t,
            true,
        );
        assert_eq!(basic.expect("refused").status(), StatusCode::UNAUTHORIZED);
        assert!(
            access(
                &req(method, path, Some("Bearer 0123456789abcdef-token")),
                t,
                false
            )
            .is_none(),
            "{method} {path}"
        );
    }
}

#[test]
fn without_a_token_posts_need_a_loopback_listener() {
    assert!(access(&req("POST", "/admin/reload", None), None, true).is_none());
    let refused = access(&req("POST", "/admin/reload", None), None, false).expect("refused");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(access(&req("GET", "/metrics", None), None, false).is_none());
}
