//! The shared buffer behind every access line, the thread that flushes it, and where it
//! goes: stderr, or `server.access_log.path` (reopened on SIGUSR1 for logrotate).
//!
//! A file is opened `O_APPEND` (several processes — an old and a new one during a binary
//! upgrade — may write it; each batch is one `write(2)` of whole lines). Reopening after
//! logrotate moved it: the batch being written finishes in the old file, every later
//! one goes to the new file, so no line is lost or split.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Longest a line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this full is written at once.
pub const FLUSH_BYTES: usize = 32 * 1024;

/// Whether the writer thread runs (else every push writes at once).
static WRITER: AtomicBool = AtomicBool::new(false);
/// Whether lines go to a file (then `RUST_LOG` does not silence them).
static TO_FILE: AtomicBool = AtomicBool::new(false);

pub(super) fn to_file() -> bool {
    TO_FILE.load(Ordering::Relaxed)
}

/// The shared buffer and the thread that flushes it (started by the first line, so
/// after a daemon's fork).
struct Sink {
    buf: Mutex<Vec<u8>>,
    /// Signalled when the buffer goes from empty to not.
    filled: Condvar,
}

/// Held while writing, with the spare buffer the full one is swapped into, so batches
/// reach their destination whole and in order. Apart from [`Sink`]: choosing the file
/// at start must not start the writer thread before Pingora daemonizes.
static OUT: Mutex<Out> = Mutex::new(Out {
    spare: Vec::new(),
    file: None,
    failing: false,
});

struct Out {
    spare: Vec<u8>,
    /// `None`: stderr.
    file: Option<(PathBuf, File)>,
    /// A failed write is reported once until writes succeed again.
    failing: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    static STARTED: std::sync::Once = std::sync::Once::new();
    let s = SINK.get_or_init(|| Sink {
        buf: Mutex::new(Vec::with_capacity(FLUSH_BYTES * 2)),
        filled: Condvar::new(),
    });
    STARTED.call_once(|| {
        extern "C" fn flush_at_exit() {
            sink().flush();
        }
        // SAFETY: registers a plain `extern "C" fn()`, as atexit(3) requires.
        unsafe {
            libc::atexit(flush_at_exit);
        }
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                let s = sink();
                {
                    let mut buf = lock(&s.buf);
                    while buf.is_empty() {
                        buf = s.filled.wait(buf).unwrap_or_else(|e| e.into_inner());
                    }
                }
                std::thread::sleep(FLUSH_INTERVAL);
                s.flush();
            });
        match spawned {
            Ok(_) => WRITER.store(true, Ordering::Release),
            Err(e) => {
                log::error!("access log: no writer thread ({e}); lines are written as they come")
            }
        }
    });
    s
}

pub(super) fn push(line: &[u8]) {
    sink().push(line);
}

/// Open `path` for appending (created `0640` if missing).
pub fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Send lines to `path` (or back to stderr with `None`) from the next batch on. Opening
/// a different file than the current one first: on error nothing changes.
pub fn set_path(path: Option<&Path>) -> std::io::Result<()> {
    let mut out = lock(&OUT);
    let current = out.file.as_ref().map(|(p, _)| p.as_path());
    if current == path {
        return Ok(());
    }
    let file = match path {
        Some(p) => Some((p.to_path_buf(), open(p)?)),
        None => None,
    };
    TO_FILE.store(file.is_some(), Ordering::Relaxed);
    out.file = file;
    Ok(())
}

/// SIGUSR1: reopen the file by its path (logrotate moved it away). Lines buffered so far
/// are written to the old file first. On error the old file stays in use.
pub fn reopen() -> std::io::Result<Option<PathBuf>> {
    if let Some(s) = SINK.get() {
        s.flush();
    }
    let mut out = lock(&OUT);
    let Some((path, _)) = &out.file else {
        return Ok(None);
    };
    let path = path.clone();
    let file = open(&path)?;
    out.file = Some((path.clone(), file));
    Ok(Some(path))
}

impl Sink {
    fn push(&self, line: &[u8]) {
        let mut buf = lock(&self.buf);
        let was_empty = buf.is_empty();
        buf.extend_from_slice(line);
        let full = buf.len() >= FLUSH_BYTES || !WRITER.load(Ordering::Acquire);
        drop(buf);
        if full {
            self.flush();
        } else if was_empty {
            self.filled.notify_one();
        }
    }

    fn flush(&self) {
        let mut guard = lock(&OUT);
        let out = &mut *guard;
        std::mem::swap(&mut *lock(&self.buf), &mut out.spare);
        if out.spare.is_empty() {
            return;
        }
        let written = match &mut out.file {
            Some((_, f)) => f.write_all(&out.spare),
            None => std::io::stderr().lock().write_all(&out.spare),
        };
        match written {
            // The batch is dropped: a full disk must not grow the buffer without bound.
            Err(e) if !out.failing => {
                out.failing = true;
                log::error!("access log: write failed ({e}); lines are dropped until it works");
            }
            Err(_) => {}
            Ok(()) => out.failing = false,
        }
        out.spare.clear();
        if out.spare.capacity() > FLUSH_BYTES * 8 {
            out.spare.shrink_to(FLUSH_BYTES * 2);
        }
    }
}

/// A panic while holding a buffer cannot leave it half-valid (it holds whole lines).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
