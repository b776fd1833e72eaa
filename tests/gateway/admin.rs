use crate::common::*;

#[test]
fn metrics_status_and_readiness_describe_the_traffic() {
    let up = upstreams(2);
    let gw = Gateway::start(&format!(
        "services:\n  users:\n    upstreams:\n{}routes:\n  - {{ name: users-api, match: {{ path_prefix: /users }}, service: users }}\n",
        upstream_list(&up, &[])
    ));
    for _ in 0..5 {
        assert_eq!(gw.get("/users/1").status, 200);
    }
    assert_eq!(gw.get("/nope").status, 404);

    let m = gw.metrics();
    let v = |name: &str, labels: &str| metric_value(&m, name, labels);
    assert_eq!(
        v(
            "gatehouse_requests_total",
            "method=\"GET\",route=\"users-api\",service=\"users\",status=\"200\""
        ),
        Some(5.0)
    );
    assert_eq!(
        v(
            "gatehouse_requests_total",
            "route=\"none\",service=\"none\",status=\"404\""
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            "gatehouse_request_duration_seconds_count",
            "route=\"users-api\",service=\"users\""
        ),
        Some(5.0)
    );
    let ok_a = v(
        "gatehouse_upstream_requests_total",
        &format!(
            "outcome=\"ok\",service=\"users\",upstream=\"{}\"",
            up[0].addr()
        ),
    )
    .unwrap_or(0.0);
    let ok_b = v(
        "gatehouse_upstream_requests_total",
        &format!(
            "outcome=\"ok\",service=\"users\",upstream=\"{}\"",
            up[1].addr()
        ),
    )
    .unwrap_or(0.0);
    assert_eq!(ok_a + ok_b, 5.0);
    assert_eq!(
        v(
            "gatehouse_upstream_healthy",
            &format!("upstream=\"{}\"", up[0].addr())
        ),
        Some(1.0)
    );
    assert_eq!(
        v("gatehouse_inflight_requests", "service=\"users\""),
        Some(0.0)
    );
    // labels never carry raw paths
    assert!(!m.contains("/users/1"), "raw path leaked into metrics");

    let st = gw.status();
    assert_eq!(st["routes"][0]["name"], "users-api");
    assert_eq!(st["services"][0]["name"], "users");
    assert_eq!(
        st["services"][0]["upstreams"].as_array().map(Vec::len),
        Some(2)
    );

    let ready = gw.admin_get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(gw.admin_get("/healthz").status, 200);
    assert_eq!(gw.admin_get("/nothing").status, 404);
}

#[test]
fn access_log_has_one_json_line_per_request_without_query() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let r = gw.get("/path?access_token=SECRET123");
    let id = r.header("x-request-id").unwrap().to_string();
    assert!(wait_until(std::time::Duration::from_secs(5), || gw
        .log()
        .contains(&id)));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("access line is JSON");
    assert_eq!(v["path"], "/path");
    assert_eq!(v["status"], 200);
    assert_eq!(v["route"], "r");
    assert!(!log.contains("SECRET123"), "query strings are never logged");
}

#[test]
fn buffered_access_lines_are_written_when_the_gateway_exits() {
    // Lines wait up to 100 ms in the buffer; a request answered just before a fast
    // shutdown (SIGINT) must still have its line written, by the exit hook.
    let up = upstreams(1);
    let mut gw = Gateway::start(&one_route(&up[0]));
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let r = gw.get(&format!("/last/{i}"));
            assert_eq!(r.status, 200);
            r.header("x-request-id").unwrap().to_string()
        })
        .collect();
    gw.signal("-INT");
    gw.wait_exit(std::time::Duration::from_secs(10))
        .expect("exits on SIGINT");
    let log = gw.log();
    for id in &ids {
        let line = log
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no access line for {id} in:\n{log}"));
        let v: serde_json::Value = serde_json::from_str(line).expect("a whole JSON line");
        assert_eq!(v["status"], 200);
    }
}

#[test]
fn an_admin_token_guards_the_admin_api_but_not_health() {
    let up = upstreams(1);
    let gw = Gateway::start(&one_route(&up[0]));
    let post = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        request(gw.admin, "POST", "/admin/reload", &headers, b"").expect("POST")
    };
    // No token, loopback admin listener: open, as before.
    assert_eq!(post(None).status, 200);
    assert_eq!(gw.admin_get("/metrics").status, 200);

    let token = "s3cr3t-admin-token-0123456789abcdef";
    let file = gw.dir.join("admin.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let with_token = text.replacen(
        "admin:\n  address:",
        &format!("admin:\n  token_file: {}\n  address:", file.display()),
        1,
    );
    assert_ne!(text, with_token);
    write_atomically(&gw.config, &with_token);
    gw.signal("-HUP");
    assert!(wait_until(std::time::Duration::from_secs(5), || {
        gw.admin_get("/metrics").status == 401
    }));
    let bearer = format!("Bearer {token}");
    let get = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        request(gw.admin, "GET", path, &headers, b"").expect("GET")
    };
    assert_eq!(get("/healthz", None).status, 200);
    assert_eq!(get("/readyz", None).status, 200);
    for path in ["/metrics", "/admin/status"] {
        let r = get(path, None);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"gatehouse-admin\"")
        );
        assert_eq!(
            get(path, Some("Bearer wrong-token-0123456789abcdef")).status,
            401
        );
        assert_eq!(get(path, Some(&bearer)).status, 200, "{path}");
    }
    assert_eq!(post(None).status, 401);
    assert_eq!(post(Some(&bearer)).status, 200);
    // The proxy itself is unaffected, and the token is never logged.
    assert_eq!(gw.get("/x").status, 200);
    assert!(!gw.log().contains(token));
}
