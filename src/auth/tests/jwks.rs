//! JWKS tests against a tiny HTTP server on 127.0.0.1:0 (loopback only). Waiting is
//! bounded polling of observable state, never a fixed sleep.

use super::{encoding_key, good_claims, mint, NOW};
use crate::auth::jwks::*;
use crate::auth::{build_verifiers, AuthError, RawJwt, Verifier};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    chunked: bool,
}

struct Server {
    url: String,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn set(&self, status: u16, body: &str, chunked: bool) {
        let mut r = self.reply.lock().unwrap_or_else(PoisonError::into_inner);
        *r = Reply {
            status,
            body: body.to_string(),
            chunked,
        };
    }
}

async fn start_server(status: u16, body: &str) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let reply = Arc::new(Mutex::new(Reply {
        status,
        body: body.to_string(),
        chunked: false,
    }));
    let requests = Arc::new(AtomicUsize::new(0));
    let (r, n) = (Arc::clone(&reply), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (r, n) = (Arc::clone(&r), Arc::clone(&n));
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16384 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                n.fetch_add(1, Relaxed);
                let reply = r.lock().unwrap_or_else(PoisonError::into_inner).clone();
                let head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
                let resp = if reply.chunked {
                    let (a, b) = reply.body.split_at(reply.body.len() / 2);
                    format!("{head}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len())
                } else {
                    format!(
                        "{head}Content-Length: {}\r\n\r\n{}",
                        reply.body.len(),
                        reply.body
                    )
                };
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server {
        url: format!("http://{addr}/.well-known/jwks.json"),
        reply,
        requests,
    }
}

fn jwk(alg: Algorithm, stem: &str, kid: &str) -> serde_json::Value {
    let mut k = Jwk::from_encoding_key(&encoding_key(alg, Some(stem)), alg).expect("jwk from key");
    k.common.key_id = Some(kid.to_string());
    serde_json::to_value(k).expect("serializes")
}

fn jwks_verifier(url: &str) -> Arc<Verifier> {
    let raw = RawJwt {
        algorithms: vec!["RS256".into(), "ES256".into()],
        jwks_url: Some(url.to_string()),
        jwks_refresh: Some(crate::config::units::Dur(Duration::from_secs(3600))),
        issuer: Some(crate::auth::tests::ISS.into()),
        ..RawJwt::default()
    };
    let mut v = build_verifiers(&BTreeMap::from([("idp".to_string(), raw)])).expect("valid");
    v.remove("idp").expect("built")
}

/// Poll `f` every 20 ms for at most 5 s.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn fetch_rotate_refresh_on_unknown_kid_and_keep_keys_on_failure() {
    let server = start_server(500, "oops").await;
    let v = jwks_verifier(&server.url);
    assert!(v.needs_jwks());
    let j = v.jwks().expect("jwks verifier");
    j.set_min_gap(Duration::from_millis(10));
    let token_a = mint(
        Algorithm::RS256,
        Some("rsa"),
        Some("a"),
        &good_claims(NOW + 3600),
    );

    // Never fetched: 503, and a failed fetch changes nothing.
    assert_eq!(v.verify(&token_a, NOW), Err(AuthError::KeysUnavailable));
    let e = v.refresh_jwks().await.expect_err("500 is a failure");
    assert!(e.contains("500"), "{e}");
    assert_eq!(v.verify(&token_a, NOW).map_err(|e| e.status()), Err(503));
    assert_eq!(
        j.counters(),
        (1, 1),
        "one trigger for two verifies in the same second"
    );

    // Serve key A (chunked) and start the refresher. The KeysUnavailable verifies above
    // left one Notify permit, so it fetches at start and once more right after: wait for
    // both so nothing is in flight below.
    let set_a = json!({"keys": [jwk(Algorithm::RS256, "rsa", "a")]}).to_string();
    server.set(200, &set_a, true);
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(Arc::clone(&v).run_jwks_refresher(rx));
    assert!(
        eventually(|| j.counters().1 == 3).await,
        "{:?}",
        j.counters()
    );
    let claims = v.verify(&token_a, NOW).expect("kid a verifies");
    assert_eq!(claims.get_str("sub").as_deref(), Some("user-1"));
    assert!(v.verify(&token_a, NOW).is_ok());
    assert_eq!(v.cache_hits(), 1);

    // Rotation to key B (EC) only: the unknown kid triggers exactly one refresh.
    let set_b = json!({"keys": [jwk(Algorithm::ES256, "ec256", "b")]}).to_string();
    server.set(200, &set_b, false);
    let token_b = mint(
        Algorithm::ES256,
        Some("ec256"),
        Some("b"),
        &good_claims(NOW + 3600),
    );
    assert_eq!(v.verify(&token_b, NOW + 10), Err(AuthError::UnknownKid));
    assert!(eventually(|| v.verify(&token_b, NOW + 10).is_ok()).await);
    assert_eq!(j.counters(), (2, 4));
    // Key A is gone, and the cache was cleared with it.
    assert_eq!(v.verify(&token_a, NOW + 10), Err(AuthError::UnknownKid));

    // A flood of unknown kids: one trigger per 5 s of token clock, not one per token.
    for i in 0..50 {
        let t = mint(
            Algorithm::ES256,
            Some("ec256"),
            Some(&format!("x{i}")),
            &good_claims(NOW + 3600),
        );
        assert_eq!(v.verify(&t, NOW + 20 + i / 10), Err(AuthError::UnknownKid));
    }
    assert_eq!(j.counters().0, 3, "50 unknown kids over 4 s: one trigger");
    assert!(
        eventually(|| j.counters().1 == 5).await,
        "{:?}",
        j.counters()
    );

    // Failed refreshes (500, garbage, a set without usable keys) keep key B.
    server.set(500, "down", false);
    assert!(v.refresh_jwks().await.is_err());
    server.set(200, "<html>not json</html>", false);
    assert!(v.refresh_jwks().await.is_err());
    server.set(
        200,
        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"b"}]}"#,
        false,
    );
    assert!(v.refresh_jwks().await.is_err());
    let mut c = good_claims(NOW + 3600);
    c["sub"] = json!("fresh");
    let fresh = mint(Algorithm::ES256, Some("ec256"), Some("b"), &c);
    let hits = v.cache_hits();
    assert_eq!(
        v.verify(&fresh, NOW + 30)
            .expect("old set kept")
            .get_str("sub")
            .as_deref(),
        Some("fresh")
    );
    assert_eq!(
        v.cache_hits(),
        hits,
        "verified against the kept set, not the cache"
    );
    assert!(server.requests.load(Relaxed) >= 8);

    tx.send(true).expect("refresher listens");
    let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(stopped, Ok(Ok(()))), "refresher stops on shutdown");
}

#[tokio::test]
async fn https_to_a_non_tls_server_fails_cleanly() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(b"HTTP/1.1 200 OK\r\n\r\n{}").await;
        }
    });
    let v = jwks_verifier(&format!("https://{addr}/jwks"));
    assert!(v.refresh_jwks().await.is_err());
    assert_eq!(v.verify("a.b.c", NOW), Err(AuthError::Malformed));
    let t = mint(
        Algorithm::RS256,
        Some("rsa"),
        Some("a"),
        &good_claims(NOW + 60),
    );
    assert_eq!(v.verify(&t, NOW), Err(AuthError::KeysUnavailable));
}

#[test]
fn key_set_parsing_and_selection() {
    let algs = [Algorithm::RS256, Algorithm::ES256];
    let mut enc = jwk(Algorithm::RS256, "rsa", "enc");
    enc["use"] = json!("enc");
    let mut ps = jwk(Algorithm::RS256, "rsa", "ps");
    ps["alg"] = json!("PS256");
    let mut short = jwk(Algorithm::ES256, "ec256", "short");
    short["x"] = json!("AAAA");
    let doc = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        enc, ps, short,
        jwk(Algorithm::ES384, "ec384", "p384"),
        {"kty": "RSA", "kid": "broken"},
        {"kty": "weird"},
        jwk(Algorithm::RS256, "rsa", "a"),
        jwk(Algorithm::RS256, "rsa2", "shared"),
        jwk(Algorithm::ES256, "ec256", "shared"),
    ]});
    let set = KeySet::parse(doc.to_string().as_bytes(), &algs).expect("parses");
    assert_eq!(set.len(), 3, "only a and the two 'shared' keys are usable");
    assert!(set.select(Some("a"), Algorithm::RS256).is_ok());
    assert_eq!(
        set.select(Some("a"), Algorithm::ES256).err(),
        Some(Miss::WrongAlgorithm)
    );
    for kid in ["hmac", "enc", "ps", "short", "p384", "nope"] {
        assert_eq!(
            set.select(Some(kid), Algorithm::RS256).err(),
            Some(Miss::NotFound),
            "{kid}"
        );
    }
    assert!(set.select(Some("shared"), Algorithm::ES256).is_ok());
    assert_eq!(
        set.select(None, Algorithm::RS256).err(),
        Some(Miss::Ambiguous)
    );
    assert!(
        set.select(None, Algorithm::ES256).is_ok(),
        "one EC key: no kid needed"
    );

    for bad in [
        &b"{}"[..],
        b"[]",
        b"\xff",
        b"{\"keys\":[]}",
        b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}",
    ] {
        assert!(KeySet::parse(bad, &algs).is_err());
    }
}
