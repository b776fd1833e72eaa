//! Where a service's members come from: fixed addresses, every A/AAAA record of a name,
//! and the targets of an SRV name, as one Pingora [`ServiceDiscovery`] behind the
//! service's `Backends`. `Backends::update` runs it and keeps the health of members
//! that stay; a failed or empty lookup changes nothing (the last good set stays).

use super::config::{ServiceConfig, Target};
use crate::dns::{self, ResolverSpec};
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::{Error, ErrorType, Result};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// How a member was found (`/admin/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Static,
    /// An A/AAAA record of this name.
    A(Arc<str>),
    /// A target of this SRV name.
    Srv(Arc<str>),
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::A(_) => "A",
            Source::Srv(_) => "SRV",
        }
    }

    /// The name it was resolved from.
    pub fn name(&self) -> Option<&str> {
        match self {
            Source::Static => None,
            Source::A(n) | Source::Srv(n) => Some(n),
        }
    }
}

/// What the gateway knows of a member beyond its address, carried in `Backend::ext`.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub source: Source,
    /// Its `upstream` metric label: the configured address of a fixed upstream, else
    /// the resolved `IP:PORT`.
    pub label: Arc<str>,
    /// The host name for SNI and certificate checks (a fixed IP has none).
    pub host: Option<Arc<str>>,
    /// Fixed upstreams keep their file order; resolved ones follow, by address.
    pub order: usize,
}

/// The result of the last lookups, for `/admin/status` and the refresh loop.
#[derive(Debug, Default, Clone)]
pub struct LookupState {
    /// The last time every lookup succeeded.
    pub refreshed: Option<SystemTime>,
    /// The shortest TTL of that answer: the next lookup is due by then.
    pub ttl: Option<Duration>,
    /// The last failure, until a lookup succeeds again.
    pub error: Option<String>,
}

pub struct Discovery {
    fixed: Vec<Backend>,
    names: Vec<(String, u16, u32)>,
    srv: Option<String>,
    resolver: ResolverSpec,
    pub state: Arc<Mutex<LookupState>>,
}

impl Discovery {
    pub fn new(config: &ServiceConfig, resolver: &ResolverSpec) -> Result<Self, String> {
        let mut fixed = Vec::new();
        let mut names = Vec::new();
        for (order, u) in config.upstreams.iter().enumerate() {
            match &u.target {
                Target::Addr(addr) => {
                    let info = MemberInfo {
                        source: Source::Static,
                        label: u.address.as_str().into(),
                        host: None,
                        order,
                    };
                    fixed.push(backend(*addr, u.weight, info)?);
                }
                Target::Name { host, port } => names.push((host.clone(), *port, u.weight)),
            }
        }
        Ok(Discovery {
            fixed,
            names,
            srv: config.srv.clone(),
            resolver: resolver.clone(),
            state: Arc::default(),
        })
    }

    /// Whether anything here comes from DNS.
    pub fn is_dynamic(&self) -> bool {
        !self.names.is_empty() || self.srv.is_some()
    }

    /// Every member, or why the lookups failed.
    async fn lookup(&self) -> Result<(BTreeSet<Backend>, Option<u32>), String> {
        let mut set: BTreeSet<Backend> = self.fixed.iter().cloned().collect();
        if !self.is_dynamic() {
            return Ok((set, None));
        }
        let resolver = dns::resolver(&self.resolver)?;
        let mut min_ttl: Option<u32> = None;
        let mut resolved: Vec<Backend> = Vec::new();
        for (host, port, weight) in &self.names {
            let ips = dns::addresses(&resolver, host).await?;
            if ips.is_empty() {
                return Err(format!("{host}: no A or AAAA records"));
            }
            let source = Source::A(host.as_str().into());
            for (ip, ttl) in ips {
                min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
                let addr = SocketAddr::new(ip, *port);
                resolved.push(member(addr, *weight, source.clone(), host)?);
            }
        }
        if let Some(name) = &self.srv {
            let records = dns::srv(&resolver, name).await?;
            // Only the most preferred priority class is in use (RFC 2782).
            let best = records.iter().map(|r| r.priority).min();
            let source = Source::Srv(name.as_str().into());
            for r in records.iter().filter(|r| Some(r.priority) == best) {
                min_ttl = Some(min_ttl.map_or(r.ttl, |m| m.min(r.ttl)));
                for (ip, ttl) in dns::addresses(&resolver, &r.target).await? {
                    min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
                    // Weight 0 means "rarely" (RFC 2782): the smallest weight there is.
                    let weight = u32::from(r.weight.max(1));
                    let addr = SocketAddr::new(ip, r.port);
                    resolved.push(member(addr, weight, source.clone(), &r.target)?);
                }
            }
            if best.is_none() {
                return Err(format!("{name}: no SRV records"));
            }
        }
        resolved.sort_by_key(|b| b.addr.clone());
        let first = self.fixed.len();
        for (i, mut b) in resolved.into_iter().enumerate() {
            if let Some(info) = b.ext.get_mut::<MemberInfo>() {
                info.order = first + i;
            }
            set.insert(b);
        }
        Ok((set, min_ttl))
    }
}

fn backend(addr: SocketAddr, weight: u32, info: MemberInfo) -> Result<Backend, String> {
    let mut b = Backend::new_with_weight(&addr.to_string(), weight as usize)
        .map_err(|e| format!("upstream {addr}: {e}"))?;
    b.ext.insert(info);
    Ok(b)
}

fn member(addr: SocketAddr, weight: u32, source: Source, host: &str) -> Result<Backend, String> {
    let info = MemberInfo {
        source,
        label: addr.to_string().into(),
        host: Some(host.into()),
        order: 0,
    };
    backend(addr, weight, info)
}

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let result = self.lookup().await;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok((set, ttl)) => {
                *state = LookupState {
                    refreshed: Some(SystemTime::now()),
                    ttl: ttl.map(|t| Duration::from_secs(u64::from(t))),
                    error: None,
                };
                Ok((set, HashMap::new()))
            }
            Err(e) => {
                state.error = Some(e.clone());
                Error::e_explain(ErrorType::InternalError, e)
            }
        }
    }
}
