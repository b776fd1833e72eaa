//! A deliberately small HTTP/1.1 GET client for JWKS documents: one request per
//! connection (`Connection: close`), Content-Length, chunked or read-to-EOF bodies, a hard
//! size cap and an overall deadline. https goes through tokio-rustls with the platform's
//! root certificates and rustls' `ring` provider, chosen explicitly so we never depend on
//! (or fight over) a process-wide rustls provider. Redirects are not followed: a JWKS URL
//! should be the final one, and following redirects off an IdP is a needless risk.

use rustls_pki_types::ServerName;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Response heads bigger than this are refused.
const MAX_HEAD: usize = 16 * 1024;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub tls: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    pub(crate) fn parse(s: &str) -> Result<Url, String> {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &s[8..])
        } else if lower.starts_with("http://") {
            (false, &s[7..])
        } else {
            return Err("must be an http:// or https:// URL".into());
        };
        let (authority, target) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let target = target.split('#').next().unwrap_or("");
        let target = match target.chars().next() {
            Some('/') => target.to_string(),
            _ => format!("/{target}"),
        };
        if authority.contains('@') {
            return Err("must not contain user info (user@host)".into());
        }
        let (host, port, v6) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("has an unterminated IPv6 address")?;
            (h, after, true)
        } else {
            match authority.rfind(':') {
                Some(i) => (&authority[..i], &authority[i..], false),
                None => (authority, "", false),
            }
        };
        let port = match port {
            "" => {
                if tls {
                    443
                } else {
                    80
                }
            }
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or("has an invalid port")?,
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b) || (v6 && b == b':'));
        if !host_ok {
            return Err("has no valid host".into());
        }
        // Everything goes into the request line verbatim: no spaces or control bytes.
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("has spaces or control characters in its path".into());
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            target,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// For logs: without the query string, which sometimes carries API keys.
    pub(crate) fn redacted(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.target.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.host_header())
    }
}

/// GET `url`; the body of a 200 response, at most `max_body` bytes, within `timeout`.
pub(crate) async fn get(url: &Url, timeout: Duration, max_body: usize) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(timeout, get_inner(url, max_body)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f32())),
    }
}

async fn get_inner(url: &Url, max_body: usize) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/jwk-set+json, application/json\r\n\
         User-Agent: gatehouse-jwks\r\nConnection: close\r\n\r\n",
        url.target,
        url.host_header()
    );
    if url.tls {
        let config = tls_config()?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| format!("invalid TLS server name {:?}", url.host))?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        exchange(&mut tls, &request, max_body).await
    } else {
        let mut tcp = tcp;
        exchange(&mut tcp, &request, max_body).await
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_native_certs::load_native_certs()
                .map_err(|e| format!("cannot load the system root certificates: {e}"))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err("no usable system root certificates".to_string());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send request: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot send request: {e}"))?;
    // Chunk framing adds a little; allow for it without letting the body exceed the cap.
    let raw_limit = max_body + MAX_HEAD + max_body / 8 + 1024;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers often close TLS without close_notify after `Connection: close`.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("read failed: {e}")),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(body) = parse_response(&buf, n == 0, max_body)? {
            return Ok(body);
        }
        if buf.len() > raw_limit {
            return Err(format!("response is larger than {max_body} bytes"));
        }
    }
}

/// Parse what has been read so far. `Ok(None)`: need more bytes (never when `eof`).
pub(crate) fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<Vec<u8>>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response header too large".into());
        }
        if eof {
            return Err("connection closed before a complete response header".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "invalid response header")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || status.len() != 3 {
        return Err("not an HTTP/1.x response".into());
    }
    if status != "200" {
        return Err(format!("HTTP status {status} (expected 200)"));
    }
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("invalid response header")?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| "invalid Content-Length")?;
            if content_length.is_some_and(|c| c != n) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || value.contains(',') {
                return Err(format!("unsupported Transfer-Encoding {value:?}"));
            }
            chunked = true;
        }
    }
    let body = &buf[head_end + 4..];
    if chunked {
        return match decode_chunked(body, max_body)? {
            Some(b) => Ok(Some(b)),
            None if eof => Err("connection closed inside a chunked body".into()),
            None => Ok(None),
        };
    }
    if let Some(n) = content_length {
        if n > max_body {
            return Err(format!("response is larger than {max_body} bytes"));
        }
        return match body.get(..n) {
            Some(b) => Ok(Some(b.to_vec())),
            None if eof => Err("connection closed before the end of the body".into()),
            None => Ok(None),
        };
    }
    if body.len() > max_body {
        return Err(format!("response is larger than {max_body} bytes"));
    }
    Ok(eof.then(|| body.to_vec()))
}

/// Decode a complete chunked body; `Ok(None)` if more bytes are needed.
fn decode_chunked(data: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = find(&data[pos..], b"\r\n") else {
            if data.len() - pos > 1024 {
                return Err("invalid chunk size line".into());
            }
            return Ok(None);
        };
        let line = &data[pos..pos + line_len];
        let size_hex = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_hex = std::str::from_utf8(size_hex)
            .map_err(|_| "invalid chunk size")?
            .trim();
        if size_hex.is_empty()
            || size_hex.len() > 8
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("invalid chunk size".into());
        }
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "invalid chunk size")?;
        pos += line_len + 2;
        if size == 0 {
            // Optional trailers, then the empty line.
            loop {
                let Some(len) = find(&data[pos..], b"\r\n") else {
                    return Ok(None);
                };
                if len == 0 {
                    return Ok(Some(out));
                }
                pos += len + 2;
            }
        }
        if out.len() + size > max_body {
            return Err(format!("response is larger than {max_body} bytes"));
        }
        let Some(chunk) = data.get(pos..pos + size + 2) else {
            return Ok(None);
        };
        if &chunk[size..] != b"\r\n" {
            return Err("invalid chunk terminator".into());
        }
        out.extend_from_slice(&chunk[..size]);
        pos += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("HTTPS://idp.example.com/.well-known/jwks.json?a=1#frag").expect("ok");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "idp.example.com", 443)
        );
        assert_eq!(u.target, "/.well-known/jwks.json?a=1");
        assert_eq!(
            u.redacted(),
            "https://idp.example.com/.well-known/jwks.json"
        );
        let u = Url::parse("http://[::1]:8080").expect("ok");
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(u.host_header(), "[::1]:8080");
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://h/a b",
            "http://[::1/",
            "jwks.json",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let ok = |raw: &[u8], eof| parse_response(raw, eof, 100);
        let r = ok(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello+extra",
            false,
        );
        assert_eq!(r, Ok(Some(b"hello".to_vec())));
        assert_eq!(
            ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false),
            Ok(None)
        );
        assert!(ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true).is_err());
        assert_eq!(
            ok(b"HTTP/1.0 200 OK\r\n\r\nbody", true),
            Ok(Some(b"body".to_vec()))
        );
        assert_eq!(ok(b"HTTP/1.0 200 OK\r\n\r\nbody", false), Ok(None));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(ok(chunked, false), Ok(Some(b"wikipedia".to_vec())));
        assert_eq!(ok(&chunked[..chunked.len() - 2], false), Ok(None));
        assert!(ok(&chunked[..chunked.len() - 2], true).is_err());
        let e = ok(b"HTTP/1.1 500 Oops\r\n\r\n", false).expect_err("500");
        assert!(e.contains("500"), "{e}");
        for garbage in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
        ] {
            assert!(
                ok(garbage, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        let big = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 101]].concat();
        assert!(ok(&big, false).is_err());
        assert!(ok(&vec![b'a'; MAX_HEAD + 1], false).is_err());
    }
}
