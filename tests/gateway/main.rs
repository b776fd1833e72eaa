//! Integration tests: the real `gatehouse` binary on free loopback ports, real upstream
//! servers started by each test. One test binary (one link) for all of them.

mod common;
mod dns;
mod pki;
mod recorder;
mod redis_deploy;
mod tls_upstream;

mod admin;
mod auth;
mod balance;
mod config_cli;
mod consumers;
mod discovery;
mod forwarding;
mod framing;
mod health;
mod hostile;
mod listener_certs;
mod matching;
mod observability;
mod operations;
mod pool;
mod protocols;
mod ratelimit;
mod redis_fleet;
mod redis_store;
mod resilience;
mod routing;
mod shadow;
mod traffic;
mod upstream_tls;
