use crate::common::*;

fn check(yaml: &str) -> (bool, String, String) {
    let dir = scratch_dir("cfg");
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = run_cli(&["-c", path.to_str().unwrap(), "-t"], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BASE: &str = "listen: [{ address: 127.0.0.1:18080 }]\nservices:\n  users: { upstreams: [{ address: 127.0.0.1:9001 }] }\nroutes:\n  - { name: r, match: { path_prefix: /api }, service: users }\n";

#[test]
fn valid_config_prints_config_ok() {
    let (ok, out, err) = check(BASE);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "config OK");
}

#[test]
fn every_shipped_config_validates() {
    let dir = repo_path("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let out = run_cli(
                &["-c", path.to_str().unwrap(), "-t"],
                &[("GATEHOUSE_JWT_SECRET", "test-secret")],
            );
            assert!(
                out.status.success(),
                "{} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 2, "conf/ has the example and the demo config");
}

#[test]
fn bad_configs_name_the_path_of_each_error() {
    let cases: &[(&str, &str)] = &[
        (
            "listen: [{ address: 127.0.0.1:18080 }]\nservices:\n  users: { upstreams: [{ address: 127.0.0.1:9001 }] }\nroutes:\n  - { name: r, match: { path_prefix: /a }, service: users }\n  - { name: s, match: { path_prefix: /b }, service: user }\n",
            "routes[1].service: unknown service \"user\"",
        ),
        (&BASE.replace("listen: [{ address: 127.0.0.1:18080 }]", "listen: []"), "listen: at least one listener"),
        (&BASE.replace("/api", "api"), "routes[0].match.path_prefix: must be a path"),
        (&BASE.replace("9001 }", "9001, weight: 0 }"), "services.users.upstreams[0].weight"),
        (&BASE.replace("127.0.0.1:9001", "not-an-address"), "services.users.upstreams[0].address"),
        (&format!("{BASE}extra_key: 1\n"), "extra_key: unknown key"),
        (&BASE.replace("{ upstreams:", "{ balance: magic, upstreams:"), "services.users.balance: unknown balance \"magic\" (valid:"),
        (&BASE.replace("{ upstreams:", "{ timeouts: { read: soon }, upstreams:"), "services.users.timeouts.read: invalid duration"),
        (&BASE.replace("{ upstreams:", "{ health_check: { type: udp }, upstreams:"), "services.users.health_check.type: unknown health check type"),
        (&BASE.replace("{ name: r,", "{ name: r, colour: red,"), "routes[0].colour: unknown field `colour`"),
        (&format!("{BASE}server: {{ trusted_proxies: [10.0.0.0/33] }}\n"), "server.trusted_proxies[0]: invalid CIDR"),
        (&BASE.replace("127.0.0.1:9001", "\"${GATEHOUSE_TEST_UNSET_VAR}\""), "services.users.upstreams[0].address: environment variable GATEHOUSE_TEST_UNSET_VAR is not set"),
    ];
    for (yaml, expected) in cases {
        let (ok, _, err) = check(yaml);
        assert!(!ok, "config should fail: {yaml}");
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    // several errors at once are all reported
    let yaml = BASE
        .replace("/api", "api")
        .replace("9001 }", "9001, weight: 0 }");
    let (_, _, err) = check(&yaml);
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let out = run_cli(&["-c", "/nonexistent/gatehouse.yaml", "-t"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}
