//! Authentication on routes with `auth`: the methods are tried in order and the first
//! that accepts the request wins. A method that finds no credential of its kind passes
//! to the next; one that refuses what it found is counted in
//! `gatehouse_auth_failures_total{route,reason}` and the next is still tried. When none
//! accepts, the answer is the most telling refusal: a forward-auth service's own 401/403,
//! then the service being unavailable (503), then the first refused credential (401),
//! else `missing_credentials` (401 with one challenge per method). A route with one JWT
//! method answers exactly as before consumers existed (`missing_token`, …).
//!
//! After a method accepts: the credential it used is removed from the request (unless
//! `keep_credentials`), the consumer's `X-Consumer`/`X-Consumer-Groups` or the auth
//! service's `copy_headers` are set, and `require_groups` / `require_claims` are checked.

use super::{Ctx, Gateway};
use crate::auth::{self, AuthError, TokenSource};
use crate::consumers::{BasicError, Consumer};
use crate::error::GatewayError;
use crate::forward_auth::{self, Decision};
use crate::headers::{X_CONSUMER, X_CONSUMER_GROUPS};
use crate::routing::{AuthMethod, Route, RouteAuth};
use crate::runtime::Runtime;
use http::header;
use pingora::proxy::Session;
use std::sync::Arc;

/// What one method made of the request.
enum Attempt {
    /// Accepted; what to forward and remove.
    Accepted(Accepted),
    /// No credential of this method's kind.
    Absent,
    Refused(GatewayError),
}

#[derive(Default)]
struct Accepted {
    consumer: Option<Arc<Consumer>>,
    claims: Option<(Arc<auth::Claims>, Arc<auth::Verifier>)>,
    /// The credential to take off the request before forwarding.
    remove: Option<Credential>,
    /// A forward-auth service's `copy_headers`.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

enum Credential {
    Header(http::HeaderName),
    Query(Box<str>),
}

impl Gateway {
    pub(super) async fn authenticate(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        route: &Route,
        ra: &RouteAuth,
        rt: &Runtime,
    ) -> Result<(), GatewayError> {
        let single_jwt = ra.methods.len() == 1;
        let mut refused: Option<GatewayError> = None;
        let mut accepted = None;
        for method in ra.methods.iter() {
            match self
                .attempt(session, ctx, route, method, rt, single_jwt)
                .await
            {
                Attempt::Accepted(a) => {
                    accepted = Some(a);
                    break;
                }
                Attempt::Absent => {}
                Attempt::Refused(e) => {
                    self.count_failure(route, e.code());
                    let rank = |e: &GatewayError| match e {
                        GatewayError::ForwardDenied(_) => 3,
                        GatewayError::AuthUnavailable => 2,
                        _ => 1,
                    };
                    if refused.as_ref().is_none_or(|r| rank(&e) > rank(r)) {
                        refused = Some(e);
                    }
                }
            }
        }
        let Some(a) = accepted else {
            let e = refused.unwrap_or_else(|| {
                let e = if single_jwt && matches!(ra.methods[0], AuthMethod::Jwt { .. }) {
                    GatewayError::Unauthorized(AuthError::Missing)
                } else {
                    GatewayError::Unauthenticated {
                        reason: "missing_credentials",
                        challenge: ra.challenge.clone(),
                    }
                };
                self.count_failure(route, e.code());
                e
            });
            return Err(e);
        };

        if !ra.require_groups.is_empty()
            && !a
                .consumer
                .as_ref()
                .is_some_and(|c| c.in_any(&ra.require_groups))
        {
            return Err(GatewayError::Forbidden);
        }
        if let Some((claims, _)) = &a.claims {
            let ok = ra
                .require_claims
                .iter()
                .all(|(name, allowed)| claims.matches(name, allowed));
            if !ok {
                return Err(GatewayError::Forbidden);
            }
        }
        let req = session.req_header_mut();
        if !ra.keep_credentials {
            match &a.remove {
                Some(Credential::Header(h)) => {
                    req.remove_header(h);
                }
                Some(Credential::Query(name)) => {
                    if let Some(uri) = without_query_param(&req.uri, name) {
                        req.set_uri(uri);
                    }
                }
                None => {}
            }
        }
        for (name, value) in a.headers {
            let _ = req.append_header(name, value);
        }
        if let Some(c) = &a.consumer {
            let _ = req.insert_header(X_CONSUMER, c.header.clone());
            if let Some(g) = &c.groups_header {
                let _ = req.insert_header(X_CONSUMER_GROUPS, g.clone());
            }
        }
        if let Some((claims, verifier)) = a.claims {
            ctx.claims = Some(claims);
            ctx.claims_from = Some(verifier);
        }
        ctx.consumer = a.consumer;
        Ok(())
    }

    fn count_failure(&self, route: &Route, reason: &str) {
        self.metrics
            .auth_failures
            .with_label_values(&[&*route.name, reason])
            .inc();
    }

    async fn attempt(
        &self,
        session: &Session,
        ctx: &Ctx,
        route: &Route,
        method: &AuthMethod,
        rt: &Runtime,
        single: bool,
    ) -> Attempt {
        let req = session.req_header();
        match method {
            AuthMethod::Jwt { verifier, from } => {
                let Some((token, remove)) = find_token(req, from, single) else {
                    return Attempt::Absent;
                };
                let token = match token {
                    Ok(t) => t,
                    Err(e) => return Attempt::Refused(GatewayError::Unauthorized(e)),
                };
                match verifier.verify(token, unix_now()) {
                    Ok(claims) => Attempt::Accepted(Accepted {
                        claims: Some((claims, verifier.clone())),
                        remove,
                        ..Default::default()
                    }),
                    Err(e) => Attempt::Refused(GatewayError::Unauthorized(e)),
                }
            }
            AuthMethod::ApiKey { header, query } => {
                let (key, remove) = match (
                    header.as_ref().and_then(|h| req.headers.get(h)),
                    query.as_deref().and_then(|q| query_param(req, q)),
                ) {
                    (Some(v), _) => (v.as_bytes(), header.clone().map(Credential::Header)),
                    (None, Some(v)) => (v, query.clone().map(Credential::Query)),
                    (None, None) => return Attempt::Absent,
                };
                if key.is_empty() {
                    return Attempt::Absent;
                }
                match rt.consumers.by_api_key(key) {
                    Some(c) => Attempt::Accepted(Accepted {
                        consumer: Some(c.clone()),
                        remove,
                        ..Default::default()
                    }),
                    None => Attempt::Refused(GatewayError::Unauthenticated {
                        reason: "invalid_api_key",
                        challenge: http::HeaderValue::from_static("ApiKey"),
                    }),
                }
            }
            AuthMethod::Basic => {
                let Some(v) = req.headers.get(header::AUTHORIZATION) else {
                    return Attempt::Absent;
                };
                match rt.consumers.by_basic(v.as_bytes()).await {
                    Ok(c) => Attempt::Accepted(Accepted {
                        consumer: Some(c),
                        remove: Some(Credential::Header(header::AUTHORIZATION)),
                        ..Default::default()
                    }),
                    Err(BasicError::Missing) => Attempt::Absent,
                    Err(BasicError::Invalid) => Attempt::Refused(GatewayError::Unauthenticated {
                        reason: "invalid_credentials",
                        challenge: http::HeaderValue::from_static("Basic realm=\"gatehouse\""),
                    }),
                }
            }
            AuthMethod::Forward {
                service,
                allow_on_error,
            } => {
                let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let check = forward_auth::Request {
                    route: &route.name,
                    method: req.method.as_str(),
                    uri,
                    host: super::request::request_host(req).unwrap_or(""),
                    client_ip: ctx.client_ip,
                    request_id: &ctx.request_id,
                    headers: &req.headers,
                };
                match service.check(&check).await {
                    Ok(d) => match &*d {
                        Decision::Allow(headers) => Attempt::Accepted(Accepted {
                            headers: headers.clone(),
                            ..Default::default()
                        }),
                        Decision::Deny(denial) => {
                            Attempt::Refused(GatewayError::ForwardDenied(denial.clone()))
                        }
                    },
                    Err(why) => {
                        if service.should_warn() {
                            log::warn!(
                                "forward_auth {}: unavailable for route {} ({why}){}",
                                service.config.name,
                                route.name,
                                if *allow_on_error {
                                    ", letting the request through"
                                } else {
                                    ""
                                }
                            );
                        }
                        if *allow_on_error {
                            Attempt::Accepted(Accepted::default())
                        } else {
                            Attempt::Refused(GatewayError::AuthUnavailable)
                        }
                    }
                }
            }
        }
    }
}

/// The token from the verifier's sources, in order, and where it came from. `None`: no
/// source has one. On a multi-method route an `Authorization` header of another scheme
/// (e.g. `Basic`) is not a token for this method.
fn find_token<'a>(
    req: &'a pingora::http::RequestHeader,
    from: &[TokenSource],
    single: bool,
) -> Option<(Result<&'a str, AuthError>, Option<Credential>)> {
    for src in from {
        match src {
            TokenSource::Header => {
                let Some(v) = req.headers.get(header::AUTHORIZATION) else {
                    continue;
                };
                let v = v.as_bytes();
                let bearer = v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ");
                if !bearer && !single {
                    continue;
                }
                match auth::bearer_token(v) {
                    Err(AuthError::Missing) => continue,
                    t => return Some((t, Some(Credential::Header(header::AUTHORIZATION)))),
                }
            }
            TokenSource::Cookie(name) => {
                if let Some(v) = super::request::cookie(req, name).filter(|v| !v.is_empty()) {
                    let t = std::str::from_utf8(v).map_err(|_| AuthError::Malformed);
                    return Some((t, None));
                }
            }
            TokenSource::Query(name) => {
                if let Some(v) = query_param(req, name).filter(|v| !v.is_empty()) {
                    let t = std::str::from_utf8(v).map_err(|_| AuthError::Malformed);
                    return Some((t, Some(Credential::Query(name.as_str().into()))));
                }
            }
        }
    }
    None
}

/// The raw value of the first query parameter called `name`.
fn query_param<'a>(req: &'a pingora::http::RequestHeader, name: &str) -> Option<&'a [u8]> {
    let q = req.uri.query()?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// The URI without any `name=` query parameter (`None` if it has none).
fn without_query_param(uri: &http::Uri, name: &str) -> Option<http::Uri> {
    let q = uri.query()?;
    let keep: Vec<&str> = q
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    let path = uri.path();
    let pq = if keep.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", keep.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    http::Uri::from_parts(parts).ok()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
