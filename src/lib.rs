//! Gatehouse: an API gateway on Cloudflare's Pingora.
//!
//! # Layout
//! Modules follow the request pipeline. [`proxy`] is the `ProxyHttp` implementation:
//! each phase calls the one file that owns it. A request runs on one [`runtime`]
//! snapshot, and its matched [`routing::Route`] holds everything the phases read: the
//! service, auth, limits, cache and traffic policy.
//!
//! | module | phase / role |
//! |---|---|
//! | [`config`] | file → `${VAR}` → each section validated by its owner → [`config::Config`] (data); leaves `config::{error, units, de}` |
//! | [`runtime`] | [`runtime::Runtime::build`]: config → live objects (reusing what a reload keeps), swapped whole behind `ArcSwap` |
//! | [`routing`] | `routes:` section, the compiled [`routing::Route`] and the route trie → `request_filter` |
//! | [`headers`] | client IP, trusted proxies, request id, forwarded headers, hop-by-hop classification |
//! | [`auth`] | `jwt:` section, JWT verifiers, JWKS refresh, verified-token cache → `request_filter` |
//! | [`ratelimit`] | `rate_limits:` section, GCRA policies, memory and Redis stores → `request_filter` |
//! | [`transform`] | header rules, CORS, IP rules → request and response phases |
//! | [`cache`] | response cache with request coalescing → request and response phases |
//! | [`upstream`] | `services:` section, Pingora `Backends` per service, selection, health checks → `upstream_peer` |
//! | [`breaker`] | circuit breakers and the retry budget → `upstream_peer`, attempt outcomes |
//! | [`proxy`] | the phases: `request.rs`, `attempt.rs`, `forward.rs`, `response.rs`, `cache.rs` |
//! | [`error`] | every gateway-made answer, its status/JSON, and Pingora error classification → `fail_to_proxy` |
//! | [`metrics`] | Prometheus registry, bounded labels → `logging` |
//! | [`access_log`] | one line per request → `logging` |
//! | [`tracing`] | W3C trace context, spans, the OTLP exporter → request phases and `logging` |
//! | [`http_client`] | outbound HTTP for the gateway's own requests (JWKS) |
//! | [`reload`] | SIGHUP / `POST /admin/reload`: validate, rebuild, swap |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz`, `/admin/status`, `/admin/reload` |
//! | [`server`] | assembles the Pingora `Server` and its services |
//! | [`demo`] | a small echo upstream for `gatehouse demo` and the tests |
//! | [`alloc`] | the global allocator: mimalloc, through its plain entry points where they suffice |
//!
//! No module imports another that imports it back (`scripts/import-cycles.py` checks
//! files and top-level modules). Unit tests live in each module's `tests.rs` (or
//! `tests/`); integration tests in `tests/gateway/`.

/// The allocator of every binary built on this crate (the default `mimalloc` feature).
/// It is declared here, not in `main.rs`: Pingora's generic proxy code is instantiated
/// in this crate (for [`proxy::Gateway`]), and only the crate that declares the global
/// allocator can inline it; elsewhere each of Pingora's many allocations and frees per
/// request goes through the `__rust_alloc` shim.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

#[cfg(feature = "mimalloc")]
pub mod alloc;

/// Give memory the allocator holds but no longer uses back to the OS: mimalloc purges
/// freed pages only on later allocator activity, so after a burst of connections closes
/// an idle worker would keep their memory. Called every [`server`]'s supervisor tick.
pub fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect has no preconditions; `false` = no forced collection of other
    // threads' heaps, only this thread's and the arenas' delayed purges.
    unsafe {
        libmimalloc_sys::mi_collect(false);
    }
}

/// The package version and the git commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("GATEHOUSE_COMMIT"),
    ")"
);

/// The git commit alone (`gatehouse_build_info`, `/admin/status`).
pub const COMMIT: &str = env!("GATEHOUSE_COMMIT");

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod consumers;
pub mod demo;
pub mod dns;
pub mod error;
pub mod forward_auth;
pub mod headers;
pub mod http_client;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod tracing;
pub mod transform;
pub mod upstream;
