use super::*;

fn yaml(s: &str) -> Option<Value> {
    Some(serde_yaml::from_str(s).unwrap())
}

#[test]
fn services_validate_with_defaults_and_paths() {
    let mut errors = Vec::new();
    let (svcs, names) = validate(
        yaml("ext: { url: 'http://127.0.0.1:9/check', copy_headers: [X-User-Id], cache_ttl: 30s }"),
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names, ["ext"]);
    let ext = &svcs["ext"];
    assert_eq!(ext.timeout, Duration::from_secs(1));
    assert_eq!(ext.copy_headers, [HeaderName::from_static("x-user-id")]);
    assert_eq!(
        ext.forward_headers,
        [http::header::AUTHORIZATION, http::header::COOKIE]
    );
    assert_eq!(ext.cache_ttl, Some(Duration::from_secs(30)));
    assert_eq!(ext.cache_size, 10_000);

    let mut errors = Vec::new();
    let (svcs, names) = validate(
        yaml(
            "a: { url: 'ftp://x/' }\n\
             b: { url: 'http://x/', timeout: 5ms, copy_headers: ['bad header'] }\n\
             c: { url: 'http://x/', cache_ttl: 1s, cache_size: 0, forward_headers: ['a b'] }\n\
             d: { url: 'http://x/', colour: red }\n",
        ),
        &mut errors,
    );
    let errs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for want in [
        "forward_auth.a.url",
        "forward_auth.b.timeout",
        "forward_auth.b.copy_headers[0]",
        "forward_auth.c.cache_size",
        "forward_auth.c.forward_headers[0]",
        "forward_auth.d",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:#?}");
    }
    assert!(svcs.is_empty());
    assert_eq!(names.len(), 4, "every declared name, valid or not");
}

#[test]
fn cached_decisions_need_the_same_full_credential_and_expire() {
    let cache = DecisionCache::new(Duration::from_millis(200), 2);
    let allow = Arc::new(Decision::Allow(vec![]));
    let long_a = [b"route\0\0Bearer ".as_slice(), &[b'a'; 300]].concat();
    // Same length and tail, different head: hashed alike, but never taken for it.
    let mut long_b = long_a.clone();
    long_b[20] = b'b';
    cache.insert(&long_a, allow.clone());
    assert!(cache.get(&long_a).is_some());
    assert!(cache.get(&long_b).is_none());
    assert!(cache.get(b"route\0\0other").is_none());
    // Bounded: a third credential evicts one.
    cache.insert(b"x", allow.clone());
    cache.insert(b"y", allow.clone());
    assert!(cache.map.lock().unwrap().len() <= 2);
    assert!(cache.get(b"y").is_some());
    std::thread::sleep(Duration::from_millis(250));
    assert!(cache.get(b"y").is_none(), "expired");
}

#[test]
fn the_credential_covers_the_route_and_every_forwarded_header() {
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", "Bearer t".parse().unwrap());
    headers.insert("x-other", "ignored".parse().unwrap());
    let id = HeaderValue::from_static("r");
    let req = |route, headers| Request {
        route,
        method: "GET",
        uri: "/",
        host: "h",
        client_ip: None,
        request_id: &id,
        headers,
    };
    let names = [http::header::AUTHORIZATION, http::header::COOKIE];
    let a = credential(&names, &req("r1", &headers));
    assert_eq!(&a[..], b"r1\0\0Bearer t\0");
    assert_ne!(a, credential(&names, &req("r2", &headers)));
    let mut with_cookie = headers.clone();
    with_cookie.insert("cookie", "s=1".parse().unwrap());
    assert_ne!(a, credential(&names, &req("r1", &with_cookie)));
    let mut other = headers.clone();
    other.insert("x-other", "changed".parse().unwrap());
    assert_eq!(a, credential(&names, &req("r1", &other)));
}
