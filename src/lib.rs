//! Gatehouse: an API gateway on Cloudflare's Pingora.
//!
//! # Layout
//! Modules follow the request pipeline; [`proxy`] is the thin `ProxyHttp` glue that
//! calls one of them per phase.
//!
//! | module | phase / role |
//! |---|---|
//! | [`config`] | file → `${VAR}` expansion → raw serde structs → validated [`config::Config`] |
//! | [`runtime`] | the snapshot built from a config, swapped whole behind `ArcSwap` |
//! | [`routing`] | compiled route table → `request_filter` |
//! | [`headers`] | client IP, trusted proxies, request id, forwarded headers |
//! | [`upstream`] | Pingora `Backends` per service, selection, health checks → `upstream_peer` |
//! | [`error`] | every gateway-made answer and its status/JSON mapping → `fail_to_proxy` |
//! | [`metrics`] | Prometheus registry, bounded labels → `logging` |
//! | [`access_log`] | one line per request → `logging` |
//! | [`auth`] | JWT verifiers, JWKS refresh, verified-token cache → `request_filter` |
//! | [`ratelimit`] | GCRA policies, memory and Redis stores → `request_filter` |
//! | [`reload`] | SIGHUP / `POST /admin/reload`: validate, rebuild, swap |
//! | [`admin`] | `/metrics`, `/healthz`, `/readyz`, `/admin/status`, `/admin/reload` |
//! | [`server`] | assembles the Pingora `Server` and its services |
//! | [`demo`] | a small echo upstream for `gatehouse demo` and the tests |

/// The allocator of every binary built on this crate (the default `mimalloc` feature).
/// It is declared here, not in `main.rs`: Pingora's generic proxy code is instantiated
/// in this crate (for [`proxy::Gateway`]), and only the crate that declares the global
/// allocator can inline it; elsewhere each of Pingora's many allocations and frees per
/// request goes through the `__rust_alloc` shim.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod demo;
pub mod error;
pub mod headers;
pub mod http_client;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod transform;
pub mod upstream;
