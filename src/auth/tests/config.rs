use crate::auth::build_verifiers;
use crate::auth::config::*;
use std::collections::BTreeMap;

fn parse(yaml: &str) -> BTreeMap<String, RawJwt> {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

fn errors(yaml: &str) -> Vec<String> {
    match build_verifiers(&parse(yaml)) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn all_errors_are_collected_with_paths() {
    let errs = errors(
        r#"
a:
  algorithms: [HS256, HS999, none]
  secret: ""
  claims_to_headers: { sub: "X User", role: Host, org: X-Forwarded-For, tier: Origin }
b:
  algorithms: [HS256, RS256]
  secret: s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t
  jwks_url: ftp://idp.example.com/jwks
c:
  algorithms: [RS256]
  public_key_file: tests/keys/does-not-exist.pem
  jwks_refresh: 1m
d:
  algorithms: [ES256]
e:
  algorithms: [RS256]
  secret: abc
f:
  algorithms: [RS256]
  public_key_file: tests/keys/rsa_private.pem
g:
  algorithms: [ES384]
  public_key_file: tests/keys/ec256_public.pem
h:
  algorithms: [RS256]
  jwks_url: http://user@idp/x
  issuer: ""
"#,
    );
    let expected = [
        "jwt.a.algorithms[1]: unknown algorithm \"HS999\" (valid: HS256, HS384, HS512, RS256",
        "jwt.a.algorithms[2]: \"none\" (unsigned tokens) is never accepted",
        "jwt.a.secret: must not be empty",
        "jwt.a.claims_to_headers.org: header \"X-Forwarded-For\" is reserved",
        "jwt.a.claims_to_headers.role: header \"Host\" is reserved",
        "jwt.a.claims_to_headers.sub: invalid header name \"X User\"",
        "jwt.a.claims_to_headers.tier: header \"Origin\" is reserved",
        "jwt.b.algorithms: mixes HMAC (HS256) and public-key (RS256)",
        "jwt.b: exactly one key source is allowed (secret, public_key_file or jwks_url), found: secret, jwks_url",
        "jwt.b.secret: a secret only works with HS256, HS384, HS512; RS256 needs",
        "jwt.b.jwks_url: HS256 needs secret",
        "jwt.c.public_key_file: cannot read \"tests/keys/does-not-exist.pem\"",
        "jwt.c.jwks_refresh: only valid together with jwks_url",
        "jwt.d: a key source is required",
        "jwt.e.secret: a secret only works with HS256, HS384, HS512; RS256 needs public_key_file or jwks_url",
        "jwt.f.public_key_file: \"tests/keys/rsa_private.pem\" holds a private key",
        "jwt.g.public_key_file: \"tests/keys/ec256_public.pem\" is not an uncompressed P-384 public key",
        "jwt.h.jwks_url: must not contain user info",
        "jwt.h.issuer: must not be empty",
    ];
    for want in expected {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    // Key material never leaks into messages.
    assert!(errs
        .iter()
        .all(|e| !e.contains("MII") && !e.contains("s3cr3t")));
}

#[test]
fn valid_configs_build_with_defaults() {
    let v = build_verifiers(&parse(
        r#"
hs: { algorithms: [HS256, HS512], secret: 0123456789abcdef0123456789abcdef,
  claims_to_headers: { sub: X-User-ID, role: x-user-role } }
rs: { algorithms: [RS256, PS256], public_key_file: tests/keys/rsa_public.pem, leeway: 5s }
ec: { algorithms: [ES384], public_key_file: tests/keys/ec384_public.pem, cache_size: 0 }
ed: { algorithms: [EdDSA], public_key_file: tests/keys/ed25519_public.pem }
jw: { algorithms: [RS256, ES256], jwks_url: "https://idp.example.com:8443/jwks?x=1", jwks_refresh: 30s }
"#,
    ))
    .expect("valid config");
    assert_eq!(v.len(), 5);
    assert!(v["jw"].needs_jwks() && !v["hs"].needs_jwks());
    let hs = &v["hs"];
    let headers: Vec<(&str, &str)> = hs
        .claims_to_headers()
        .iter()
        .map(|(c, h)| (c.as_str(), h.as_str()))
        .collect();
    assert_eq!(headers, [("role", "x-user-role"), ("sub", "x-user-id")]);
    assert_eq!(hs.leeway_secs(), 30);
    assert_eq!(v["rs"].leeway_secs(), 5);
}

#[test]
fn unknown_fields_are_rejected_and_debug_redacts() {
    let e = serde_yaml::from_str::<RawJwt>("algorithms: [HS256]\nsecrte: x")
        .expect_err("typo must be rejected")
        .to_string();
    assert!(e.contains("unknown field `secrte`"), "{e}");
    let raw: RawJwt = serde_yaml::from_str("secret: hunter2").expect("parses");
    assert!(!format!("{raw:?}").contains("hunter2"));
}
