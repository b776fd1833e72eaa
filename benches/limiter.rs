//! Decision cost: memory store (one hot key, 100k rotating keys, two policies) and the Redis
//! store (one round trip to a local `redis-server`; skipped if it is not installed).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::ratelimit::{build_store, Check, KeySpec, MemoryStore, Policy, RawRateLimits};
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn policy(name: &str, limit: u64) -> Policy {
    Policy::new(
        name,
        KeySpec::ClientIp,
        limit,
        Duration::from_secs(1),
        limit,
        None,
    )
}

fn check<'a>(p: &'a Policy, key: &'a str) -> Check<'a> {
    Check {
        policy: p,
        key,
        params: p.params_for(None),
    }
}

fn memory(c: &mut Criterion) {
    let store = MemoryStore::new(1_000_000);
    let p = policy("per-ip", 1_000_000_000);
    let user = policy("per-user", 1_000_000_000);
    c.bench_function("memory/single_key", |b| {
        b.iter(|| black_box(store.check(&[check(&p, "ip:192.0.2.1")])))
    });
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let mut i = 0;
    c.bench_function("memory/100k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.check(&[check(&p, &keys[i])]))
        })
    });
    c.bench_function("memory/two_policies", |b| {
        b.iter(|| black_box(store.check(&[check(&p, "ip:192.0.2.1"), check(&user, "v:alice")])))
    });
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(Server, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, port))
}

fn redis(c: &mut Criterion) {
    let Some((_server, port)) = start_redis() else {
        eprintln!("redis-server not available: skipping redis benchmarks");
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    else {
        return;
    };
    let yaml =
        format!("store: redis\nredis: {{ url: \"redis://127.0.0.1:{port}/0\", timeout: 1s }}");
    let Ok(raw) = serde_yaml::from_str::<RawRateLimits>(&yaml) else {
        return;
    };
    let Ok(store) = build_store(&raw) else { return };
    let p = policy("per-ip", 1_000_000);
    let user = policy("per-user", 1_000_000);
    // Connect and load the script before measuring.
    for _ in 0..100 {
        if !rt.block_on(store.check(&[check(&p, "warm")])).store_error {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.bench_function("redis/single_key", |b| {
        b.iter(|| black_box(rt.block_on(store.check(&[check(&p, "ip:192.0.2.1")]))))
    });
    c.bench_function("redis/two_policies", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(store.check(&[check(&p, "ip:192.0.2.1"), check(&user, "v:alice")])),
            )
        })
    });
    assert_eq!(store.redis_errors(), 0, "redis errors during the benchmark");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = memory, redis
}
criterion_main!(benches);
