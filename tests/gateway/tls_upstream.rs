//! An HTTPS upstream for the tests: rustls with a certificate made by [`super::pki`],
//! optionally requiring a client certificate, speaking HTTP/1.1 or HTTP/2 (by ALPN).
//! Every answer is 200 with what the upstream saw: `x-upstream` (its name), `x-alpn`,
//! `x-sni` and `x-client-cert` (`yes` when the client presented one).

#![allow(dead_code)]

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct TlsUpstream {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    handshakes: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct TlsOptions<'a> {
    pub name: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
    /// Require a client certificate issued by this CA.
    pub client_ca: Option<&'a str>,
    /// Offer HTTP/2 by ALPN (else HTTP/1.1 only).
    pub h2: bool,
    pub bind: &'a str,
}

impl TlsUpstream {
    pub fn start(o: TlsOptions<'_>) -> TlsUpstream {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(o.cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(o.key).expect("key file");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match o.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).expect("ca file") {
                    roots.add(c.expect("ca cert")).expect("add ca");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).expect("server config");
        config.alpn_protocols = if o.h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind(o.bind).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let handshakes = Arc::new(AtomicU64::new(0));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let name = o.name.to_string();
        let (req, hs) = (requests.clone(), handshakes.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stop_rx => return,
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    };
                    let (acceptor, name, req, hs) =
                        (acceptor.clone(), name.clone(), req.clone(), hs.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        hs.fetch_add(1, Ordering::SeqCst);
                        let (_, conn) = tls.get_ref();
                        let alpn = conn
                            .alpn_protocol()
                            .map(|a| String::from_utf8_lossy(a).into_owned());
                        let sni = conn.server_name().unwrap_or("").to_string();
                        let client = if conn.peer_certificates().is_some() {
                            "yes"
                        } else {
                            "no"
                        };
                        let seen = Seen {
                            name,
                            alpn: alpn.clone().unwrap_or_default(),
                            sni,
                            client,
                        };
                        if alpn.as_deref() == Some("h2") {
                            serve_h2(tls, seen, req).await;
                        } else {
                            serve_h1(tls, seen, req).await;
                        }
                    });
                }
            });
        });
        TlsUpstream {
            addr,
            requests,
            handshakes,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes (one per connection the gateway made).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Seen {
    name: String,
    alpn: String,
    sni: String,
    client: &'static str,
}

async fn serve_h1<S>(mut s: S, seen: Seen, requests: Arc<AtomicU64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + len);
        requests.fetch_add(1, Ordering::SeqCst);
        let body = seen.name.as_bytes();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-upstream: {}\r\nx-alpn: {}\r\nx-sni: {}\r\nx-client-cert: {}\r\n\r\n",
            body.len(),
            seen.name,
            seen.alpn,
            seen.sni,
            seen.client
        );
        if s.write_all(resp.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
            return;
        }
        let _ = s.flush().await;
    }
}

async fn serve_h2<S>(s: S, seen: Seen, requests: Arc<AtomicU64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((_req, mut respond))) = conn.accept().await {
        requests.fetch_add(1, Ordering::SeqCst);
        let resp = http::Response::builder()
            .status(200)
            .header("x-upstream", seen.name.as_str())
            .header("x-alpn", seen.alpn.as_str())
            .header("x-sni", seen.sni.as_str())
            .header("x-client-cert", seen.client)
            .body(())
            .expect("response");
        if let Ok(mut send) = respond.send_response(resp, false) {
            let _ = send.send_data(Bytes::from(seen.name.clone()), true);
        }
    }
}
