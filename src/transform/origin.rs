//! Origin values in `cors.allow_origins`: validated and normalized at load.

/// Check `scheme://host[:port]` and bring it to the form browsers send in `Origin`:
/// lower-case, no default port. Paths (even a trailing `/`), user info, wildcards and
/// `null` are refused: a browser never sends them, so such an entry could only be a
/// mistake (or, for `null`, a hole: sandboxed iframes and local files send it).
pub(super) fn normalize_origin(s: &str) -> Result<String, String> {
    const EXAMPLE: &str = "expected scheme://host[:port], e.g. https://app.example.com";
    if s.eq_ignore_ascii_case("null") {
        return Err("the \"null\" origin (sandboxed iframes, local files) cannot be trusted and is not allowed".into());
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("invalid origin {s:?} ({EXAMPLE})"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("invalid scheme in origin {s:?} ({EXAMPLE})"));
    }
    if rest.contains('*') {
        return Err(format!(
            "wildcards are not supported in origin {s:?}; list each origin, or use \"*\" alone"
        ));
    }
    if let Some(stripped) = rest
        .strip_suffix('/')
        .filter(|r| !r.contains(['/', '?', '#']))
    {
        return Err(format!(
            "origin {s:?} must not end with `/` (browsers send {scheme}://{stripped})"
        ));
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "origin {s:?} must not contain a path, query, fragment or user info ({EXAMPLE})"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("invalid IPv6 host in origin {s:?}"));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 host in origin {s:?}"));
        }
        match after {
            "" => (&rest[..addr.len() + 2], None),
            _ => match after.strip_prefix(':') {
                Some(p) => (&rest[..addr.len() + 2], Some(p)),
                None => return Err(format!("invalid origin {s:?} ({EXAMPLE})")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if !host.starts_with('[')
        && (host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "invalid host in origin {s:?} (ASCII only: use the xn-- form of international names)"
        ));
    }
    let scheme = scheme.to_ascii_lowercase();
    let port = match port {
        None => String::new(),
        Some(p) => match p.parse::<u16>() {
            _ if !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!("invalid port in origin {s:?}"))
            }
            Ok(0) | Err(_) => return Err(format!("invalid port in origin {s:?}")),
            Ok(443) if scheme == "https" => String::new(),
            Ok(80) if scheme == "http" => String::new(),
            Ok(n) => format!(":{n}"),
        },
    };
    Ok(format!("{scheme}://{}{port}", host.to_ascii_lowercase()))
}
