//! The `consumers:` section and the `consumers_file:` it may be split into: named
//! clients with their groups and credentials. Credentials are never in clear: API keys
//! as SHA-256 digests (64 hex digits), basic-auth passwords as bcrypt (`$2a$`, `$2b$`,
//! `$2y$`) or argon2 (`$argon2id$`, `$argon2i$`, `$argon2d$`) hashes, each parsed here so a
//! malformed one is an error with its path.

use crate::config::de::{de, valid_name};
use crate::config::error::ConfigError;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    api_keys: Vec<String>,
    basic: Option<RawBasic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasic {
    username: String,
    password_hash: String,
}

/// A stored password hash, checked for shape at load.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Bcrypt(String),
    Argon2(String),
}

impl PasswordHash {
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        let s = s.trim();
        if s.starts_with("$2") {
            s.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("not a valid bcrypt hash ({e})"))?;
            return Ok(PasswordHash::Bcrypt(s.to_string()));
        }
        if s.starts_with("$argon2") {
            argon2::PasswordHash::new(s).map_err(|e| format!("not a valid argon2 hash ({e})"))?;
            return Ok(PasswordHash::Argon2(s.to_string()));
        }
        Err("must be a bcrypt ($2b$…) or argon2 ($argon2id$…) hash: `gatehouse hash-password` prints one".into())
    }
}

/// Redacted: a hash is not a password, but it is still nobody's business in a log.
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Bcrypt(_) => f.write_str("Bcrypt(..)"),
            PasswordHash::Argon2(_) => f.write_str("Argon2(..)"),
        }
    }
}

/// One validated consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub name: String,
    pub groups: Vec<String>,
    /// SHA-256 digests of its API keys.
    pub api_keys: Vec<[u8; 32]>,
    /// Basic-auth user name and password hash.
    pub basic: Option<(String, PasswordHash)>,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("api_keys", &self.api_keys.len())
            .field("basic", &self.basic.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// Every consumer, from the config and the consumers file, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumersConfig {
    pub consumers: Vec<ConsumerConfig>,
    /// `consumers_file:` as given (re-read on every load).
    pub file: Option<String>,
}

impl ConsumersConfig {
    /// Every group some consumer is in.
    pub fn groups(&self) -> BTreeSet<&str> {
        self.consumers
            .iter()
            .flat_map(|c| c.groups.iter().map(String::as_str))
            .collect()
    }

    pub fn any_api_key(&self) -> bool {
        self.consumers.iter().any(|c| !c.api_keys.is_empty())
    }

    pub fn any_basic(&self) -> bool {
        self.consumers.iter().any(|c| c.basic.is_some())
    }
}

/// Validate `consumers:` and `consumers_file:` (read now: a reload reads it again).
pub fn validate(
    inline: Option<Value>,
    file: Option<Value>,
    errors: &mut Vec<ConfigError>,
) -> ConsumersConfig {
    let mut raw: Vec<(String, String, Value)> = Vec::new();
    collect_section(inline, "consumers", &mut raw, errors);
    let file = match file {
        None | Some(Value::Null) => None,
        Some(Value::String(path)) => {
            let at = format!("consumers_file({path})");
            match std::fs::read_to_string(&path) {
                Ok(text) => match serde_yaml::from_str::<Value>(&text) {
                    Ok(v) => collect_section(Some(v), &at, &mut raw, errors),
                    Err(e) => errors.push(ConfigError::new(at, format!("invalid YAML: {e}"))),
                },
                Err(e) => errors.push(ConfigError::new(
                    "consumers_file",
                    format!("cannot read {path}: {e}"),
                )),
            }
            Some(path)
        }
        Some(_) => {
            errors.push(ConfigError::new(
                "consumers_file",
                "must be the path of a YAML file",
            ));
            None
        }
    };

    let mut seen: HashMap<String, String> = HashMap::new();
    let mut keys: HashMap<[u8; 32], String> = HashMap::new();
    let mut users: HashMap<String, String> = HashMap::new();
    let mut consumers = Vec::with_capacity(raw.len());
    for (name, path, value) in raw {
        let Some(rc) = de::<RawConsumer>(value, &path, errors) else {
            continue;
        };
        let before = errors.len();
        if !valid_name(&name) {
            errors.push(ConfigError::new(
                &path,
                "consumer names use letters, digits, '-', '_' and '.' (1-64 characters)",
            ));
        } else if let Some(first) = seen.insert(name.clone(), path.clone()) {
            errors.push(ConfigError::new(
                &path,
                format!("duplicate consumer {name:?} (also at {first})"),
            ));
        }
        for (i, g) in rc.groups.iter().enumerate() {
            if !valid_name(g) {
                errors.push(ConfigError::new(
                    format!("{path}.groups[{i}]"),
                    "group names use letters, digits, '-', '_' and '.' (1-64 characters)",
                ));
            }
        }
        let mut api_keys = Vec::with_capacity(rc.api_keys.len());
        for (i, hex) in rc.api_keys.iter().enumerate() {
            let at = format!("{path}.api_keys[{i}]");
            match parse_digest(hex) {
                Some(d) => {
                    if let Some(other) = keys.insert(d, at.clone()) {
                        errors.push(ConfigError::new(
                            &at,
                            format!("the same key as {other}: a key names one consumer"),
                        ));
                    }
                    api_keys.push(d);
                }
                None => errors.push(ConfigError::new(
                    &at,
                    "must be the SHA-256 of the key, 64 hex digits (`gatehouse hash-key KEY` prints it)",
                )),
            }
        }
        let basic = rc.basic.and_then(|b| {
            let at = format!("{path}.basic");
            if b.username.is_empty() || b.username.contains(':') || b.username.len() > 256 {
                errors.push(ConfigError::new(
                    format!("{at}.username"),
                    "1-256 characters, no ':'",
                ));
            } else if let Some(other) = users.insert(b.username.clone(), at.clone()) {
                errors.push(ConfigError::new(
                    format!("{at}.username"),
                    format!("user name {:?} is also used at {other}", b.username),
                ));
            }
            match PasswordHash::parse(&b.password_hash) {
                Ok(h) => Some((b.username, h)),
                Err(e) => {
                    errors.push(ConfigError::new(format!("{at}.password_hash"), e));
                    None
                }
            }
        });
        if errors.len() == before {
            consumers.push(ConsumerConfig {
                name,
                groups: rc.groups,
                api_keys,
                basic,
            });
        }
    }
    consumers.sort_by(|a, b| a.name.cmp(&b.name));
    ConsumersConfig { consumers, file }
}

/// Each `name: {…}` of a consumers mapping, with its path for errors.
fn collect_section(
    v: Option<Value>,
    at: &str,
    out: &mut Vec<(String, String, Value)>,
    errors: &mut Vec<ConfigError>,
) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                match k.as_str() {
                    Some(name) => out.push((name.to_string(), format!("{at}.{name}"), v)),
                    None => errors.push(ConfigError::new(at, "consumer names must be strings")),
                }
            }
        }
        Some(_) => errors.push(ConfigError::new(
            at,
            "expected a mapping of consumer name → { groups, api_keys, basic }",
        )),
    }
}

/// 64 hex digits → 32 bytes.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}
