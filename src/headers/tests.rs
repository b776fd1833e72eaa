use super::*;

fn hop(fields: &[(&str, &str)]) -> HopByHop {
    let mut h = http::HeaderMap::new();
    for (k, v) in fields {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    hop_by_hop(&h)
}

#[test]
fn hop_by_hop_classification() {
    use HopByHop::*;
    assert_eq!(hop(&[]), Absent);
    assert_eq!(
        hop(&[("host", "a"), ("accept", "*/*"), ("x-b", "c")]),
        Absent
    );
    assert_eq!(
        hop(&[("host", "a"), ("connection", "keep-alive")]),
        PersistenceOnly
    );
    assert_eq!(
        hop(&[("connection", "Keep-Alive , CLOSE,")]),
        PersistenceOnly
    );
    assert_eq!(
        hop(&[("connection", "close"), ("connection", "close")]),
        PersistenceOnly
    );
    assert_eq!(hop(&[("connection", "")]), PersistenceOnly);
    // Nominations of other fields, too many tokens, or fields the policy removes.
    assert_eq!(hop(&[("connection", "close, x-secret")]), Other);
    assert_eq!(hop(&[("connection", "upgrade")]), Other);
    assert_eq!(
        hop(&[("connection", "close,close,close,close,close")]),
        Other
    );
    assert_eq!(hop(&[("connection", "close"), ("close", "x")]), Other);
    for name in [
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "http2-settings",
    ] {
        assert_eq!(hop(&[("host", "a"), (name, "x")]), Other, "{name}");
    }
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn untrusted_peer_is_the_client_whatever_it_claims() {
    let peer: IpAddr = "203.0.113.9".parse().unwrap();
    let t = nets(&["10.0.0.0/8"]);
    assert_eq!(client_ip(peer, Some(b"1.1.1.1"), &t), peer);
    assert_eq!(forwarded_for(peer, Some(b"1.1.1.1"), false), "203.0.113.9");
}

#[test]
fn trusted_peer_gives_rightmost_untrusted_hop() {
    let peer: IpAddr = "10.0.0.2".parse().unwrap();
    let t = nets(&["10.0.0.0/8"]);
    let xff = b"6.6.6.6, 198.51.100.7, 10.0.0.5";
    assert_eq!(
        client_ip(peer, Some(xff), &t),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        forwarded_for(peer, Some(xff), true),
        "6.6.6.6, 198.51.100.7, 10.0.0.5, 10.0.0.2"
    );
    // all hops trusted: the left-most one we saw
    assert_eq!(
        client_ip(peer, Some(b"10.1.1.1"), &t),
        "10.1.1.1".parse::<IpAddr>().unwrap()
    );
    // garbage stops the walk
    assert_eq!(
        client_ip(peer, Some(b"nonsense"), &t),
        "10.0.0.2".parse::<IpAddr>().unwrap()
    );
}

#[test]
fn mapped_v6_is_v4() {
    let peer: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
    assert!(is_trusted(peer, &nets(&["10.0.0.0/8"])));
    assert_eq!(ip_value(peer), "10.0.0.2");
    assert_eq!(forwarded_for(peer, None, false), "10.0.0.2");
}

#[test]
fn longest_addresses_fit() {
    let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
    assert_eq!(ip_value(v6), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    // 45 bytes: the longest text form (an IPv4-embedded IPv6 address).
    let embedded: IpAddr = "0:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .unwrap();
    let text = embedded.to_string();
    assert_eq!(ip_value(embedded), text.as_str());
    for v4 in ["255.255.255.255", "0.0.0.0", "10.0.100.9", "1.22.103.40"] {
        assert_eq!(ip_value(v4.parse().unwrap()), v4);
    }
}

#[test]
fn every_octet_formats_as_display_does() {
    let mut buf = [0u8; 48];
    for o in 0..=255u8 {
        for ip in [
            [o, 0, 9, 255],
            [255, o, 10, 1],
            [1, 99, o, 100],
            [7, 0, 0, o],
        ] {
            let ip = IpAddr::from(ip);
            assert_eq!(ip_text(ip, &mut buf), ip.to_string());
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
    }
}

#[test]
fn request_ids() {
    assert!(sane_request_id(b"abc-123_x.y:z"));
    assert!(!sane_request_id(b""));
    assert!(!sane_request_id(b"a b"));
    assert!(!sane_request_id(b"<script>"));
    assert!(!sane_request_id(&[b'a'; 129]));
    let a = new_request_id();
    let b = new_request_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
    assert!(sane_request_id(a.as_bytes()));
}
