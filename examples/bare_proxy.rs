//! The baseline for `benches/load/run.sh`: the smallest Pingora `ProxyHttp` that
//! forwards every request to one origin, with nothing of Gatehouse's pipeline.
//! Whatever Gatehouse costs above this is Gatehouse's own.
//!
//! ```text
//! BARE_ORIGIN=127.0.0.1:18080 BARE_LISTEN=127.0.0.1:18083 \
//!     cargo run --release --example bare_proxy
//! cargo run --release --example bare_proxy -- 127.0.0.1:18080 127.0.0.1:18083
//! ```
//!
//! Arguments (origin, then listen) win over the environment (`BARE_ORIGIN`,
//! `BARE_LISTEN`); `BARE_THREADS` sets the worker threads (default 1),
//! `BARE_WORK_STEALING=false` Pingora's runtime flavour (as Gatehouse's
//! `server.work_stealing`).
//! `BARE_TIMEOUTS=1` gives the peer Gatehouse's default timeouts (connect 3 s, read and
//! write 30 s, idle 60 s) on Tokio's timer wheel as Gatehouse has them, to separate the
//! cost of Pingora's timers from Gatehouse's own.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

// Gatehouse's allocator (`src/alloc.rs`), declared here as Gatehouse declares it in its
// library: the baseline is built alike.
#[cfg(feature = "mimalloc")]
#[path = "../src/alloc.rs"]
mod alloc;
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn setting(arg: Option<String>, var: &str, default: &str) -> String {
    arg.or_else(|| std::env::var(var).ok())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let origin = setting(args.next(), "BARE_ORIGIN", "127.0.0.1:18080");
    let listen = setting(args.next(), "BARE_LISTEN", "127.0.0.1:18083");
    let threads = setting(None, "BARE_THREADS", "1");

    let origin: SocketAddr = origin
        .parse()
        .unwrap_or_else(|e| panic!("origin {origin:?}: {e}"));
    let threads: usize = threads
        .parse()
        .unwrap_or_else(|e| panic!("BARE_THREADS {threads:?}: {e}"));

    let work_stealing = setting(None, "BARE_WORK_STEALING", "true") != "false";
    let timeouts = std::env::var("BARE_TIMEOUTS").is_ok_and(|v| v == "1");
    let defaults = ServerConf::default();
    let conf = ServerConf {
        threads,
        work_stealing,
        // With Gatehouse's timeouts, Gatehouse's timer choice too (see its server.rs).
        fast_timeout_to_tokio_threshold_seconds: if timeouts {
            Some(0)
        } else {
            defaults.fast_timeout_to_tokio_threshold_seconds
        },
        ..defaults
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut peer = HttpPeer::new(origin, false, String::new());
    if timeouts {
        let secs = std::time::Duration::from_secs;
        peer.options.connection_timeout = Some(secs(3));
        peer.options.total_connection_timeout = Some(secs(3));
        peer.options.read_timeout = Some(secs(30));
        peer.options.write_timeout = Some(secs(30));
        peer.options.idle_timeout = Some(secs(60));
    }
    let bare = Bare { peer };
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
