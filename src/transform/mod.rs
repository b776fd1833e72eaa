//! Per-route request/response transformation: header rules, CORS and client IP lists.
//!
//! Everything is compiled at config load (`build_*`, errors carry config paths), so the
//! per-request work is lookups and string concatenation — no parsing.
//!
//! ```yaml
//! routes:
//!   - name: users
//!     request_headers:  { set: { X-Client: "{client_ip}", X-User: "{jwt.sub}" }, add: { X-Trace: gw }, remove: [Cookie] }
//!     response_headers: { set: { X-Frame-Options: DENY, X-Request-Id: "{request_id}" }, remove: [Server] }
//!     cors: { allow_origins: [https://app.example.com], allow_credentials: true, max_age: 10m }
//!     allow_ips: [10.0.0.0/8, "2001:db8::/32"]
//!     deny_ips: [10.6.6.0/24]
//! ```
//!
//! # Template syntax: single braces
//!
//! The config loader expands `${VAR}` from the environment before these values are
//! seen (and fails on unknown names), so runtime variables use *single* braces:
//! `{request_id}`, `{client_ip}`, `{host}`, `{method}`, `{path}`, `{jwt.<claim>}`.
//! `{{` and `}}` are literal braces; a lone `}` or an unknown variable is a config
//! error. Templates are allowed on both sides (every variable is known by the response
//! phase too); `build_header_rules(.., false)` exists for places without a request.
//!
//! # Header rules
//!
//! Applied in the order remove → set → add. A `set` whose template cannot be rendered
//! (no client IP, no such claim, or a value containing CR/LF/control characters)
//! removes the header rather than leaving a client-sent value in place; an `add` adds
//! nothing. Connection-level and framing headers (`Connection`, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
//! `Content-Length`) are refused. `Host` may only be `set` (a deliberate upstream Host).
//!
//! # CORS
//!
//! The gateway answers preflights itself ([`Preflight`]: `Allowed` → 204 with the
//! headers, `Denied` → 403 with no CORS headers, `NotCors` → proxy as usual) and owns
//! the `Access-Control-*` headers of actual responses ([`Cors::apply_response_headers`]).
//! A refused origin never receives `Access-Control-*` headers; `Vary: Origin` is still
//! sent whenever the answer depends on the origin.
//!
//! # IP lists
//!
//! `deny_ips` is checked first, then `allow_ips` (when present) must match. IPv4-mapped
//! IPv6 clients (`::ffff:10.0.0.1`) are treated as IPv4.

mod cors;
mod headers;
mod ip;
mod origin;
mod template;

pub use cors::{build_cors, Cors, Preflight, RawCors};
pub use headers::{build_header_rules, HeaderRules, HeaderSink, RawHeaderRules};
pub use ip::{build_ip_rules, IpRules};
pub use template::TemplateVars;

#[cfg(test)]
mod tests;
