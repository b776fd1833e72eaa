use crate::transform::ip::*;
use std::net::IpAddr;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn rules(allow: Option<&[&str]>, deny: Option<&[&str]>) -> IpRules {
    let allow = allow.map(strings);
    let deny = deny.map(strings);
    build_ip_rules(allow.as_deref(), deny.as_deref(), "routes[0]")
        .unwrap()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn allow_and_deny_v4_v6() {
    let r = rules(
        Some(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]),
        Some(&["10.6.6.0/24", "2001:db8:bad::/48"]),
    );
    assert!(r.allows(ip("10.1.2.3")));
    assert!(r.allows(ip("192.0.2.7")));
    assert!(!r.allows(ip("192.0.2.8")));
    assert!(!r.allows(ip("11.0.0.1")));
    assert!(!r.allows(ip("10.6.6.200")), "deny wins over allow");
    assert!(r.allows(ip("10.6.7.1")));
    assert!(r.allows(ip("2001:db8:1::1")));
    assert!(!r.allows(ip("2001:db8:bad::1")));
    assert!(!r.allows(ip("2001:db9::1")));
}

#[test]
fn deny_only_and_none() {
    let r = rules(None, Some(&["203.0.113.0/24", "::1"]));
    assert!(!r.allows(ip("203.0.113.9")));
    assert!(!r.allows(ip("::1")));
    assert!(r.allows(ip("198.51.100.1")));
    assert!(build_ip_rules(None, None, "routes[0]").unwrap().is_none());
    assert!(build_ip_rules(None, Some(&[]), "routes[0]")
        .unwrap()
        .is_none());
}

#[test]
fn mapped_addresses_are_ipv4() {
    let r = rules(
        Some(&["10.0.0.0/8", "::ffff:192.0.2.0/120"]),
        Some(&["10.6.6.6"]),
    );
    assert!(r.allows(ip("::ffff:10.0.0.1")));
    assert!(!r.allows(ip("::ffff:10.6.6.6")));
    assert!(!r.allows(ip("::ffff:11.0.0.1")));
    assert!(r.allows(ip("192.0.2.55")));
    assert!(r.allows(ip("::ffff:192.0.2.55")));
    assert!(!r.allows(ip("192.0.3.1")));
}

#[test]
fn edge_prefixes_and_many_entries() {
    let r = rules(Some(&["0.0.0.0/0"]), Some(&["::/0"]));
    assert!(r.allows(ip("1.2.3.4")));
    assert!(!r.allows(ip("2001:db8::1")));
    let many: Vec<String> = (0..=255u32)
        .flat_map(|a| [format!("10.{a}.0.0/16"), format!("2001:db8:{a:x}::/48")])
        .collect();
    let r = build_ip_rules(Some(&many), None, "routes[0]")
        .unwrap()
        .unwrap();
    assert!(r.allows(ip("10.200.1.1")));
    assert!(r.allows(ip("2001:db8:ff::1")));
    assert!(!r.allows(ip("2001:db8:100::1")));
    assert!(!r.allows(ip("11.0.0.1")));
}

#[test]
fn errors_with_paths() {
    let allow = strings(&["10.0.0.0/8", "10.0.0.0/33", "nonsense", "10.1.2.3/8"]);
    let deny = strings(&["fe80::1%eth0", "2001:db8::/129"]);
    let errs: Vec<String> = build_ip_rules(Some(&allow), Some(&deny), "routes[3]")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        [
            r#"routes[3].allow_ips[1]: invalid IP address or CIDR "10.0.0.0/33" (expected e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"#,
            r#"routes[3].allow_ips[2]: invalid IP address or CIDR "nonsense" (expected e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"#,
            r#"routes[3].allow_ips[3]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?"#,
            r#"routes[3].deny_ips[0]: invalid IP address or CIDR "fe80::1%eth0" (expected e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"#,
            r#"routes[3].deny_ips[1]: invalid IP address or CIDR "2001:db8::/129" (expected e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"#,
        ]
    );
    let errs = build_ip_rules(Some(&[]), None, "routes[0]").unwrap_err();
    assert_eq!(errs[0].path, "routes[0].allow_ips");
}
