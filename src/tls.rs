//! TLS material: reading PEM certificates and keys (with a clear error naming the file),
//! the facts the gateway reports about a certificate, the listener's certificate
//! resolver (chosen by SNI, swapped whole on reload), and the per-service upstream
//! client settings Pingora's connector takes.
//!
//! Everything here uses rustls with the ring provider, the one Pingora's listeners and
//! connectors install.

use arc_swap::ArcSwap;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Every certificate in a PEM file, each checked to be X.509.
pub fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let der = item.map_err(|e| format!("{path:?} is not a PEM certificate file: {e}"))?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("{path:?} holds a certificate that does not parse: {e}"))?;
        certs.push(der);
    }
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{path:?} holds no usable PEM private key: {e}"))
}

/// Which file of a certificate and key pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert_path: &str, key_path: &str) -> Result<CertifiedKey, (Part, String)> {
    let chain = read_certs(cert_path).map_err(|e| (Part::Cert, e))?;
    let key = read_key(key_path).map_err(|e| (Part::Key, e))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        let msg = match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("{key_path:?} is not the private key of the certificate in {cert_path:?}")
            }
            e => format!("cannot use {key_path:?} with {cert_path:?}: {e}"),
        };
        (Part::Key, msg)
    })
}

/// What the gateway reports about a certificate: its expiry (unix seconds) and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub not_after: i64,
    pub serial: String,
}

pub fn facts(der: &CertificateDer<'_>) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(CertFacts {
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// A listener certificate with the names it answers for.
#[derive(Clone)]
pub struct ServedCert {
    /// Exact names and `*.example.com` patterns (lower-case); empty for the default.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    pub facts: CertFacts,
}

/// The certificates of one listener: chosen by SNI (exact name first, then a
/// `*.domain` pattern), else the default. Swapped whole when a reload re-reads them, so
/// handshakes in progress keep the set they started with.
#[derive(Debug)]
pub struct CertResolver {
    set: ArcSwap<CertSet>,
}

#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl CertSet {
    fn new(certs: &[ServedCert]) -> Self {
        let mut set = CertSet {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: None,
        };
        for c in certs {
            if c.names.is_empty() {
                set.default = Some(c.key.clone());
            }
            for name in &c.names {
                match name.strip_prefix("*.") {
                    Some(domain) => set.wildcard.entry(domain.to_string()),
                    None => set.exact.entry(name.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        // Without an entry for everything else, the first certificate is the default.
        if set.default.is_none() {
            set.default = certs.first().map(|c| c.key.clone());
        }
        set
    }
}

impl CertResolver {
    pub fn new(certs: &[ServedCert]) -> Self {
        CertResolver {
            set: ArcSwap::from_pointee(CertSet::new(certs)),
        }
    }

    /// Serve these certificates to new handshakes from now on.
    pub fn install(&self, certs: &[ServedCert]) {
        self.set.store(Arc::new(CertSet::new(certs)));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        if let Some(name) = hello.server_name() {
            // rustls hands the name over lower-cased.
            if let Some(k) = set.exact.get(name) {
                return Some(k.clone());
            }
            if let Some(k) = name
                .split_once('.')
                .and_then(|(_, domain)| set.wildcard.get(domain))
            {
                return Some(k.clone());
            }
        }
        set.default.clone()
    }
}

/// The certificate resolver of every TLS listener, by listen address.
#[derive(Debug, Clone, Default)]
pub struct ListenerCerts {
    by_address: HashMap<String, Arc<CertResolver>>,
}

impl ListenerCerts {
    pub fn insert(&mut self, address: &str, resolver: Arc<CertResolver>) {
        self.by_address.insert(address.to_string(), resolver);
    }

    pub fn get(&self, address: &str) -> Option<Arc<CertResolver>> {
        self.by_address.get(address).cloned()
    }
}

/// `services.<name>.tls.alpn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    H1,
    H2,
    H2H1,
}

/// A service's upstream TLS settings, with the CA and client certificate loaded.
#[derive(Clone)]
pub struct UpstreamTls {
    /// SNI and the name the certificate must carry; `None`: each upstream's host name.
    pub sni: Option<String>,
    /// Check the certificate chain, expiry and name.
    pub verify: bool,
    /// Trust these roots instead of the system's.
    pub ca: Option<Arc<CaType>>,
    /// Present this certificate (mutual TLS).
    pub client: Option<Arc<CertKey>>,
    pub alpn: Alpn,
    /// Identifies the material (CA, client certificate and key) and settings: pooled
    /// connections are only reused by peers with the same fingerprint.
    pub fingerprint: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify", &self.verify)
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.client.is_some())
            .field("alpn", &self.alpn)
            .finish()
    }
}

/// Settings compare by what they say and the bytes of the files they loaded.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Load and check the files; `path` names the setting in errors.
    pub fn load(
        sni: Option<String>,
        verify: bool,
        ca_file: Option<&str>,
        client: Option<(&str, &str)>,
        alpn: Alpn,
    ) -> Result<UpstreamTls, (&'static str, String)> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&sni, verify, alpn).hash(&mut h);
        let ca = match ca_file {
            None => None,
            Some(path) => {
                let certs = read_certs(path).map_err(|e| ("ca_file", e))?;
                let wrapped: Vec<WrappedX509> = certs
                    .iter()
                    .map(|der| {
                        der.as_ref().hash(&mut h);
                        WrappedX509::new(der.to_vec(), parse_x509)
                    })
                    .collect();
                Some(Arc::<CaType>::from(wrapped))
            }
        };
        let client = match client {
            None => None,
            Some((cert, key)) => {
                let checked = certified_key(cert, key).map_err(|(part, e)| match part {
                    Part::Cert => ("client_cert", e),
                    Part::Key => ("client_key", e),
                })?;
                let key_der = read_key(key).map_err(|e| ("client_key", e))?;
                let chain: Vec<Vec<u8>> = checked.cert.iter().map(|c| c.to_vec()).collect();
                chain.hash(&mut h);
                key_der.secret_der().hash(&mut h);
                Some(Arc::new(CertKey::new(chain, key_der.secret_der().to_vec())))
            }
        };
        Ok(UpstreamTls {
            sni,
            verify,
            ca,
            client,
            alpn,
            fingerprint: h.finish(),
        })
    }
}
