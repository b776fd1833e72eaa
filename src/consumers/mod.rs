//! Consumers: the named clients (a partner, an app, a team) a request is made by, with
//! their groups and credentials ([`config`]), and the lookups the request path makes:
//! an API key to its consumer (one SHA-256 and one hash-map probe, whatever the number
//! of consumers), a basic-auth user name and password to its consumer (bcrypt/argon2 on
//! a blocking thread, at most [`MAX_HASHING`] at once, then a verified-credentials cache
//! so a repeat costs a SHA-256).
//!
//! Nothing here formats a key, a password or a hash into an error, a log line or a
//! `Debug` output.

pub mod config;

#[cfg(test)]
mod tests;

pub use config::{ConsumerConfig, ConsumersConfig, PasswordHash};

use http::HeaderValue;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Password hashes verified at once (each holds a blocking thread for ~50-100 ms): more
/// attempts wait, so a flood of wrong passwords cannot take every core.
pub const MAX_HASHING: usize = 4;
/// How long a verified user name and password is taken without hashing again.
const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Verified user name/password pairs remembered.
const VERIFIED_MAX: usize = 10_000;

/// One consumer, as the request path sees it.
#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Box<[Arc<str>]>,
    /// The `X-Consumer` value.
    pub header: HeaderValue,
    /// The `X-Consumer-Groups` value (comma-separated), when it has groups.
    pub groups_header: Option<HeaderValue>,
}

impl Consumer {
    pub fn in_any(&self, groups: &[Arc<str>]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

/// The keys are SHA-256 digests, already uniform: their first 8 bytes are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
    fn write_usize(&mut self, _: usize) {}
}

type DigestMap<V> = HashMap<[u8; 32], V, BuildHasherDefault<DigestHasher>>;

/// Every consumer of one config load, indexed by credential.
pub struct Consumers {
    list: Vec<Arc<Consumer>>,
    api_keys: DigestMap<usize>,
    basic: HashMap<String, (usize, PasswordHash)>,
    /// SHA-256(user length, user, password) → consumer index and when it was verified.
    verified: Mutex<DigestMap<(usize, Instant)>>,
    hashing: Arc<tokio::sync::Semaphore>,
}

/// Why a basic-auth check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicError {
    /// No `Authorization: Basic`, or not decodable.
    Missing,
    /// Unknown user or wrong password (the client is not told which).
    Invalid,
}

impl Consumers {
    pub fn new(config: &ConsumersConfig) -> Consumers {
        let mut c = Consumers {
            list: Vec::with_capacity(config.consumers.len()),
            api_keys: DigestMap::default(),
            basic: HashMap::new(),
            verified: Mutex::new(DigestMap::default()),
            hashing: Arc::new(tokio::sync::Semaphore::new(MAX_HASHING)),
        };
        for (i, cc) in config.consumers.iter().enumerate() {
            let groups: Box<[Arc<str>]> = cc.groups.iter().map(|g| Arc::from(g.as_str())).collect();
            let groups_header = (!groups.is_empty())
                .then(|| HeaderValue::from_str(&cc.groups.join(",")).ok())
                .flatten();
            c.list.push(Arc::new(Consumer {
                name: cc.name.as_str().into(),
                header: HeaderValue::from_str(&cc.name).unwrap_or(HeaderValue::from_static("")),
                groups,
                groups_header,
            }));
            for d in &cc.api_keys {
                c.api_keys.insert(*d, i);
            }
            if let Some((user, hash)) = &cc.basic {
                c.basic.insert(user.clone(), (i, hash.clone()));
            }
        }
        c
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The consumer holding this API key.
    pub fn by_api_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let digest = sha256(&[key]);
        let (stored, &i) = self.api_keys.get_key_value(&digest)?;
        // The map found it by the digest's first bytes; confirm all 32 in constant time.
        ct_eq(stored, &digest).then(|| &self.list[i])
    }

    /// The consumer whose basic-auth user name and password these are (the value of an
    /// `Authorization` header).
    pub async fn by_basic(&self, authorization: &[u8]) -> Result<Arc<Consumer>, BasicError> {
        let (user, password) = basic_credentials(authorization).ok_or(BasicError::Missing)?;
        // The user name's length first, so no other split of the same bytes collides.
        let digest = sha256(&[
            &(user.len() as u64).to_le_bytes(),
            user.as_bytes(),
            password.as_bytes(),
        ]);
        let now = Instant::now();
        {
            let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((stored, &(i, at))) = verified.get_key_value(&digest) {
                if now.duration_since(at) < VERIFIED_TTL && ct_eq(stored, &digest) {
                    return Ok(self.list[i].clone());
                }
            }
        }
        // Unknown users cost a hash too, so a response's timing does not tell them apart.
        let (i, hash) = match self.basic.get(&user) {
            Some((i, h)) => (Some(*i), h.clone()),
            None => (None, dummy_hash().clone()),
        };
        // Bounded: under a flood of attempts a request gives up rather than queue forever.
        let _permit = tokio::time::timeout(Duration::from_secs(5), self.hashing.acquire())
            .await
            .map_err(|_| BasicError::Invalid)?
            .map_err(|_| BasicError::Invalid)?;
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        let i = i.filter(|_| ok).ok_or(BasicError::Invalid)?;
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, (_, at)| now.duration_since(*at) < VERIFIED_TTL);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, (i, now));
        Ok(self.list[i].clone())
    }
}

/// `Basic base64(user:password)` → (user, password); `None` for anything else.
pub fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty()).then(|| (user.to_string(), password.to_string()))
}

fn verify_password(password: &str, hash: &PasswordHash) -> bool {
    match hash {
        PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        PasswordHash::Argon2(h) => {
            use argon2::PasswordVerifier as _;
            argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        }
    }
}

/// A hash to verify against for unknown users (never matches anything useful).
fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: std::sync::OnceLock<PasswordHash> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        PasswordHash::Bcrypt(
            bcrypt::hash(rand::random::<u64>().to_string(), bcrypt::DEFAULT_COST)
                .unwrap_or_default(),
        )
    })
}

/// Whether `a == b`, in time that depends on their length only: 8 bytes at a time, no
/// early exit (`black_box` keeps the compiler from adding one). Lengths are not secret.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    let diff = a.chunks(8).zip(b.chunks(8)).fold(0u64, |acc, (x, y)| {
        std::hint::black_box(acc | (word(x) ^ word(y)))
    });
    diff == 0
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `gatehouse hash-key KEY`: the hex SHA-256 a consumer's `api_keys` lists.
pub fn hash_key(key: &str) -> String {
    sha256(&[key.as_bytes()])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `gatehouse hash-password`: an argon2id hash (PHC string), or bcrypt (cost 12).
pub fn hash_password(password: &str, bcrypt: bool) -> Result<String, String> {
    if bcrypt {
        return bcrypt::hash(password, 12).map_err(|e| e.to_string());
    }
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher as _, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}
