//! `rewrite:` (the path the upstream sees, from a regex with captures; the `Host` it
//! sees) and `redirect:` (answered by the gateway, never proxied).

use super::conditions::one_line;
use crate::config::error::ConfigError;
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    path_regex: Option<String>,
    replacement: Option<String>,
    set_host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    to: String,
    status: Option<u16>,
}

/// A compiled `rewrite:`.
#[derive(Debug)]
pub struct Rewrite {
    /// The path regex and its replacement in the regex crate's `${name}` syntax.
    pub path: Option<(Regex, String)>,
    pub set_host: Option<http::HeaderValue>,
}

impl Rewrite {
    pub fn compile(raw: &RawRewrite, path: &str, errors: &mut Vec<ConfigError>) -> Option<Rewrite> {
        let before = errors.len();
        let path_rewrite = match (&raw.path_regex, &raw.replacement) {
            (Some(re), Some(rep)) => match Regex::new(re) {
                Ok(regex) => {
                    let names: Vec<String> = capture_names(&regex);
                    template(rep, &names, &format!("{path}.rewrite.replacement"), errors)
                        .map(|pieces| (regex, regex_replacement(&pieces)))
                }
                Err(e) => {
                    errors.push(ConfigError::new(
                        format!("{path}.rewrite.path_regex"),
                        format!("invalid regex: {}", one_line(&e.to_string())),
                    ));
                    None
                }
            },
            (None, None) => None,
            _ => {
                errors.push(ConfigError::new(
                    format!("{path}.rewrite"),
                    "path_regex and replacement go together",
                ));
                None
            }
        };
        let set_host = raw.set_host.as_deref().and_then(|h| {
            let ok = !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']')
                });
            match (ok, http::HeaderValue::from_str(h)) {
                (true, Ok(v)) => Some(v),
                _ => {
                    errors.push(ConfigError::new(
                        format!("{path}.rewrite.set_host"),
                        format!("invalid host {h:?} (e.g. users.internal or users.internal:8080)"),
                    ));
                    None
                }
            }
        });
        if errors.len() > before {
            return None;
        }
        if path_rewrite.is_none() && set_host.is_none() {
            errors.push(ConfigError::new(
                format!("{path}.rewrite"),
                "give path_regex + replacement, set_host, or both",
            ));
            return None;
        }
        Some(Rewrite {
            path: path_rewrite,
            set_host,
        })
    }

    /// The rewritten path (query kept), or `None` when the regex does not match.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let (regex, replacement) = self.path.as_ref()?;
        if !regex.is_match(path) {
            return None;
        }
        let mut out = regex.replace(path, replacement.as_str()).into_owned();
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

/// A compiled `redirect:`.
#[derive(Debug)]
pub struct Redirect {
    pub status: u16,
    to: Vec<Piece>,
}

impl Redirect {
    /// `captures`: the names `match.path_regex` defines (the only captures `to` may use).
    pub fn compile(
        raw: &RawRedirect,
        captures: &[String],
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Redirect> {
        let status = raw.status.unwrap_or(302);
        let mut ok = true;
        if ![301, 302, 303, 307, 308].contains(&status) {
            errors.push(ConfigError::new(
                format!("{path}.redirect.status"),
                format!("must be 301, 302, 303, 307 or 308, got {status}"),
            ));
            ok = false;
        }
        let mut names: Vec<String> = captures.to_vec();
        names.extend(["host", "path", "path_only", "query"].map(String::from));
        let to = template(&raw.to, &names, &format!("{path}.redirect.to"), errors);
        if raw.to.is_empty() || raw.to.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            errors.push(ConfigError::new(
                format!("{path}.redirect.to"),
                "must be a URL or path without spaces or control characters",
            ));
            ok = false;
        }
        match (ok, to) {
            (true, Some(to)) => Some(Redirect { status, to }),
            _ => None,
        }
    }

    /// The `Location` for a request: `{host}` (as the client sent it), `{path}` (path
    /// and query), `{path_only}`, `{query}`, and `match.path_regex`'s captures.
    pub fn location(
        &self,
        host: &str,
        path: &str,
        query: Option<&str>,
        captures: Option<&regex::Captures>,
    ) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.to {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match name.as_str() {
                    "host" => out.push_str(host),
                    "path_only" => out.push_str(path),
                    "query" => out.push_str(query.unwrap_or("")),
                    "path" => {
                        out.push_str(path);
                        if let Some(q) = query {
                            out.push('?');
                            out.push_str(q);
                        }
                    }
                    other => {
                        let m = captures.and_then(|c| match other.parse::<usize>() {
                            Ok(i) => c.get(i),
                            Err(_) => c.name(other),
                        });
                        out.push_str(m.map_or("", |m| m.as_str()));
                    }
                },
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// `{name}` pieces (`{{` and `}}` are braces); every name must be in `known` (or, for
/// a regex's numbered groups, a number it has).
fn template(
    src: &str,
    known: &[String],
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = src.char_indices().peekable();
    let before = errors.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let rest = &src[i + 1..];
                let Some(end) = rest.find('}') else {
                    errors.push(ConfigError::new(path, "unclosed {"));
                    break;
                };
                let name = &rest[..end];
                if !known.iter().any(|k| k == name) {
                    errors.push(ConfigError::new(
                        path,
                        format!("{{{name}}} is not defined (known: {})", known.join(", ")),
                    ));
                }
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Var(name.to_string()));
                // Past the closing brace (byte offsets: names may be any UTF-8).
                while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + end) {
                    chars.next();
                }
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    (errors.len() == before).then_some(out)
}

/// The regex crate's replacement syntax for `pieces`: `${name}`, `$$` for a `$`.
fn regex_replacement(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(&t.replace('$', "$$")),
            Piece::Var(n) => {
                out.push_str("${");
                out.push_str(n);
                out.push('}');
            }
        }
    }
    out
}

/// A regex's capture names, numbered groups included (`1`, `2`, …).
pub fn capture_names(r: &Regex) -> Vec<String> {
    let mut names: Vec<String> = (1..r.captures_len()).map(|i| i.to_string()).collect();
    names.extend(r.capture_names().flatten().map(String::from));
    names
}
