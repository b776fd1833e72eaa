//! An upstream that records every byte it receives, per connection, and answers each
//! complete HTTP/1.1 request (head plus a `Content-Length` or chunked body) with a small
//! keep-alive `200` — or with a huge head, for the response-head limit. The tests read
//! what it saw: the raw bytes, and how many requests were complete.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Seen {
    /// Raw bytes of each connection, in accept order.
    connections: Vec<Vec<u8>>,
    /// Complete requests answered.
    complete: usize,
}

pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

/// How the recorder answers.
#[derive(Clone, Copy)]
pub enum Answer {
    Ok,
    /// A `200` whose head carries a header of this many bytes.
    HugeHead(usize),
    /// A `200` after this long.
    Slow(Duration),
}

impl Recorder {
    pub fn start(answer: Answer) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let seen = shared.clone();
                let index = {
                    let mut s = seen.lock().expect("recorder lock");
                    s.connections.push(Vec::new());
                    s.connections.len() - 1
                };
                std::thread::spawn(move || serve(conn, index, &seen, answer));
            }
        });
        Recorder { addr, seen }
    }

    /// Complete requests it received (and answered).
    pub fn complete(&self) -> usize {
        self.seen.lock().expect("recorder lock").complete
    }

    /// Everything received, all connections, as text.
    pub fn text(&self) -> String {
        let s = self.seen.lock().expect("recorder lock");
        s.connections
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n--- next connection ---\n")
    }

    /// Request heads received (lines that start a request, on any connection).
    pub fn heads(&self) -> usize {
        let s = self.seen.lock().expect("recorder lock");
        s.connections
            .iter()
            .map(|c| {
                let t = String::from_utf8_lossy(c);
                t.matches(" HTTP/1.1\r\n").count()
            })
            .sum()
    }
}

fn serve(mut conn: TcpStream, index: usize, seen: &Mutex<Seen>, answer: Answer) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Complete requests in the buffer?
        while let Some(used) = complete_request(&buf) {
            buf.drain(..used);
            seen.lock().expect("recorder lock").complete += 1;
            let reply = match answer {
                Answer::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                Answer::HugeHead(n) => {
                    let mut r = b"HTTP/1.1 200 OK\r\nx-huge: ".to_vec();
                    r.extend(std::iter::repeat_n(b'a', n));
                    r.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
                    r
                }
                Answer::Slow(d) => {
                    std::thread::sleep(d);
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
                }
            };
            if conn.write_all(&reply).is_err() {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                seen.lock().expect("recorder lock").connections[index]
                    .extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The length of the first complete request in `buf`, if there is one.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Walk the chunks: size line, data, CRLF; the last chunk and the trailer end.
        let mut at = end;
        loop {
            let eol = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let size_text = String::from_utf8_lossy(&buf[at..eol]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at = eol + 2;
            if size == 0 {
                let trailer_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
                return Some(trailer_end + 2);
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            at += size + 2;
        }
    }
    let len = header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= end + len).then_some(end + len)
}
