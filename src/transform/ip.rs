//! Per-route client IP allow / deny lists (`allow_ips`, `deny_ips`).

use crate::config::error::ConfigError;
use ipnet::{IpNet, Ipv4Net};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Compiled allow / deny lists. Deny is checked first; then, when an allow list is
/// configured, the client must match it.
#[derive(Debug, Clone)]
pub struct IpRules {
    allow: Option<NetSet>,
    deny: NetSet,
}

/// A set of networks grouped by prefix length: each group is a sorted list of network
/// addresses, so a lookup is one mask and one binary search per distinct prefix length
/// (at most 33 for IPv4, 129 for IPv6, usually a handful), whatever the list size.
#[derive(Debug, Clone, Default)]
struct NetSet {
    v4: Vec<(u8, Vec<u32>)>,
    v6: Vec<(u8, Vec<u128>)>,
}

fn mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl NetSet {
    fn new(nets: &[IpNet]) -> Self {
        let mut v4: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
        let mut v6: BTreeMap<u8, BTreeSet<u128>> = BTreeMap::new();
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let bits = u32::from(n.network());
                    v4.entry(n.prefix_len()).or_default().insert(bits);
                }
                IpNet::V6(n) => {
                    let bits = u128::from(n.network());
                    v6.entry(n.prefix_len()).or_default().insert(bits);
                }
            }
        }
        NetSet {
            v4: v4
                .into_iter()
                .map(|(l, s)| (l, s.into_iter().collect()))
                .collect(),
            v6: v6
                .into_iter()
                .map(|(l, s)| (l, s.into_iter().collect()))
                .collect(),
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                self.v4
                    .iter()
                    .any(|(len, nets)| nets.binary_search(&(bits & mask_v4(*len))).is_ok())
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                self.v6
                    .iter()
                    .any(|(len, nets)| nets.binary_search(&(bits & mask_v6(*len))).is_ok())
            }
        }
    }
}

/// `::ffff:10.0.0.1` is `10.0.0.1`: dual-stack listeners report IPv4 clients this way,
/// and lists are written in IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Parse `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128). Host bits
/// must be zero (`10.1.2.3/8` is refused with a hint: it usually means a mistyped
/// address or prefix). An IPv4-mapped network (`::ffff:10.0.0.0/104`) becomes IPv4.
fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    let net = if t.contains('/') {
        let net: IpNet = t.parse().map_err(|_| invalid(s))?;
        if net.addr() != net.network() {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        net
    } else {
        IpNet::from(t.parse::<IpAddr>().map_err(|_| invalid(s))?)
    };
    if let IpNet::V6(n) = net {
        if let Some(v4) = n
            .network()
            .to_ipv4_mapped()
            .filter(|_| n.prefix_len() >= 96)
        {
            let v4 = Ipv4Net::new(v4, n.prefix_len() - 96).map_err(|_| invalid(s))?;
            return Ok(IpNet::V4(v4));
        }
    }
    Ok(net)
}

fn invalid(s: &str) -> String {
    format!("invalid IP address or CIDR {s:?} (expected e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)")
}

fn parse_list(list: &[String], at: &str, errors: &mut Vec<ConfigError>) -> NetSet {
    let mut nets = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        match parse_net(entry) {
            Ok(n) => nets.push(n),
            Err(e) => errors.push(ConfigError::new(format!("{at}[{i}]"), e)),
        }
    }
    NetSet::new(&nets)
}

/// Compile a route's `allow_ips` / `deny_ips`. `path` is the route's path
/// (`routes[0]`); errors point to entries (`routes[0].allow_ips[2]`). `Ok(None)` when
/// neither list restricts anything. An empty `allow_ips` is an error: it would refuse
/// every client, which is never what omitting the entries meant.
pub fn build_ip_rules(
    allow: Option<&[String]>,
    deny: Option<&[String]>,
    path: &str,
) -> Result<Option<IpRules>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if allow.is_some_and(<[String]>::is_empty) {
        errors.push(ConfigError::new(
            format!("{path}.allow_ips"),
            "empty list would refuse every client; remove the key to allow all",
        ));
    }
    let allow = allow.map(|l| parse_list(l, &format!("{path}.allow_ips"), &mut errors));
    let deny = parse_list(
        deny.unwrap_or(&[]),
        &format!("{path}.deny_ips"),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    if allow.is_none() && deny.v4.is_empty() && deny.v6.is_empty() {
        return Ok(None);
    }
    Ok(Some(IpRules { allow, deny }))
}

impl IpRules {
    /// May this client use the route? Deny wins over allow.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.deny.contains(ip) {
            return false;
        }
        self.allow.as_ref().is_none_or(|a| a.contains(ip))
    }
}
