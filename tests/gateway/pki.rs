//! Certificates made at test time (rcgen): a CA, server certificates for names and IPs,
//! expired ones, client certificates. Files are written as PEM into the test's directory.

#![allow(dead_code)]

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};

pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub ca_file: PathBuf,
}

/// A certificate and key on disk.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// As x509-parser prints it (`01:2a`), for checking which one a server sent.
    pub serial: String,
}

impl Issued {
    pub fn cert(&self) -> &str {
        self.cert.to_str().expect("utf-8 path")
    }
    pub fn key(&self) -> &str {
        self.key.to_str().expect("utf-8 path")
    }
}

impl Pki {
    /// A new CA called `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        Pki {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_file,
        }
    }

    pub fn ca(&self) -> &str {
        self.ca_file.to_str().expect("utf-8 path")
    }

    /// A server certificate for these names (DNS names or IPs).
    pub fn server(&self, stem: &str, names: &[&str], serial: u64) -> Issued {
        self.issue(stem, names, serial, false, false)
    }

    /// A server certificate that expired in 2020.
    pub fn expired_server(&self, stem: &str, names: &[&str], serial: u64) -> Issued {
        self.issue(stem, names, serial, false, true)
    }

    /// A client certificate (for mutual TLS).
    pub fn client(&self, stem: &str, serial: u64) -> Issued {
        self.issue(stem, &[], serial, true, false)
    }

    fn issue(
        &self,
        stem: &str,
        names: &[&str],
        serial: u64,
        client: bool,
        expired: bool,
    ) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2019, 1, 1);
            params.not_after = date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_path = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).expect("parse");
        Issued {
            cert: cert_path,
            key: key_path,
            serial: parsed.raw_serial_as_string(),
        }
    }
}
