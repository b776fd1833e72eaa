//! Assemble the Pingora `Server`: the proxy service on every `listen` address, the admin
//! service, and the background service that runs health checks.

use crate::admin::AdminApp;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::Reloader;
use crate::runtime::Runtime;
use crate::tls::{CertResolver, ListenerCerts, ServedCert};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::Arc;

/// A plaintext listener's own read buffer per connection: none (see `run`).
const PLAIN_READ_BUFFER: usize = 0;
/// A TLS listener's: one full TLS record, so a record is read in one call.
const TLS_READ_BUFFER: usize = 16 * 1024 + 512;
/// Each connection's write buffer (Pingora's default, one TCP segment).
const WRITE_BUFFER: usize = 1460;

/// Process-level options from the command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Map our `server:` settings onto Pingora's `ServerConf`.
pub fn server_conf(config: &Config, opts: RunOptions) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        work_stealing: s.work_stealing,
        daemon: opts.daemon,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_timeout.as_secs().max(1)),
        // Daemonizing would otherwise move to `/` and break relative paths (key files).
        working_directory: std::env::current_dir().ok(),
        // Timeouts of 1 s and more (every default: connect 3 s, read/write 30 s, idle 60 s)
        // on Tokio's timer wheel, which drops a cancelled timer at once. Pingora's own
        // "fast" timer keeps a `Notify` per 10 ms deadline until it expires, behind a
        // lock, for two timers per proxied request (the upstream read and the pooled
        // connection's idle wait) that almost never fire.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    }
}

/// Build the server for a validated config. Does not start it.
pub fn build(config: Config, opts: RunOptions) -> Result<Server, String> {
    let conf = server_conf(&config, opts);
    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // Nothing reads how long a stream's reads and writes waited (Pingora's
    // `get_*_pending_time`): spare the two clock reads per wait.
    pingora::protocols::l4::stream::set_pending_time_tracking(false);

    let listen = config.listen.clone();
    let admin = config.admin;
    if let (Some(a), None) = (admin, &config.admin_token) {
        if !a.ip().is_loopback() {
            log::warn!(
                "admin listener {a} is not loopback-only and has no admin.token: metrics and \
                 status are open to the network, POST /admin/reload is refused"
            );
        }
    }
    let source = config.source.clone();
    let h2c = config.server.h2c;
    let timeouts = config.server.timeouts;
    let max_connections = config.server.max_connections;
    if let Some(path) = &config.server.access_log_path {
        crate::access_log::set_path(Some(path)).map_err(|e| {
            format!(
                "server.access_log.path: cannot open {}: {e}",
                path.display()
            )
        })?;
    }
    let runtime = Runtime::build(config, None)?;
    for warning in runtime.prepare_blocking().map_err(|e| e.join("\n"))? {
        log::warn!("{warning}");
    }
    // Set up at start or not at all (see `Gateway`): the proxy and the reloader agree.
    let compression_module = runtime.any_compression;
    let runtime = Arc::new(ArcSwap::from_pointee(runtime));
    let metrics = Arc::new(Metrics::new());
    // One certificate resolver per TLS listener: a reload swaps its certificates.
    let mut certs = ListenerCerts::default();
    for l in &listen {
        if let Some(tls) = &l.tls {
            let served: Vec<ServedCert> = tls.iter().map(|c| c.served.clone()).collect();
            certs.insert(&l.address, Arc::new(CertResolver::new(&served)));
        }
    }
    let reloader = Arc::new(Reloader::new(
        source,
        runtime.clone(),
        metrics.clone(),
        compression_module,
        certs.clone(),
    ));

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway::new(runtime.clone(), metrics.clone(), compression_module),
        "gatehouse proxy",
    );
    for l in &listen {
        let endpoint = ListenerConfig::tcp(l.address.as_str());
        match certs.get(&l.address) {
            // Plaintext: no read buffer of the connection's own. HTTP/1 heads and bodies
            // are read straight into their own buffers, and an idle keep-alive connection
            // holds no read buffer at all (Pingora's default is 64 KiB per connection).
            None => proxy.add_listener(
                endpoint.l4_buffer(L4BufferSettings::new(PLAIN_READ_BUFFER, WRITE_BUFFER)),
            ),
            Some(resolver) => {
                // Modern defaults (TLS 1.2+, rustls' safe suites); HTTP/2 via ALPN. The
                // resolver picks the certificate (the paths given here are not used).
                let mut settings = TlsSettings::intermediate("", "")
                    .map_err(|e| format!("listen {}: TLS setup failed: {e}", l.address))?;
                settings.set_cert_resolver(resolver);
                settings.enable_h2();
                proxy.add_listener(
                    endpoint
                        .tls(settings)
                        .l4_buffer(L4BufferSettings::new(TLS_READ_BUFFER, WRITE_BUFFER)),
                );
            }
        }
    }
    let connections = Arc::new(tokio::sync::Semaphore::new(
        max_connections.map_or(tokio::sync::Semaphore::MAX_PERMITS, |n| {
            n.min(tokio::sync::Semaphore::MAX_PERMITS)
        }),
    ));
    metrics.set_connection_gauge(connections.clone(), max_connections);
    proxy.set_connection_limit(connections);
    if let Some(app) = proxy.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        options.h2c_preface_timeout = Some(timeouts.preface);
        options.first_request_timeout = Some(timeouts.client_header);
        options.header_timeout = Some(timeouts.client_header);
        // The proxied request goes upstream with canonical header names (see
        // `add_forwarded_headers`): the map of each name's original spelling would be built
        // and copied per request for nothing.
        options.discard_header_case = true;
        app.server_options = Some(options);
    }
    server.add_service(proxy);

    let stats = Arc::new(crate::admin::Stats::default());
    if let Some(addr) = admin {
        let mut svc = Service::new(
            "gatehouse admin".to_string(),
            AdminApp::new(
                runtime.clone(),
                metrics.clone(),
                reloader.clone(),
                stats.clone(),
            ),
        );
        svc.add_tcp(&addr.to_string());
        server.add_service(svc);
    }

    server.add_service(background_service(
        "gatehouse supervisor",
        Supervisor {
            runtime: runtime.clone(),
            reloader,
            metrics,
            stats,
        },
    ));
    Ok(server)
}

/// Starts the snapshot's background work (health checks, JWKS refreshers), sweeps idle
/// rate-limit buckets, reloads the config on SIGHUP and reopens the access log on
/// SIGUSR1.
struct Supervisor {
    runtime: Arc<ArcSwap<Runtime>>,
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    /// The dashboard's history, sampled every [`crate::admin::stats::INTERVAL`].
    stats: Arc<crate::admin::Stats>,
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        self.runtime.load().start_background(&self.metrics);
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP ({e}); reload with POST /admin/reload");
                None
            }
        };
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGUSR1 ({e}); the access log is not reopened");
                None
            }
        };
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(30));
        let mut release = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut sample = tokio::time::interval(crate::admin::stats::INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    log::info!("SIGHUP: reloading the config");
                    // Errors are logged and counted inside; the old config stays.
                    let _ = self.reloader.reload().await;
                }
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => None } } => {
                    match crate::access_log::reopen() {
                        Ok(Some(path)) => log::info!("SIGUSR1: access log reopened at {}", path.display()),
                        Ok(None) => log::info!("SIGUSR1: the access log goes to stderr; nothing to reopen"),
                        Err(e) => log::error!("SIGUSR1: cannot reopen the access log ({e}); writing to the old file"),
                    }
                }
                _ = sweep.tick() => self.runtime.load().rate_store.sweep(),
                _ = release.tick() => crate::release_free_memory(),
                _ = sample.tick() => self.stats.sample(&self.metrics),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora::protocols::l4::stream::{set_pending_time_tracking, Stream};
    use pingora::protocols::GetTimingDigest;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// How long Pingora's stream says a read waited for a byte sent `ms` later.
    async fn measured_read_wait(ms: u64) -> Duration {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            s.write_all(b"x").await.expect("write");
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut stream = Stream::from(tcp);
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .expect("the byte in time")
            .expect("read");
        writer.await.expect("writer");
        stream.get_read_pending_time()
    }

    /// The pending-time patch: Pingora measures how long each read waited (two clock reads
    /// per wait) unless told not to, as `build` does.
    #[tokio::test]
    async fn stream_wait_times_are_measured_only_while_tracking_is_on() {
        set_pending_time_tracking(true);
        let on = measured_read_wait(50).await;
        set_pending_time_tracking(false);
        let off = measured_read_wait(50).await;
        assert!(on >= Duration::from_millis(30), "tracked wait: {on:?}");
        assert_eq!(off, Duration::ZERO);
    }
}
