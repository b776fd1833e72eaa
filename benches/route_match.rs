//! Route matching with 1,000 routes: the compiled segment trie against a naive linear
//! scan of prefixes (the baseline most tutorials ship).

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::routing::conditions::RawCond;
use gatehouse::routing::{Conditions, Match, RequestView, RouteConfig, RouteMatch, RouteTable};
use http::Method;
use std::hint::black_box;

fn routes(n: usize) -> Vec<RouteConfig> {
    (0..n)
        .map(|i| RouteConfig {
            name: format!("r{i}"),
            host: (i % 4 == 0).then(|| format!("h{}.example.com", i % 10)),
            path_prefix: format!("/api/v{}/svc{i}/items", i % 3),
            methods: if i % 2 == 0 {
                vec![Method::GET, Method::POST]
            } else {
                vec![]
            },
            service: "s".into(),
            ..RouteConfig::default()
        })
        .collect()
}

/// The baseline: check every route in order, prefix on segment boundary.
fn naive<'a>(rs: &'a [RouteConfig], host: &str, path: &str, m: &Method) -> Option<&'a str> {
    rs.iter()
        .find(|r| {
            r.host.as_deref().is_none_or(|h| h == host)
                && (r.methods.is_empty() || r.methods.contains(m))
                && path.starts_with(&r.path_prefix)
                && matches!(path.as_bytes().get(r.path_prefix.len()), None | Some(b'/'))
        })
        .map(|r| r.name.as_str())
}

/// `match: { headers: { NAME: VALUE } }`, compiled.
fn header_condition(name: &str, value: &str) -> Option<std::sync::Arc<Conditions>> {
    let headers: std::collections::BTreeMap<String, RawCond> =
        [(name.to_string(), RawCond::Exact(value.to_string()))].into();
    let mut errors = Vec::new();
    let c = Conditions::compile(
        None,
        &headers,
        &Default::default(),
        &Default::default(),
        "bench",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    c.map(std::sync::Arc::new)
}

fn bench(c: &mut Criterion) {
    let rs = routes(1000);
    let table = RouteTable::build(rs.iter().map(RouteMatch::new).collect());
    let last = "/api/v0/svc999/items/42";
    let first = "/api/v1/svc1/items/42";
    let miss = "/nothing/here/at/all";
    for (name, path) in [("last", last), ("first", first), ("miss", miss)] {
        c.bench_function(&format!("route_match/trie/1000/{name}"), |b| {
            b.iter(|| {
                let m = table.lookup(black_box("api.example.com"), black_box(path), &Method::GET);
                black_box(matches!(m, Match::Found(_)))
            })
        });
        c.bench_function(&format!("route_match/naive/1000/{name}"), |b| {
            b.iter(|| {
                black_box(naive(
                    &rs,
                    black_box("api.example.com"),
                    black_box(path),
                    &Method::GET,
                ))
            })
        });
    }

    // 1,000 routes of which 100 carry a header condition (every tenth), some of them on
    // the path that is looked up: the conditions are checked on candidates only.
    let mut with_conditions = routes(1000);
    for (i, r) in with_conditions
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % 10 == 0)
    {
        r.conditions = header_condition("X-Tenant", &format!("t{i}"));
    }
    // Routes at the root with a condition, so every lookup checks them.
    for i in 0..10 {
        with_conditions[i * 7 + 1].path_prefix = "/".into();
        with_conditions[i * 7 + 1].conditions = header_condition("X-Canary", &format!("c{i}"));
    }
    let table = RouteTable::build(with_conditions.iter().map(RouteMatch::new).collect());
    let mut headers = http::HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1"),
        ("accept", "*/*"),
        ("x-tenant", "t990"),
        ("authorization", "Bearer x"),
    ] {
        headers.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    for (name, path) in [("last", last), ("first", first), ("miss", miss)] {
        c.bench_function(
            &format!("route_match/trie+100-header-conditions/1000/{name}"),
            |b| {
                b.iter(|| {
                    let view = RequestView {
                        path: black_box(path),
                        query: None,
                        headers: &headers,
                    };
                    let m = table.lookup_request(black_box("api.example.com"), &view, &Method::GET);
                    black_box(matches!(m, Match::Found(_)))
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
