//! Verification matrix over every supported algorithm with the committed test keys
//! (`tests/keys/`), plus cache, header-parsing and claims tests. Helpers here are shared
//! with the JWKS tests.

use super::*;
use crate::config::units::Dur;
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const ISS: &str = "https://idp.example.com";
const SECRET: &str = "test-only-hmac-secret-0123456789abcdef";

pub(crate) fn key_file(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("test key {path}: {e}"))
}

/// (config name, algorithm, key file stem; `None` for HMAC).
pub(crate) const ALGS: [(&str, Algorithm, Option<&str>); 10] = [
    ("HS256", Algorithm::HS256, None),
    ("HS384", Algorithm::HS384, None),
    ("HS512", Algorithm::HS512, None),
    ("RS256", Algorithm::RS256, Some("rsa")),
    ("RS384", Algorithm::RS384, Some("rsa")),
    ("RS512", Algorithm::RS512, Some("rsa")),
    ("PS256", Algorithm::PS256, Some("rsa")),
    ("ES256", Algorithm::ES256, Some("ec256")),
    ("ES384", Algorithm::ES384, Some("ec384")),
    ("EdDSA", Algorithm::EdDSA, Some("ed25519")),
];

pub(crate) fn encoding_key(alg: Algorithm, stem: Option<&str>) -> EncodingKey {
    let private = || key_file(&format!("{}_private.pem", stem.unwrap_or("rsa")));
    let key = match alg.family() {
        AlgorithmFamily::Hmac => Ok(EncodingKey::from_secret(SECRET.as_bytes())),
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&private()),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&private()),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&private()),
    };
    key.expect("test private key parses")
}

pub(crate) fn mint(
    alg: Algorithm,
    stem: Option<&str>,
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, stem)).expect("signing works")
}

/// Hand-built token: any header and payload bytes, HMAC-signed with `secret`.
fn hand_built(header: &str, payload: &[u8], alg: Algorithm, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), alg)
            .expect("hmac signing works");
    format!("{message}.{sig}")
}

pub(crate) fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub(crate) fn good_claims(exp: u64) -> serde_json::Value {
    json!({"sub": "user-1", "iss": ISS, "aud": "api", "exp": exp, "nbf": NOW - 10,
           "role": ["reader", "admin"], "tier": 3})
}

fn verifier_with(names: &[&str], stem: Option<&str>, cache_size: Option<usize>) -> Arc<Verifier> {
    let raw = RawJwt {
        algorithms: names.iter().map(|s| s.to_string()).collect(),
        secret: stem.is_none().then(|| SECRET.to_string()),
        public_key_file: stem.map(|s| format!("tests/keys/{s}_public.pem")),
        issuer: Some(ISS.into()),
        audience: Some("api".into()),
        leeway: Some(Dur(std::time::Duration::from_secs(30))),
        cache_size,
        ..RawJwt::default()
    };
    let mut map = BTreeMap::new();
    map.insert("t".to_string(), raw);
    build_verifiers(&map)
        .expect("test config is valid")
        .remove("t")
        .expect("built")
}

/// Replace segment `i` of a token.
fn with_segment(token: &str, i: usize, value: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[i] = value;
    parts.join(".")
}

#[test]
fn every_algorithm_accepts_valid_and_rejects_invalid_tokens() {
    for (name, alg, stem) in ALGS {
        let v = verifier_with(&[name], stem, None);
        let check =
            |claims: serde_json::Value, now: u64| v.verify(&mint(alg, stem, None, &claims), now);
        let ctx = |what: &str| format!("{name}: {what}");

        let good = mint(
            alg,
            stem,
            Some("any-kid-is-ignored"),
            &good_claims(NOW + 600),
        );
        let c = v
            .verify(&good, NOW)
            .unwrap_or_else(|e| panic!("{}: {e}", ctx("valid")));
        assert_eq!(c.get_str("sub").as_deref(), Some("user-1"), "{name}");

        // exp/nbf with 30 s leeway, both edges.
        let mut t = good_claims(NOW + 600);
        t["exp"] = json!(NOW - 3600);
        assert_eq!(
            check(t.clone(), NOW),
            Err(AuthError::Expired),
            "{}",
            ctx("expired")
        );
        t["exp"] = json!(NOW - 30 + 1);
        assert!(
            check(t.clone(), NOW).is_ok(),
            "{}",
            ctx("exp = now - leeway + 1")
        );
        t["exp"] = json!(NOW - 30 - 1);
        assert_eq!(
            check(t.clone(), NOW),
            Err(AuthError::Expired),
            "{}",
            ctx("exp = now - leeway - 1")
        );
        t["exp"] = json!(NOW - 30);
        assert_eq!(
            check(t.clone(), NOW),
            Err(AuthError::Expired),
            "{}",
            ctx("exp = now - leeway")
        );
        let mut t = good_claims(NOW + 600);
        t["nbf"] = json!(NOW + 3600);
        assert_eq!(
            check(t.clone(), NOW),
            Err(AuthError::NotYetValid),
            "{}",
            ctx("nbf")
        );
        t["nbf"] = json!(NOW + 30);
        assert!(
            check(t.clone(), NOW).is_ok(),
            "{}",
            ctx("nbf = now + leeway")
        );
        t["nbf"] = json!(NOW + 31);
        assert_eq!(
            check(t, NOW),
            Err(AuthError::NotYetValid),
            "{}",
            ctx("nbf = now + leeway + 1")
        );

        // iss / aud.
        let mut t = good_claims(NOW + 600);
        t["iss"] = json!("https://evil.example.com");
        assert_eq!(check(t, NOW), Err(AuthError::BadIssuer), "{}", ctx("iss"));
        let mut t = good_claims(NOW + 600);
        t.as_object_mut().expect("object").remove("iss");
        assert_eq!(
            check(t, NOW),
            Err(AuthError::BadIssuer),
            "{}",
            ctx("no iss")
        );
        let mut t = good_claims(NOW + 600);
        t["aud"] = json!("other");
        assert_eq!(
            check(t.clone(), NOW),
            Err(AuthError::BadAudience),
            "{}",
            ctx("aud")
        );
        t["aud"] = json!(["other", "api"]);
        assert!(check(t.clone(), NOW).is_ok(), "{}", ctx("aud array"));
        t["aud"] = json!(["other"]);
        assert_eq!(
            check(t, NOW),
            Err(AuthError::BadAudience),
            "{}",
            ctx("aud array without api")
        );

        // Tampering: payload swapped for an admin one, or one signature character changed.
        let forged = b64(json!({"sub": "admin", "iss": ISS, "aud": "api"})
            .to_string()
            .as_bytes());
        let t = with_segment(&good, 1, &forged);
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthError::BadSignature),
            "{}",
            ctx("payload")
        );
        let sig = good.rsplit('.').next().expect("3 segments");
        let flipped = format!(
            "{}{}",
            if sig.starts_with('A') { "B" } else { "A" },
            &sig[1..]
        );
        let t = with_segment(&good, 2, &flipped);
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthError::BadSignature),
            "{}",
            ctx("signature")
        );

        // alg: none (any spelling) and algorithms outside the list.
        for none in ["none", "None", "NONE"] {
            let header = b64(format!(r#"{{"alg":"{none}","typ":"JWT"}}"#).as_bytes());
            let t = format!("{header}.{}.", good.split('.').nth(1).expect("payload"));
            assert_eq!(
                v.verify(&t, NOW),
                Err(AuthError::AlgorithmNotAllowed),
                "{}",
                ctx(none)
            );
        }
        let (other, other_stem) = match alg {
            Algorithm::HS256 => (Algorithm::HS512, None),
            Algorithm::RS256 => (Algorithm::RS512, Some("rsa")),
            Algorithm::ES256 => (Algorithm::ES384, Some("ec384")),
            _ => (Algorithm::HS256, None),
        };
        let t = mint(other, other_stem, None, &good_claims(NOW + 600));
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthError::AlgorithmNotAllowed),
            "{}",
            ctx("other alg")
        );

        // Algorithm confusion: HS256 "signed" with the verifier's own public key PEM.
        if let Some(stem) = stem {
            let public_pem = key_file(&format!("{stem}_public.pem"));
            let header = json!({"alg": "HS256", "typ": "JWT"}).to_string();
            let payload = good_claims(NOW + 600).to_string();
            let t = hand_built(&header, payload.as_bytes(), Algorithm::HS256, &public_pem);
            assert_eq!(
                v.verify(&t, NOW),
                Err(AuthError::AlgorithmNotAllowed),
                "{}",
                ctx("confusion")
            );
        }
    }
}

#[test]
fn rsa_verifier_with_several_algorithms_still_refuses_hmac() {
    let v = verifier_with(&["RS256", "RS512", "PS256"], Some("rsa"), Some(0));
    let good = good_claims(NOW + 600);
    for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
        assert!(
            v.verify(&mint(alg, Some("rsa"), None, &good), NOW).is_ok(),
            "{alg:?}"
        );
    }
    let pem = key_file("rsa_public.pem");
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let header = format!(r#"{{"alg":"{alg:?}"}}"#);
        let t = hand_built(&header, good.to_string().as_bytes(), alg, &pem);
        assert_eq!(v.verify(&t, NOW), Err(AuthError::AlgorithmNotAllowed));
    }
    // A token signed by a different RSA key fails on the signature.
    let other = mint(Algorithm::RS256, Some("rsa2"), None, &good);
    assert_eq!(v.verify(&other, NOW), Err(AuthError::BadSignature));
}

#[test]
fn malformed_tokens() {
    let v = verifier_with(&["HS256"], None, None);
    let s = SECRET.as_bytes();
    let hs = Algorithm::HS256;
    let hdr = r#"{"alg":"HS256","typ":"JWT"}"#;
    let good = mint(hs, None, None, &good_claims(NOW + 600));
    let payload = good_claims(NOW + 600).to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "two segments",
            good.rsplit_once('.').expect("3 segments").0.to_string(),
        ),
        ("four segments", format!("{good}.x")),
        ("empty header", with_segment(&good, 0, "")),
        ("empty signature", with_segment(&good, 2, "")),
        ("bad base64 header", with_segment(&good, 0, "eyJ!!!")),
        (
            "padded segment",
            with_segment(&good, 0, &format!("{}=", b64(hdr.as_bytes()))),
        ),
        (
            "header not JSON",
            hand_built("not json", payload.as_bytes(), hs, s),
        ),
        (
            "header not object",
            hand_built("[1,2]", payload.as_bytes(), hs, s),
        ),
        (
            "crit header",
            hand_built(
                r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
                payload.as_bytes(),
                hs,
                s,
            ),
        ),
        ("payload not JSON", hand_built(hdr, b"{not json", hs, s)),
        ("payload not object", hand_built(hdr, b"[\"sub\"]", hs, s)),
        (
            "exp not a number",
            hand_built(hdr, br#"{"exp":"tomorrow","iss":"x"}"#, hs, s),
        ),
        ("bad base64 signature", with_segment(&good, 2, "abc$")),
        ("40 KB", format!("{good}{}", "A".repeat(40 * 1024))),
    ];
    for (what, token) in cases {
        assert_eq!(v.verify(&token, NOW), Err(AuthError::Malformed), "{what}");
    }
    assert_eq!(v.verify("", NOW), Err(AuthError::Missing));
    assert_eq!(v.verify("....", NOW), Err(AuthError::Malformed));
    assert_eq!(v.cache_len(), 0, "failures are never cached");
}

#[test]
fn cache_hits_only_identical_unexpired_tokens_and_stays_bounded() {
    for (alg, stem) in [
        (Algorithm::RS256, Some("rsa")),
        (Algorithm::ES256, Some("ec256")),
    ] {
        let name = format!("{alg:?}");
        let v = verifier_with(&[&name], stem, Some(5));
        let token = mint(alg, stem, None, &good_claims(NOW + 100));
        assert!(v.verify(&token, NOW).is_ok());
        assert_eq!((v.cache_len(), v.cache_hits()), (1, 0));
        let again = v.verify(&token, NOW + 1).expect("cached");
        assert_eq!(again.get_str("sub").as_deref(), Some("user-1"));
        assert_eq!(v.cache_hits(), 1, "second verify is a cache hit");

        // Same signature (the hashed tail), forged payload: a miss, then a failure.
        let forged = b64(json!({"sub": "admin", "iss": ISS, "aud": "api"})
            .to_string()
            .as_bytes());
        assert_eq!(
            v.verify(&with_segment(&token, 1, &forged), NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(v.cache_hits(), 1);

        // At exp the entry is dropped; within the leeway the token re-verifies (uncached,
        // since exp has passed), after the leeway it is expired.
        assert!(v.verify(&token, NOW + 100).is_ok());
        assert_eq!((v.cache_hits(), v.cache_len()), (1, 0));
        assert_eq!(v.verify(&token, NOW + 130), Err(AuthError::Expired));

        for i in 0..40 {
            let mut c = good_claims(NOW + 600);
            c["n"] = json!(i);
            assert!(v.verify(&mint(alg, stem, None, &c), NOW).is_ok());
            assert!(v.cache_len() <= 5, "{name}: {} entries", v.cache_len());
        }
    }
    let off = verifier_with(&["HS256"], None, Some(0));
    let token = mint(Algorithm::HS256, None, None, &good_claims(NOW + 600));
    assert!(off.verify(&token, NOW).is_ok() && off.verify(&token, NOW).is_ok());
    assert_eq!((off.cache_len(), off.cache_hits()), (0, 0));
}

#[test]
fn tokens_without_exp_are_accepted_and_cached_briefly() {
    let v = verifier_with(&["HS256"], None, None);
    let token = mint(
        Algorithm::HS256,
        None,
        None,
        &json!({"sub": "svc", "iss": ISS, "aud": "api"}),
    );
    assert!(v.verify(&token, NOW).is_ok());
    assert!(v.verify(&token, NOW + 299).is_ok());
    assert_eq!(v.cache_hits(), 1);
    assert!(v.verify(&token, NOW + 300).is_ok());
    assert_eq!(v.cache_hits(), 1, "cache TTL for exp-less tokens is capped");
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(
        bearer_token(b"  bEaReR \t abc.def.ghi  "),
        Ok("abc.def.ghi")
    );
    assert_eq!(bearer_token(b""), Err(AuthError::Missing));
    assert_eq!(bearer_token(b"   "), Err(AuthError::Missing));
    assert_eq!(bearer_token(b"Bearer"), Err(AuthError::Missing));
    assert_eq!(bearer_token(b"Bearer   "), Err(AuthError::Missing));
    assert_eq!(
        bearer_token(b"Basic dXNlcjpwYXNz"),
        Err(AuthError::Malformed)
    );
    assert_eq!(bearer_token(b"Bearerabc"), Err(AuthError::Malformed));
    assert_eq!(bearer_token(b"Bearer a b"), Err(AuthError::Malformed));
    assert_eq!(bearer_token(b"Bearer \xff\xfe"), Err(AuthError::Malformed));
}

#[test]
fn claims_accessors() {
    let c = Claims::from_map(
        json!({"sub": "u", "n": 42, "f": 1.5, "b": true, "null": null,
               "roles": ["a", 7, "admin"], "obj": {"k": "v"}})
        .as_object()
        .expect("object")
        .clone(),
    );
    assert_eq!(c.get_str("sub").as_deref(), Some("u"));
    assert_eq!(c.get_str("n").as_deref(), Some("42"));
    assert_eq!(c.get_str("f").as_deref(), Some("1.5"));
    assert_eq!(c.get_str("b").as_deref(), Some("true"));
    for none in ["null", "roles", "obj", "missing"] {
        assert_eq!(c.get_str(none), None, "{none}");
    }
    let allowed = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(c.matches("sub", &allowed(&["x", "u"])));
    assert!(c.matches("roles", &allowed(&["admin"])));
    assert!(
        !c.matches("roles", &allowed(&["7"])),
        "non-string elements never match"
    );
    assert!(!c.matches("n", &allowed(&["42"])));
    assert!(!c.matches("missing", &allowed(&["u"])));
    assert_eq!(c.get("obj"), Some(&json!({"k": "v"})));
}

#[test]
fn error_reasons_and_statuses() {
    use AuthError::*;
    let all = [
        Missing,
        Malformed,
        BadSignature,
        Expired,
        NotYetValid,
        BadIssuer,
        BadAudience,
        AlgorithmNotAllowed,
        UnknownKid,
        KeysUnavailable,
    ];
    let reasons: Vec<&str> = all.iter().map(AuthError::reason).collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "malformed_token",
            "bad_signature",
            "token_expired",
            "token_not_yet_valid",
            "bad_issuer",
            "bad_audience",
            "algorithm_not_allowed",
            "unknown_kid",
            "keys_unavailable"
        ]
    );
    for e in all {
        assert_eq!(e.status(), if e == KeysUnavailable { 503 } else { 401 });
        assert_eq!(e.to_string(), e.reason());
    }
}

#[test]
fn minted_tokens_verify() {
    let extra = vec![("role".to_string(), "admin".to_string())];
    let token = mint_hs256(
        SECRET.as_bytes(),
        "cli-user",
        &extra,
        std::time::Duration::from_secs(60),
    )
    .expect("mints");
    let raw = RawJwt {
        algorithms: vec!["HS256".into()],
        secret: Some(SECRET.into()),
        ..RawJwt::default()
    };
    let v = build_verifiers(&BTreeMap::from([("m".to_string(), raw)])).expect("valid");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let c = v["m"].verify(&token, now).expect("fresh token verifies");
    assert_eq!(c.get_str("sub").as_deref(), Some("cli-user"));
    assert!(c.matches("role", &["admin".to_string()]));
    assert_eq!(v["m"].verify(&token, now + 91), Err(AuthError::Expired));
    let bad = vec![("exp".to_string(), "0".to_string())];
    assert!(mint_hs256(b"k", "u", &bad, std::time::Duration::from_secs(1)).is_err());
    assert!(mint_hs256(b"", "u", &[], std::time::Duration::from_secs(1)).is_err());
}

mod cache;
mod config;
mod jwks;
mod verifier;
