//! `${VAR}` and `${VAR:-default}` expansion.
//!
//! Expansion runs on the parsed YAML tree, string scalars only, so a `${VAR}` inside a
//! comment is never looked at and every error carries the path of the value it is in.
//! A scalar that is *only* a reference (`limit: ${LIMIT}`) is re-read as YAML after
//! expansion, so numbers and booleans can come from the environment too.

use super::error::ConfigError;
use serde_yaml::Value;

/// Expand every string scalar under `value`, collecting one error per unset variable.
pub fn expand_tree(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        Value::String(s) => {
            if !s.contains("${") {
                return;
            }
            let whole = is_single_reference(s);
            match expand_str(s, lookup) {
                Ok(expanded) => {
                    *value = if whole {
                        // Re-read as a YAML scalar: `8080` becomes a number, `true` a bool.
                        match serde_yaml::from_str::<Value>(&expanded) {
                            Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
                            _ => Value::String(expanded),
                        }
                    } else {
                        Value::String(expanded)
                    };
                }
                Err(msg) => errors.push(ConfigError::new(path, msg)),
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                expand_tree(v, &child, lookup, errors);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, lookup, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn is_single_reference(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("${") && t.ends_with('}') && t[2..].find('}') == Some(t.len() - 3)
}

/// Expand `${VAR}` / `${VAR:-default}` in one string. `$$` is a literal `$`.
pub fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(format!("unterminated variable reference in {s:?}"));
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?}"));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
            ))
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
