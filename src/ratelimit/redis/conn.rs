//! Connections to the three kinds of Redis deployment.
//!
//! - One Redis: the redis crate's `ConnectionManager` (multiplexed, reconnects by
//!   itself). It is told to make no retries of its own, so a refused connection is an
//!   error at once rather than a wait through its backoff.
//! - A Cluster: the crate's async cluster connection, which follows MOVED/ASK redirects
//!   and refreshes the slot map itself, with short retry waits so the decision's
//!   timeout is never spent on its default backoff.
//! - Sentinel: the master Sentinel names, asked again whenever the connection fails in
//!   a way that suggests a failover (connection refused or dropped, `READONLY` from a
//!   demoted master).
//!
//! Every connection is made lazily, inside the Tokio runtime, on first use.

use super::super::config::{RedisSettings, RedisTarget};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{ErrorKind, RedisError, RedisResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A connection to run commands and scripts on.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Conn::Single(c) => inv.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => inv.invoke_async(&mut c.clone()).await,
        }
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

enum Kind {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

pub struct Connector {
    kind: Kind,
    timeout: Duration,
    current: ArcSwapOption<Conn>,
    /// A Sentinel lookup is under way.
    discovering: AtomicBool,
}

impl Connector {
    pub fn new(s: &RedisSettings) -> Result<Self, String> {
        let tls = |c: &Option<Vec<u8>>| redis::TlsCertificates {
            client_tls: None,
            root_cert: c.clone(),
        };
        let kind = match &s.target {
            RedisTarget::Standalone(url) => Kind::Single(
                match &s.ca_pem {
                    None => redis::Client::open(url.as_str()),
                    Some(_) => redis::Client::build_with_tls(url.as_str(), tls(&s.ca_pem)),
                }
                .map_err(|e| format!("invalid redis url {url:?}: {e}"))?,
            ),
            RedisTarget::Cluster(nodes) => {
                let mut b =
                    redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(s.timeout.max(Duration::from_millis(200)))
                        .response_timeout(s.timeout)
                        .retries(2)
                        .min_retry_wait(5)
                        .max_retry_wait(50);
                if s.ca_pem.is_some() {
                    b = b.certs(tls(&s.ca_pem));
                }
                Kind::Cluster(
                    b.build()
                        .map_err(|e| format!("invalid redis cluster nodes: {e}"))?,
                )
            }
            RedisTarget::Sentinel { master, nodes } => Kind::Sentinel(tokio::sync::Mutex::new(
                SentinelClient::build(
                    nodes.iter().map(String::as_str).collect(),
                    master.as_str(),
                    None,
                    SentinelServerType::Master,
                )
                .map_err(|e| format!("invalid sentinel settings: {e}"))?,
            )),
        };
        Ok(Connector {
            kind,
            timeout: s.timeout,
            current: ArcSwapOption::empty(),
            discovering: AtomicBool::new(false),
        })
    }

    /// The connection to use now: made on first use (one Redis, a Cluster), or `None`
    /// while Sentinel has not named a master yet (a lookup is then started).
    pub fn get(self: &Arc<Self>) -> Result<Arc<Conn>, String> {
        if let Some(c) = self.current.load_full() {
            return Ok(c);
        }
        let made = match &self.kind {
            Kind::Single(client) => Conn::Single(manager(client.clone(), self.timeout)?),
            Kind::Cluster(client) => Conn::Cluster(
                client.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(self.timeout.max(Duration::from_millis(200)))
                        .set_response_timeout(self.timeout),
                ),
            ),
            Kind::Sentinel(_) => {
                self.rediscover();
                return Err("no master from Sentinel yet".into());
            }
        };
        let made = Arc::new(made);
        // Another request may have made one meanwhile: use whichever got in first.
        let prev = self
            .current
            .compare_and_swap(&None::<Arc<Conn>>, Some(made.clone()));
        Ok(match &*prev {
            Some(c) => c.clone(),
            None => made,
        })
    }

    /// A command failed with `e`: with Sentinel, a failure that suggests the master
    /// moved makes it ask again. Returns the error's text.
    pub fn failed(self: &Arc<Self>, e: &RedisError) -> String {
        let moved = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if moved && matches!(self.kind, Kind::Sentinel(_)) {
            self.rediscover();
        }
        e.to_string()
    }

    /// Ask Sentinel for the master again, in the background, one lookup at a time.
    pub fn rediscover(self: &Arc<Self>) {
        let Kind::Sentinel(_) = &self.kind else {
            return;
        };
        if self.discovering.swap(true, Ordering::SeqCst)
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let found = me.discover().await;
            me.discovering.store(false, Ordering::SeqCst);
            if let Err(e) = found {
                log::debug!("rate limit redis store: Sentinel lookup failed: {e}");
            }
        });
    }

    /// Ask Sentinel for the master and connect to it (bounded).
    pub async fn discover(&self) -> Result<(), String> {
        let Kind::Sentinel(sentinel) = &self.kind else {
            return Ok(());
        };
        let limit = (self.timeout * 20).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let lookup = async {
            let mut s = sentinel.lock().await;
            s.async_get_client().await
        };
        let client = tokio::time::timeout(limit, lookup)
            .await
            .map_err(|_| format!("Sentinel did not answer within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        let addr = client.get_connection_info().addr().to_string();
        let conn = Arc::new(Conn::Single(manager(client, self.timeout)?));
        let old = self.current.swap(Some(conn));
        if old.is_none() {
            log::info!("rate limit redis store: Sentinel names {addr} as the master");
        } else {
            log::warn!("rate limit redis store: following the master to {addr}");
        }
        Ok(())
    }

    /// Whether the connection is to a Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }
}

/// A connection manager that makes no retries of its own: a refused connection is an
/// error at once, and the next request tries again.
fn manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager, String> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("not inside a Tokio runtime".to_string());
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())
}
