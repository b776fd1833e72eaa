//! DNS lookups for service discovery, through hickory-resolver: A/AAAA records of a
//! name and SRV records, each with the TTL the answer carried. The resolver's own cache
//! is off: discovery decides when to ask again.

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `server.resolver`: the DNS servers discovery asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverSpec {
    /// `/etc/resolv.conf` (search domains and `/etc/hosts` included).
    System,
    /// These servers (UDP, and TCP for truncated answers), nothing else.
    Servers(Vec<SocketAddr>),
}

/// One SRV answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot.
    pub target: String,
    pub ttl: u32,
}

/// A resolver for `spec`. Cheap; build one per discovery round so no connection outlives
/// the runtime that made it.
pub fn resolver(spec: &ResolverSpec) -> Result<TokioResolver, String> {
    let mut builder = match spec {
        ResolverSpec::System => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver settings: {e}"))?,
        ResolverSpec::Servers(addrs) => {
            let servers = addrs
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        }
    };
    let o = builder.options_mut();
    o.timeout = Duration::from_secs(2);
    o.attempts = 2;
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    o.cache_size = 0;
    o.try_tcp_on_error = true;
    if matches!(spec, ResolverSpec::Servers(_)) {
        o.use_hosts_file = ResolveHosts::Never;
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the resolver: {e}"))
}

/// Every A and AAAA record of `host`, with its TTL.
pub async fn addresses(r: &TokioResolver, host: &str) -> Result<Vec<(IpAddr, u32)>, String> {
    let lookup = r.lookup_ip(host).await.map_err(|e| describe(host, &e))?;
    let mut out: Vec<(IpAddr, u32)> = lookup
        .as_lookup()
        .answers()
        .iter()
        .filter_map(|rec| rec.data.ip_addr().map(|ip| (ip, rec.ttl)))
        .collect();
    if out.is_empty() {
        // From /etc/hosts: no records, the addresses alone.
        out = lookup.iter().map(|ip| (ip, 0)).collect();
    }
    out.sort();
    out.dedup_by_key(|(ip, _)| *ip);
    Ok(out)
}

/// The SRV records of `name`.
pub async fn srv(r: &TokioResolver, name: &str) -> Result<Vec<SrvRecord>, String> {
    let lookup = r.srv_lookup(name).await.map_err(|e| describe(name, &e))?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some(SrvRecord {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_string().trim_end_matches('.').to_string(),
                ttl: rec.ttl,
            }),
            _ => None,
        })
        .collect())
}

fn describe(name: &str, e: &NetError) -> String {
    if e.is_nx_domain() {
        format!("{name}: no such name")
    } else if e.is_no_records_found() {
        format!("{name}: no records")
    } else {
        format!("{name}: {e}")
    }
}
