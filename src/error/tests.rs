use super::*;

#[test]
fn bodies_are_json() {
    let b = json_body("no_route", "abc\"1");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"], "no_route");
    assert_eq!(v["request_id"], "abc\"1");
}

#[test]
fn statuses() {
    assert_eq!(GatewayError::NoRoute.status(), 404);
    assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
    let e = GatewayError::NoHealthyUpstream { retry_after: 0 };
    assert_eq!(e.status(), 503);
    assert_eq!(e.extra_headers(), vec![("retry-after", "1".to_string())]);
}
