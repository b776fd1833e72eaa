//! Config reload in place (SIGHUP, `POST /admin/reload`).
//!
//! The file is read and fully validated first (certificates and keys included); on any
//! error the running snapshot stays, every error is logged and
//! `gatehouse_config_reloads_total{result="error"}` rises. On success a complete new
//! [`Runtime`] is built — reusing unchanged services, upstream state, health probes,
//! JWKS verifiers and the rate-limit store — the names of new services are resolved,
//! its background work is started, and it is swapped in atomically; the listeners'
//! certificates are swapped in for new handshakes. Requests in flight keep the
//! snapshot they started with; upstreams the new snapshot no longer has drain. Settings
//! bound to sockets or threads cannot change in place: they are logged as needing a
//! binary upgrade, and everything else still applies.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::tls::{ListenerCerts, ServedCert};
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Reloader {
    path: PathBuf,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    /// Whether the proxy set up its compression module at start (see `Gateway`).
    compression_module: bool,
    /// The TLS listeners' certificate resolvers.
    certs: ListenerCerts,
    /// Reloads run one at a time: a second SIGHUP waits for the first to finish.
    lock: tokio::sync::Mutex<()>,
    /// The last reload's time and result (the dashboard shows it).
    last: std::sync::Mutex<Option<LastReload>>,
}

/// When the last reload ran and what came of it.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: std::time::SystemTime,
    /// Empty: it succeeded.
    pub errors: Vec<String>,
}

/// What a successful reload could not apply in place.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub needs_upgrade: Vec<String>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Arc<Metrics>,
        compression_module: bool,
        certs: ListenerCerts,
    ) -> Self {
        Reloader {
            path,
            runtime,
            metrics,
            compression_module,
            certs,
            lock: tokio::sync::Mutex::new(()),
            last: std::sync::Mutex::new(None),
        }
    }

    /// The last reload's time and result; `None` before the first.
    pub fn last(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, errors: &[String]) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastReload {
            at: std::time::SystemTime::now(),
            errors: errors.to_vec(),
        });
    }

    /// Reload the config file. `Err` carries every error; the old config stays in force.
    pub async fn reload(&self) -> Result<ReloadReport, Vec<String>> {
        let _one_at_a_time = self.lock.lock().await;
        let path = self.path.clone();
        // Reading the file, loading key files and resolving names may block.
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let config = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                return Err(self.failed(errors));
            }
            Err(e) => return Err(self.failed(vec![format!("reload task failed: {e}")])),
        };
        let old = self.runtime.load_full();
        let new = match Runtime::build(config, Some(&old)) {
            Ok(rt) => rt,
            Err(e) => return Err(self.failed(vec![e])),
        };
        let mut report = ReloadReport {
            needs_upgrade: needs_upgrade(&old.config, &new.config),
        };
        if !self.compression_module && new.any_compression {
            // The proxy set up no compression module at start (no route asked for one):
            // these routes answer uncompressed until the next start or binary upgrade.
            report
                .needs_upgrade
                .push("routes[].compression (off for every route at start)".to_string());
        }
        match new.prepare(Some(&old)).await {
            Ok(warnings) => warnings
                .iter()
                .for_each(|w| log::warn!("config reload: {w}")),
            Err(errors) => return Err(self.failed(errors)),
        }
        // The one step that can still fail, before anything of the new config runs: a
        // new access-log file that cannot be opened keeps the old config (and file).
        let log_path = new.config.server.access_log_path.as_deref();
        if let Err(e) = crate::access_log::set_path(log_path) {
            let path = log_path
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(self.failed(vec![format!(
                "server.access_log.path: cannot open {path}: {e}"
            )]));
        }
        new.prefetch_jwks().await;
        new.start_background(&self.metrics);
        for l in &new.config.listen {
            if let (Some(tls), Some(resolver)) = (&l.tls, self.certs.get(&l.address)) {
                let served: Vec<ServedCert> = tls.iter().map(|c| c.served.clone()).collect();
                resolver.install(&served);
            }
        }
        let new = Arc::new(new);
        self.runtime.store(new.clone());
        new.retire(&old);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        self.record(&[]);
        for what in &report.needs_upgrade {
            log::warn!(
                "config reload: {what} changed; it takes effect only after a binary upgrade (gatehouse -u)"
            );
        }
        log::info!("config reloaded from {}", self.path.display());
        Ok(report)
    }

    fn failed(&self, errors: Vec<String>) -> Vec<String> {
        self.record(&errors);
        self.metrics
            .config_reloads
            .with_label_values(&["error"])
            .inc();
        log::error!(
            "config reload from {} failed with {} error(s); the running config stays in force",
            self.path.display(),
            errors.len()
        );
        for e in &errors {
            log::error!("  {e}");
        }
        errors
    }
}

/// Settings the running process cannot change without new sockets or threads.
fn needs_upgrade(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.server, &new.server);
    let mut out = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            out.push(name.to_string());
        }
    };
    fn sockets(c: &Config) -> Vec<(&str, bool)> {
        c.listen.iter().map(|l| l.socket()).collect()
    }
    check("listen", sockets(old) != sockets(new));
    check("admin.address", old.admin != new.admin);
    check("server.threads", o.threads != n.threads);
    check("server.pid_file", o.pid_file != n.pid_file);
    check("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock);
    check("server.error_log", o.error_log != n.error_log);
    check("server.h2c", o.h2c != n.h2c);
    // Read by the listeners' HTTP server options (the rest of timeouts: per request).
    check(
        "server.timeouts.client_header",
        o.timeouts.client_header != n.timeouts.client_header,
    );
    check(
        "server.timeouts.preface",
        o.timeouts.preface != n.timeouts.preface,
    );
    check(
        "server.max_connections",
        o.max_connections != n.max_connections,
    );
    check("server.work_stealing", o.work_stealing != n.work_stealing);
    check("server.grace_period", o.grace_period != n.grace_period);
    check(
        "server.shutdown_timeout",
        o.shutdown_timeout != n.shutdown_timeout,
    );
    out
}
