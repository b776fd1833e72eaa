use crate::config::env::*;
use serde_yaml::Value;

fn env(name: &str) -> Option<String> {
    match name {
        "PORT" => Some("8080".into()),
        "SECRET" => Some("s3cr3t".into()),
        _ => None,
    }
}

#[test]
fn expands_references_and_defaults() {
    assert_eq!(expand_str("a${SECRET}b", &env).unwrap(), "as3cr3tb");
    assert_eq!(expand_str("${NOPE:-x}", &env).unwrap(), "x");
    assert_eq!(expand_str("${NOPE:-}", &env).unwrap(), "");
    assert_eq!(expand_str("cost $$5 $x", &env).unwrap(), "cost $5 $x");
    let e = expand_str("${NOPE}", &env).unwrap_err();
    assert!(e.contains("NOPE is not set"), "{e}");
    assert!(expand_str("${OPEN", &env).is_err());
    assert!(expand_str("${a-b}", &env).is_err());
}

#[test]
fn tree_expansion_keeps_types_and_paths() {
    let mut v: Value =
        serde_yaml::from_str("a: ${PORT}\nb: [x, '${MISSING}']\nc: 'p${PORT}'\n").unwrap();
    let mut errors = vec![];
    expand_tree(&mut v, "", &env, &mut errors);
    assert_eq!(v["a"], Value::Number(8080.into()));
    assert_eq!(v["c"], Value::String("p8080".into()));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "b[1]");
}
