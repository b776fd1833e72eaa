//! Header value templates: `Bearer {jwt.sub}`, `{client_ip}`, `{{literal}}`.
//!
//! Values are parsed once at config load into literal and variable segments, so a
//! request only concatenates strings. Literal parts are checked for header-value
//! validity at load time; the rendered value is checked again (a claim may carry CR/LF)
//! and rejected rather than sent.

use http::HeaderValue;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

/// What a template can read about the current request. The gateway implements this on
/// its per-request context; it is used on both the request and the response side.
pub trait TemplateVars {
    /// The request id (`X-Request-Id`) the gateway kept or generated.
    fn request_id(&self) -> &str;
    /// The client address (after trusted-proxy resolution); `None` when unknown.
    fn client_ip(&self) -> Option<IpAddr>;
    /// The request's host (the `Host` header / `:authority`, as routed).
    fn host(&self) -> &str;
    /// The request method, e.g. `GET`.
    fn method(&self) -> &str;
    /// The request path, without the query string.
    fn path(&self) -> &str;
    /// A claim of the verified JWT, as text (numbers and booleans stringified); `None`
    /// when the request carries no verified token or the token lacks the claim. The
    /// name is the text after `jwt.` verbatim (`{jwt.org.id}` asks for `org.id`).
    fn claim(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// The variables a template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Var {
    RequestId,
    ClientIp,
    Host,
    Method,
    Path,
    Claim(Box<str>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    Literal(Box<str>),
    Var(Var),
}

/// A value with at least one variable, pre-split into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(super) segments: Vec<Segment>,
    /// Bytes of literal text, to size the output buffer in one allocation.
    pub(super) literal_len: usize,
}

/// The outcome of parsing a configured value: plain text (no variables) or a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Literal(String),
    Template(Template),
}

const VALID_VARS: &str = "valid: request_id, client_ip, host, method, path, jwt.<claim>";

/// Parse a configured header value. `{name}` is a variable, `{{` and `}}` are literal
/// braces, a lone `}` is an error (as in Rust's `format!`, so a typo is not silently
/// sent). With `allow_vars == false` the same syntax applies but any variable is an
/// error, so `{request_id}` is never sent verbatim by mistake.
pub(crate) fn parse(src: &str, allow_vars: bool) -> Result<Parsed, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut literal_len = 0;
    let mut rest = src;
    while let Some(i) = rest.find(['{', '}']) {
        literal.push_str(&rest[..i]);
        let brace = &rest[i..=i];
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix(brace) {
            literal.push_str(brace);
            rest = tail;
            continue;
        }
        if brace == "}" {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        }
        let end = match after.find(['{', '}']) {
            Some(end) if after.as_bytes()[end] == b'}' => end,
            _ => return Err("unclosed `{` (write `{{` for a literal brace)".into()),
        };
        let name = &after[..end];
        let var = parse_var(name)?;
        if !allow_vars {
            return Err(format!(
                "variable {{{name}}} is not available here (write `{{{{` for a literal brace)"
            ));
        }
        if !literal.is_empty() {
            literal_len += literal.len();
            segments.push(Segment::Literal(std::mem::take(&mut literal).into()));
        }
        segments.push(Segment::Var(var));
        rest = &after[end + 1..];
    }
    literal.push_str(rest);
    if let Some(b) = src.bytes().find(|&b| !valid_value_byte(b)) {
        return Err(format!(
            "invalid header value: control character 0x{b:02x} is not allowed"
        ));
    }
    if segments.is_empty() {
        return Ok(Parsed::Literal(literal));
    }
    if !literal.is_empty() {
        literal_len += literal.len();
        segments.push(Segment::Literal(literal.into()));
    }
    Ok(Parsed::Template(Template {
        segments,
        literal_len,
    }))
}

fn parse_var(name: &str) -> Result<Var, String> {
    Ok(match name {
        "request_id" => Var::RequestId,
        "client_ip" => Var::ClientIp,
        "host" => Var::Host,
        "method" => Var::Method,
        "path" => Var::Path,
        _ => match name.strip_prefix("jwt.") {
            Some(claim) if !claim.is_empty() => Var::Claim(claim.into()),
            _ => return Err(format!("unknown variable {{{name}}} ({VALID_VARS})")),
        },
    })
}

/// What `http::HeaderValue` accepts: visible ASCII, space, tab and obs-text.
fn valid_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl Template {
    /// Render for one request. `None` when a variable has no value (no client IP, no
    /// such claim) or the result is not a valid header value (CR/LF or other control
    /// characters from a claim): the caller then leaves the header unset, so a claim
    /// can never inject a header line.
    pub(crate) fn render(&self, vars: &dyn TemplateVars) -> Option<HeaderValue> {
        let mut out = String::with_capacity(self.literal_len + 48);
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Var(Var::RequestId) => out.push_str(vars.request_id()),
                Segment::Var(Var::ClientIp) => write!(out, "{}", vars.client_ip()?).ok()?,
                Segment::Var(Var::Host) => out.push_str(vars.host()),
                Segment::Var(Var::Method) => out.push_str(vars.method()),
                Segment::Var(Var::Path) => out.push_str(vars.path()),
                Segment::Var(Var::Claim(name)) => out.push_str(&vars.claim(name)?),
            }
        }
        HeaderValue::try_from(out).ok()
    }
}
