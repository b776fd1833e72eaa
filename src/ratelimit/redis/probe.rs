//! What the configured Redis really is, asked at start and by `-t`: a Cluster node or a
//! Sentinel given as a plain `url` would otherwise be found out through traffic (every
//! key of another node's slots answered `on_error`; every script refused by Sentinel).
//! Uses connections of its own, so nothing it makes outlives the check.

use super::super::config::{RedisSettings, RedisTarget};
use std::time::Duration;

/// What a probe found: nothing wrong, something to warn about, or a configuration error.
pub enum Probe {
    Fine,
    Warning(String),
    Error(String),
}

const LIMIT: Duration = Duration::from_secs(2);

pub async fn probe(s: &RedisSettings) -> Probe {
    match tokio::time::timeout(LIMIT, inner(s)).await {
        Ok(p) => p,
        Err(_) => Probe::Warning(format!(
            "{} did not answer within {LIMIT:?}; decisions answer on_error until it does",
            describe(&s.target)
        )),
    }
}

fn describe(t: &RedisTarget) -> String {
    match t {
        RedisTarget::Standalone(url) => format!("Redis at {}", strip_auth(url)),
        RedisTarget::Cluster(nodes) => format!(
            "the Redis Cluster at {}",
            nodes
                .iter()
                .map(|n| strip_auth(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        RedisTarget::Sentinel { master, .. } => format!("the Sentinel master {master:?}"),
    }
}

/// A URL without user info (passwords stay out of messages).
fn strip_auth(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

async fn inner(s: &RedisSettings) -> Probe {
    let unreachable = |e: &dyn std::fmt::Display| {
        Probe::Warning(format!(
            "cannot reach {} ({e}); decisions answer on_error until it answers",
            describe(&s.target)
        ))
    };
    match &s.target {
        RedisTarget::Standalone(url) => {
            let client = match &s.ca_pem {
                None => redis::Client::open(url.as_str()),
                Some(ca) => redis::Client::build_with_tls(
                    url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca.clone()),
                    },
                ),
            };
            let mut conn = match client {
                Ok(c) => match c.get_multiplexed_async_connection().await {
                    Ok(conn) => conn,
                    Err(e) => return unreachable(&e),
                },
                Err(e) => return Probe::Error(format!("invalid url: {e}")),
            };
            let role: redis::RedisResult<redis::Value> =
                redis::cmd("ROLE").query_async(&mut conn).await;
            let role = match role {
                Ok(redis::Value::Array(items)) => match items.first() {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            if role == "sentinel" {
                return Probe::Error(format!(
                    "{} is a Redis Sentinel: use sentinel: {{ master: NAME, nodes: [{}] }}",
                    strip_auth(url),
                    strip_auth(url)
                ));
            }
            let info: redis::RedisResult<String> = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut conn)
                .await;
            if info.is_ok_and(|i| i.contains("cluster_enabled:1")) {
                return Probe::Error(format!(
                    "{} is a node of a Redis Cluster: use cluster: [{}, ...] (as a plain url, \
                     keys of the other nodes' slots would all answer on_error)",
                    strip_auth(url),
                    strip_auth(url)
                ));
            }
            if role == "slave" {
                return Probe::Warning(format!(
                    "{} is a replica: its keys are read-only, every decision would fail",
                    strip_auth(url)
                ));
            }
            Probe::Fine
        }
        RedisTarget::Cluster(nodes) => {
            let mut b = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                .connection_timeout(Duration::from_secs(1))
                .retries(0);
            if let Some(ca) = &s.ca_pem {
                b = b.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                });
            }
            let client = match b.build() {
                Ok(c) => c,
                Err(e) => return Probe::Error(format!("invalid cluster nodes: {e}")),
            };
            match client.get_async_connection().await {
                Ok(_) => Probe::Fine,
                Err(e) if e.to_string().contains("cluster support disabled") => {
                    Probe::Error(format!(
                        "{} is not a Redis Cluster: use url: instead",
                        describe(&s.target)
                    ))
                }
                Err(e) => unreachable(&e),
            }
        }
        RedisTarget::Sentinel { master, nodes } => {
            let client = redis::sentinel::SentinelClient::build(
                nodes.iter().map(String::as_str).collect(),
                master.as_str(),
                None,
                redis::sentinel::SentinelServerType::Master,
            );
            match client {
                Ok(mut c) => match c.async_get_client().await {
                    Ok(_) => Probe::Fine,
                    Err(e) => unreachable(&e),
                },
                Err(e) => Probe::Error(format!("invalid sentinel settings: {e}")),
            }
        }
    }
}
