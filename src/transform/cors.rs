//! Per-route CORS: the gateway answers preflights itself and decorates actual
//! responses, so upstream services need no CORS code and cannot get it wrong.

use super::headers::HeaderSink;
use super::origin::normalize_origin;
use crate::config::error::ConfigError;
use crate::config::units::Dur;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;

/// `cors:` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`, `http://localhost:3000`) or `["*"]`.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for; default `GET, HEAD, POST`.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for; default none. `["*"]` allows any
    /// (not with credentials).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read; `["*"]` allowed without credentials.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies / HTTP auth; incompatible with `*` anywhere.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight (whole seconds; browsers cap it).
    #[serde(default)]
    pub max_age: Option<Dur>,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

/// Compiled CORS policy; header values are pre-built.
#[derive(Debug, Clone)]
pub struct Cors {
    /// `None` = any origin (`*`); otherwise normalized (lower-case, no default port).
    pub(super) origins: Option<Vec<String>>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    /// `None` = any header (`*`); otherwise lower-case names.
    headers: Option<Vec<HeaderName>>,
    pub(super) expose: Option<HeaderValue>,
    credentials: bool,
    pub(super) max_age: Option<HeaderValue>,
}

/// The gateway's answer to an `OPTIONS` request on a route with CORS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// No `Origin` or no `Access-Control-Request-Method`: not a preflight; proxy it
    /// like any other `OPTIONS` request.
    NotCors,
    /// Answer `204 No Content` with exactly these headers (do not proxy).
    Allowed(Vec<(HeaderName, HeaderValue)>),
    /// Origin, method or one of the requested headers is not allowed. Answer `403`
    /// with no CORS headers (do not proxy): the browser blocks the request either way,
    /// and a 403 makes the refusal visible in logs and dev tools.
    Denied,
}

const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
pub(super) const STAR: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

/// Compile a `cors` block. `path` is the block's path (`routes[0].cors`); errors point
/// below it (`routes[0].cors.allow_origins[1]`). All problems are reported.
pub fn build_cors(raw: &RawCors, path: &str) -> Result<Cors, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let creds = raw.allow_credentials;
    let mut err = |at: String, msg: String| errors.push(ConfigError::new(at, msg));

    let mut origins = Some(Vec::new());
    if raw.allow_origins.is_empty() {
        err(
            format!("{path}.allow_origins"),
            "list at least one origin (or \"*\")".into(),
        );
    }
    for (i, o) in raw.allow_origins.iter().enumerate() {
        let at = format!("{path}.allow_origins[{i}]");
        if o == "*" {
            if creds {
                err(at, "\"*\" cannot be combined with allow_credentials: true (browsers reject it); list the origins".into());
            } else if raw.allow_origins.len() > 1 {
                err(at, "\"*\" must be the only entry".into());
            }
            origins = None;
            continue;
        }
        match normalize_origin(o) {
            Ok(n) => {
                if let Some(list) = origins.as_mut().filter(|l| !l.contains(&n)) {
                    list.push(n);
                }
            }
            Err(e) => err(at, e),
        }
    }

    let mut methods = Vec::new();
    if raw.allow_methods.is_empty() {
        err(
            format!("{path}.allow_methods"),
            "list at least one method".into(),
        );
    }
    for (i, m) in raw.allow_methods.iter().enumerate() {
        let at = format!("{path}.allow_methods[{i}]");
        if m == "*" {
            err(at, "\"*\" is not supported here; list the methods".into());
            continue;
        }
        // Methods are case-sensitive on the wire; a lower-case `patch` in config is
        // meant as `PATCH`, which is what browsers send.
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) if !methods.contains(&m) => methods.push(m),
            Ok(_) => {}
            Err(_) => err(at, format!("invalid method {m:?}")),
        }
    }
    let methods_value = join(methods.iter().map(Method::as_str));

    let mut name_list = |key: &str, list: &[String]| -> Option<Vec<HeaderName>> {
        let mut names = Vec::new();
        let mut any = false;
        for (i, h) in list.iter().enumerate() {
            let at = format!("{path}.{key}[{i}]");
            if h == "*" {
                any = true;
                if creds {
                    err(at, "\"*\" cannot be combined with allow_credentials: true (browsers treat it as a header named *); list the headers".into());
                } else if list.len() > 1 {
                    err(at, "\"*\" must be the only entry".into());
                }
                continue;
            }
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if !names.contains(&n) => names.push(n),
                Ok(_) => {}
                Err(_) => err(at, format!("invalid header name {h:?}")),
            }
        }
        (!any).then_some(names)
    };
    let headers = name_list("allow_headers", &raw.allow_headers);
    let expose = match name_list("expose_headers", &raw.expose_headers) {
        None => Some(STAR),
        Some(names) if names.is_empty() => None,
        Some(names) => Some(join(names.iter().map(HeaderName::as_str))),
    };
    let max_age = raw.max_age.map(|d| HeaderValue::from(d.0.as_secs()));

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Cors {
        origins,
        methods,
        methods_value,
        headers,
        expose,
        credentials: creds,
        max_age,
    })
}

/// Join tokens (already validated method or header names) with `, `.
fn join<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let s = items.collect::<Vec<_>>().join(", ");
    // Cannot fail for validated tokens; an empty value grants nothing if it ever did.
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Cors {
    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            None => true,
            Some(list) => origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o))),
        }
    }

    /// `*` when any origin is allowed (never with credentials: refused at load),
    /// otherwise the request's own origin, which has just matched the list.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        match self.origins {
            None => STAR,
            Some(_) => origin.clone(),
        }
    }

    /// Decide a preflight. Call only for `OPTIONS` requests. The requested headers
    /// are all-or-nothing: if any is not allowed the answer is `Denied` (the browser
    /// would fail the preflight anyway). When they are allowed they are echoed back as
    /// lower-case names; with `allow_headers: ["*"]` every requested name is echoed,
    /// which also admits `Authorization` (a literal `*` would not, per Fetch).
    pub fn preflight(
        &self,
        origin: Option<&HeaderValue>,
        req_method: Option<&HeaderValue>,
        req_headers: Option<&HeaderValue>,
    ) -> Preflight {
        let (Some(origin), Some(method)) = (origin, req_method) else {
            return Preflight::NotCors;
        };
        if !self.origin_allowed(origin) {
            return Preflight::Denied;
        }
        let method_ok = method
            .to_str()
            .is_ok_and(|m| self.methods.iter().any(|a| a.as_str() == m.trim()));
        if !method_ok {
            return Preflight::Denied;
        }
        let mut requested: Vec<HeaderName> = Vec::new();
        if let Some(value) = req_headers {
            let Ok(list) = value.to_str() else {
                return Preflight::Denied;
            };
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Ok(name) = HeaderName::from_bytes(item.as_bytes()) else {
                    return Preflight::Denied;
                };
                let allowed = match &self.headers {
                    None => true,
                    Some(list) => list.contains(&name),
                };
                if !allowed {
                    return Preflight::Denied;
                }
                if !requested.contains(&name) {
                    requested.push(name);
                }
            }
        }
        let mut out = Vec::with_capacity(6);
        out.push((ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin)));
        out.push((ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone()));
        if !requested.is_empty() {
            out.push((
                ACCESS_CONTROL_ALLOW_HEADERS,
                join(requested.iter().map(HeaderName::as_str)),
            ));
        }
        if let Some(age) = &self.max_age {
            out.push((ACCESS_CONTROL_MAX_AGE, age.clone()));
        }
        if self.credentials {
            out.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        out.push((VARY, PREFLIGHT_VARY));
        Preflight::Allowed(out)
    }

    /// Headers for an actual (non-preflight) response. `None` means "add nothing".
    ///
    /// With an origin list, `Vary: Origin` is returned even for a missing or refused
    /// origin — then it is the only header: the response differs by origin, and a
    /// cache that stored the plain answer must not serve it to an allowed origin.
    /// A refused origin never gets any `Access-Control-*` header.
    pub fn response_headers(
        &self,
        origin: Option<&HeaderValue>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let allowed = origin.filter(|o| self.origin_allowed(o));
        let mut out = Vec::with_capacity(4);
        if let Some(origin) = allowed {
            out.push((ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin)));
            if self.credentials {
                out.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
            }
            if let Some(expose) = &self.expose {
                out.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
        }
        if self.origins.is_some() {
            out.push((VARY, VARY_ORIGIN));
        }
        (!out.is_empty()).then_some(out)
    }

    /// Apply [`Cors::response_headers`] to an upstream response: first drop any
    /// `Access-Control-*` headers the upstream set (the route's policy is
    /// authoritative; an upstream `Access-Control-Allow-Origin: *` must not leak to a
    /// refused origin, and a duplicate would make browsers reject the response), then
    /// insert ours, appending `Vary` so the upstream's `Vary` values are kept.
    pub fn apply_response_headers(&self, origin: Option<&HeaderValue>, sink: &mut impl HeaderSink) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            sink.remove(&name);
        }
        for (name, value) in self.response_headers(origin).unwrap_or_default() {
            if name == VARY {
                sink.append(name, value);
            } else {
                sink.insert(name, value);
            }
        }
    }
}
