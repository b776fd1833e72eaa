//! Upstream selection for one request, 4 upstreams: Gatehouse's `ServiceRuntime::select`
//! (the balancer's choice, health, breaker admission, already-tried upstreams) for each
//! `balance` mode, beside Pingora's `LoadBalancer::select_with` over its own round robin,
//! the call Gatehouse used before (a `HashSet` and two SipHashes per pick).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::config::Config;
use gatehouse::dns::ResolverSpec;
use gatehouse::upstream::{Selection, ServiceRuntime};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use std::hint::black_box;
use std::path::Path;

const UPSTREAMS: [&str; 4] = [
    "127.0.0.1:9001",
    "127.0.0.1:9002",
    "127.0.0.1:9003",
    "127.0.0.1:9004",
];

fn service(balance: &str, health_check: bool) -> ServiceRuntime {
    let upstreams: String = UPSTREAMS
        .iter()
        .enumerate()
        .map(|(i, a)| format!("      - {{ address: \"{a}\", weight: {} }}\n", i + 1))
        .collect();
    let hc = if health_check {
        "    health_check: { type: tcp, interval: 60s }\n"
    } else {
        ""
    };
    let yaml = format!(
        "listen: [{{ address: \"127.0.0.1:0\" }}]\n\
         services:\n  s:\n    balance: {balance}\n{hc}    upstreams:\n{upstreams}\
         routes: [{{ name: r, match: {{ path_prefix: / }}, service: s }}]\n"
    );
    let config = Config::from_yaml(&yaml, Path::new("bench.yaml"), &|_| None)
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    ServiceRuntime::new(&config.services["s"], None, &ResolverSpec::System).expect("service builds")
}

fn pick(svc: &ServiceRuntime, key: &[u8], tried: &[usize]) -> usize {
    // What a request does: take the members (once), then pick.
    match svc.select(&svc.members(), key, tried, None) {
        Selection::Chosen(i, _ticket) => i,
        Selection::Unavailable { .. } => usize::MAX,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("selection/4_upstreams");
    for balance in [
        "round_robin",
        "weighted",
        "least_connections",
        "consistent_hash",
        "random",
    ] {
        let svc = service(balance, false);
        group.bench_function(format!("gatehouse/{balance}"), |b| {
            b.iter(|| black_box(pick(&svc, black_box(b"user-42"), &[])))
        });
    }
    let checked = service("round_robin", true);
    group.bench_function("gatehouse/round_robin/health_checked", |b| {
        b.iter(|| black_box(pick(&checked, black_box(b""), &[])))
    });
    let svc = service("round_robin", false);
    group.bench_function("gatehouse/round_robin/retry_after_one_tried", |b| {
        b.iter(|| black_box(pick(&svc, black_box(b""), &[1])))
    });

    let lb = LoadBalancer::<RoundRobin>::try_from_iter(UPSTREAMS).expect("static backends");
    group.bench_function("pingora_select_with/round_robin", |b| {
        b.iter(|| black_box(lb.select_with(black_box(b""), 32, |_, healthy| healthy)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
