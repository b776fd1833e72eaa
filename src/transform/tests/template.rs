use crate::transform::template::*;

fn tpl(src: &str) -> Template {
    match parse(src, true) {
        Ok(Parsed::Template(t)) => t,
        other => panic!("{src:?} is not a template: {other:?}"),
    }
}

#[test]
fn literals_and_escapes() {
    assert_eq!(parse("prod", true), Ok(Parsed::Literal("prod".into())));
    assert_eq!(
        parse("{{x}} }}{{", false),
        Ok(Parsed::Literal("{x} }{".into()))
    );
    assert_eq!(parse("", true), Ok(Parsed::Literal(String::new())));
}

#[test]
fn segments() {
    let t = tpl("a{request_id}b{jwt.org.id}{{c");
    assert_eq!(
        t.segments,
        vec![
            Segment::Literal("a".into()),
            Segment::Var(Var::RequestId),
            Segment::Literal("b".into()),
            Segment::Var(Var::Claim("org.id".into())),
            Segment::Literal("{c".into()),
        ]
    );
    assert_eq!(t.literal_len, 4);
}

#[test]
fn syntax_errors() {
    let err = |s: &str| parse(s, true).unwrap_err();
    assert_eq!(
        err("{jwt}"),
        "unknown variable {jwt} (valid: request_id, client_ip, host, method, path, jwt.<claim>)"
    );
    assert!(err("{jwt.}").starts_with("unknown variable {jwt.}"));
    assert!(err("{}").starts_with("unknown variable {}"));
    assert!(err("{ host }").starts_with("unknown variable { host }"));
    assert!(err("{host").starts_with("unclosed `{`"));
    assert!(err("{ho{st}").starts_with("unclosed `{`"));
    assert!(err("a}b").starts_with("unmatched `}`"));
    assert!(err("a\r\nX-Evil: 1").contains("control character 0x0d"));
    assert!(err("{host}\n").contains("control character 0x0a"));
    let e = parse("{request_id}", false).unwrap_err();
    assert!(
        e.starts_with("variable {request_id} is not available here"),
        "{e}"
    );
}
