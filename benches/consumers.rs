//! Credential lookups on the request path: an API key among 10,000 consumers (SHA-256
//! of the presented key, one hash-map probe, a constant-time compare), and a forward-auth
//! decision served from its cache (the first decision comes from a real HTTP service on
//! loopback that this bench starts).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::consumers::{sha256, ConsumerConfig, Consumers, ConsumersConfig};
use gatehouse::forward_auth::{self, ForwardAuth};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

fn api_keys(c: &mut Criterion) {
    let mut config = ConsumersConfig::default();
    for i in 0..10_000 {
        config.consumers.push(ConsumerConfig {
            name: format!("consumer-{i}"),
            groups: vec![],
            api_keys: vec![sha256(&[format!("k_live_{i:08}_9f8e7d6c5b4a").as_bytes()])],
            basic: None,
        });
    }
    let consumers = Consumers::new(&config);
    let key = b"k_live_00004242_9f8e7d6c5b4a";
    assert!(consumers.by_api_key(key).is_some());
    c.bench_function("api_key/hit_10k_consumers", |b| {
        b.iter(|| black_box(consumers.by_api_key(black_box(key))))
    });
    c.bench_function("api_key/miss_10k_consumers", |b| {
        b.iter(|| black_box(consumers.by_api_key(black_box(b"k_live_unknown_key_00000000"))))
    });
}

/// An auth service that allows everything, with `X-User-Id`.
fn allow_service() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut conn = conn;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        let ok = b"HTTP/1.1 200 OK\r\nx-user-id: u-1\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(ok).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn forward_cached(c: &mut Criterion) {
    let addr = allow_service();
    let yaml = format!(
        "ext: {{ url: \"http://{addr}/check\", timeout: 1s, copy_headers: [X-User-Id], cache_ttl: 1h }}"
    );
    let mut errors = Vec::new();
    let (configs, _) = forward_auth::validate(serde_yaml::from_str(&yaml).ok(), &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let svc = ForwardAuth::new(&configs["ext"]);
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTk5OTk5OTk5OX0.dGhpcy1pcy1hLXNpZ25hdHVyZS1vZi1zb21lLWxlbmd0aA"
            .parse()
            .expect("value"),
    );
    let id = http::HeaderValue::from_static("0123456789abcdef");
    let req = forward_auth::Request {
        route: "api",
        method: "GET",
        uri: "/api/orders?page=2",
        host: "api.example.com",
        client_ip: None,
        request_id: &id,
        headers: &headers,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(svc.check(&req)).expect("the service answers");
    assert!(svc.cached(&req).is_some());
    c.bench_function("forward_auth/cached_decision", |b| {
        b.iter(|| black_box(svc.cached(black_box(&req))))
    });
}

criterion_group!(benches, api_keys, forward_cached);
criterion_main!(benches);
