//! `Verifier::verify` per algorithm: cached (the steady state for a client reusing its
//! token) and uncached (`cache_size: 0`, i.e. full parse + signature + claims checks).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::auth::{build_verifiers, RawJwt, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "bench-only-hmac-secret-0123456789abcdef";

fn read(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn verifier(alg: &str, stem: Option<&str>, cache_size: usize) -> Arc<Verifier> {
    let raw = RawJwt {
        algorithms: vec![alg.to_string()],
        secret: stem.is_none().then(|| SECRET.to_string()),
        public_key_file: stem
            .map(|s| format!("{}/tests/keys/{s}_public.pem", env!("CARGO_MANIFEST_DIR"))),
        issuer: Some("https://idp.example.com".into()),
        audience: Some("api".into()),
        cache_size: Some(cache_size),
        ..RawJwt::default()
    };
    let mut map = BTreeMap::new();
    map.insert("b".to_string(), raw);
    build_verifiers(&map)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .remove("b")
        .expect("built")
}

fn token(alg: Algorithm, stem: Option<&str>) -> String {
    let key = match stem {
        None => EncodingKey::from_secret(SECRET.as_bytes()),
        Some(s) => {
            let pem = read(&format!("{s}_private.pem"));
            match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
                _ => EncodingKey::from_rsa_pem(&pem),
            }
            .expect("key")
        }
    };
    let claims = serde_json::json!({
        "sub": "user-1", "iss": "https://idp.example.com", "aud": "api",
        "exp": NOW + 3600, "iat": NOW, "role": ["reader", "admin"], "tier": "gold"
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign")
}

fn bench(c: &mut Criterion) {
    let algs = [
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
    let mut group = c.benchmark_group("jwt_verify");
    for (name, alg, stem) in algs {
        let t = token(alg, stem);
        let cached = verifier(name, stem, 10_000);
        assert!(cached.verify(&t, NOW).is_ok());
        group.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| cached.verify(black_box(&t), NOW))
        });
        let uncached = verifier(name, stem, 0);
        assert!(uncached.verify(&t, NOW).is_ok());
        group.bench_function(format!("{name}/uncached"), |b| {
            b.iter(|| uncached.verify(black_box(&t), NOW))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
