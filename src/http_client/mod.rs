//! The gateway's outbound HTTP client, for requests the gateway makes on its own behalf
//! (JWKS documents today): reqwest over rustls with the ring provider (the one Pingora's
//! listeners and connectors use, so the process never carries two providers into a
//! handshake) and the system's root certificates. Proxies come from `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, as reqwest reads them; redirects are not
//! followed (an identity provider's key URL should be the final one).

use bytes::Bytes;
use reqwest::Url;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The process-wide client: one connection pool, one TLS configuration.
pub fn shared() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let tls = tls_config()?;
            reqwest::Client::builder()
                .tls_backend_preconfigured((*tls).clone())
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(5))
                .pool_idle_timeout(Duration::from_secs(30))
                .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// rustls with ring and the system roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured).
/// With no usable root certificate https requests fail with an unknown-issuer error;
/// plain http still works.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match rustls_native_certs::load_native_certs() {
        Ok(certs) => {
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                log::warn!("no usable system root certificates: https fetches will fail");
            }
        }
        Err(e) => log::warn!("cannot load the system root certificates: {e}"),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Check a configured `http://` or `https://` URL: a host, no user info, no spaces or
/// control characters (a URL with them is a typo, not something to percent-encode).
pub fn parse_url(s: &str) -> Result<Url, String> {
    if s.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("has spaces or control characters".into());
    }
    let url = Url::parse(s).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info (user@host)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no valid host".into());
    }
    if url.port() == Some(0) {
        return Err("has an invalid port".into());
    }
    Ok(url)
}

/// For logs: the URL without its query string, which sometimes carries API keys.
pub fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// GET `url` and return the body of a 200 answer: at most `max_body` bytes, all within
/// `timeout`. Anything else is an error that says what happened.
pub async fn get_body(
    url: &Url,
    accept: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<Bytes, String> {
    let fetch = async {
        let client = shared()?;
        let mut resp = client
            .get(url.clone())
            .header(http::header::ACCEPT, accept)
            .send()
            .await
            .map_err(describe)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        if resp.content_length().is_some_and(|n| n > max_body as u64) {
            return Err(format!("body larger than {max_body} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > max_body {
                return Err(format!("body larger than {max_body} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f32())),
    }
}

/// reqwest's error with its causes (its `Display` alone says only "error sending
/// request"); never the URL's query.
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests;
