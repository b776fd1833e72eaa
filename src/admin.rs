//! The admin listener: the dashboard page at `/`, `/metrics`, `/healthz`, `/readyz`,
//! `/admin/status`, `/admin/stats` ([`stats`]), `POST /admin/reload`, behind
//! `admin.token` when one is set ([`access`]).
//!
//! Served as a Pingora service of its own, so its socket is handed over on a binary
//! upgrade like the proxy listeners. It reads the same runtime snapshot as the proxy;
//! gauges that describe current state (health, in-flight) are filled in at scrape time
//! from that snapshot rather than maintained on the request path.

use crate::access_log::rfc3339;
use crate::config::server::AdminToken;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;

pub mod stats;

pub use stats::Stats;

/// The dashboard: one self-contained page (inline CSS and JS, nothing fetched from
/// elsewhere) that polls `/admin/status` and `/admin/stats`.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

pub struct AdminApp {
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    stats: Arc<Stats>,
    started_at: SystemTime,
}

impl AdminApp {
    pub fn new(
        runtime: Arc<ArcSwap<Runtime>>,
        metrics: Arc<Metrics>,
        reloader: Arc<Reloader>,
        stats: Arc<Stats>,
    ) -> Self {
        AdminApp {
            runtime,
            metrics,
            reloader,
            stats,
            started_at: SystemTime::now(),
        }
    }

    fn refresh_gauges(&self, rt: &Runtime) {
        self.metrics.refresh_connections();
        let store_errors = rt.rate_store.redis_errors();
        let counted = self.metrics.rate_store_errors.get();
        if store_errors > counted {
            self.metrics
                .rate_store_errors
                .inc_by(store_errors - counted);
        }
        self.metrics
            .rate_store_state
            .set(rt.rate_store.state() as i64);
        // Reset first so upstreams removed by a reload disappear from the output.
        self.metrics.upstream_healthy.reset();
        self.metrics.upstream_health_state.reset();
        self.metrics.circuit_state.reset();
        self.metrics.inflight.reset();
        for svc in &rt.services {
            self.metrics
                .inflight
                .with_label_values(&[&*svc.name])
                .set(svc.inflight.get() as i64);
            let members = svc.members();
            for (i, u) in members.upstreams.iter().enumerate() {
                self.metrics
                    .upstream_healthy
                    .with_label_values(&[&*svc.name, &*u.state.address])
                    .set(i64::from(svc.is_healthy(&members, i)));
                if svc.config.health_check.is_some() {
                    self.metrics
                        .upstream_health_state
                        .with_label_values(&[&*svc.name, &*u.state.address])
                        .set(svc.health_state(&members, i).gauge());
                }
                if svc.config.circuit_breaker.is_some() {
                    self.metrics
                        .circuit_state
                        .with_label_values(&[&*svc.name, &*u.state.address])
                        .set(u.state.breaker.state().gauge());
                }
            }
        }
        self.metrics.certificate_expiry.reset();
        for l in &rt.config.listen {
            for c in l.tls.iter().flatten() {
                self.metrics
                    .certificate_expiry
                    .with_label_values(&[&l.address, c.label()])
                    .set(c.served.facts.not_after);
            }
        }
    }

    fn readiness(rt: &Runtime) -> (StatusCode, serde_json::Value) {
        let unready: Vec<&str> = rt
            .services
            .iter()
            .filter(|s| s.healthy_count() == 0)
            .map(|s| &*s.name)
            .collect();
        if unready.is_empty() {
            (StatusCode::OK, json!({ "ready": true }))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "ready": false, "services_without_healthy_upstream": unready }),
            )
        }
    }

    fn status(&self, rt: &Runtime) -> serde_json::Value {
        let routes: Vec<_> = rt
            .config
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "host": r.host,
                    "path_prefix": r.path_prefix,
                    "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "service": (!r.service.is_empty()).then_some(&r.service),
                    "services": (!r.split.is_empty()).then(|| r.split.iter().map(|(s, w)| {
                        json!({ "service": s, "weight": w })
                    }).collect::<Vec<_>>()),
                    "redirect": r.policy.redirect.as_ref().map(|d| d.status),
                    "conditions": r.conditions.is_some(),
                    "strip_prefix": r.strip_prefix,
                })
            })
            .collect();
        let services: Vec<_> = rt
            .services
            .iter()
            .map(|s| {
                let members = s.members();
                let upstreams: Vec<_> = members
                    .upstreams
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let breaker = s.config.circuit_breaker.map(|_| {
                            json!({
                                "state": u.state.breaker.state().name(),
                                "since": crate::access_log::rfc3339(u.state.breaker.since()),
                            })
                        });
                        json!({
                            "address": &*u.state.address,
                            "weight": u.backend.weight,
                            "source": u.info.source.kind(),
                            "resolved_from": u.info.source.name(),
                            "healthy": s.is_healthy(&members, i),
                            "health_state": s
                                .config
                                .health_check
                                .as_ref()
                                .map(|_| s.health_state(&members, i).name()),
                            "sticky_id": members.sticky_id(i),
                            "inflight": u.state.inflight.get(),
                            "circuit_breaker": breaker,
                        })
                    })
                    .collect();
                let lookups = s.lookups();
                let discovery = s.is_dynamic().then(|| {
                    json!({
                        "refreshed": lookups.refreshed.map(crate::access_log::rfc3339),
                        "ttl_seconds": lookups.ttl.map(|t| t.as_secs()),
                        "last_error": lookups.error,
                        "resolve_interval_seconds": s.config.resolve_interval.as_secs(),
                    })
                });
                json!({
                    "name": &*s.name,
                    "balance": s.config.balance.name(),
                    "tls": s.config.tls.is_some(),
                    "health_check": s.config.health_check.is_some(),
                    "adaptive_health_check": s
                        .config
                        .health_check
                        .as_ref()
                        .is_some_and(|h| h.adaptive.is_some()),
                    "sticky_cookie": s.config.sticky.as_ref().map(|c| c.cookie.as_str()),
                    "inflight": s.inflight.get(),
                    "discovery": discovery,
                    "upstreams": upstreams,
                })
            })
            .collect();
        let listeners: Vec<_> = rt
            .config
            .listen
            .iter()
            .map(|l| {
                let certs = l.tls.as_ref().map(|certs| {
                    certs
                        .iter()
                        .map(|c| {
                            let expires = std::time::UNIX_EPOCH
                                + std::time::Duration::from_secs(
                                    u64::try_from(c.served.facts.not_after).unwrap_or(0),
                                );
                            json!({
                                "cert": c.cert,
                                "server_names": c.served.names,
                                "serial": c.served.facts.serial,
                                "not_after": crate::access_log::rfc3339(expires),
                            })
                        })
                        .collect::<Vec<_>>()
                });
                json!({ "address": l.address, "tls": certs })
            })
            .collect();
        let last_reload = self.reloader.last().map(|r| {
            json!({
                "at": rfc3339(r.at),
                "result": if r.errors.is_empty() { "ok" } else { "error" },
                "errors": r.errors,
            })
        });
        let reloads = |result: &str| {
            self.metrics
                .config_reloads
                .with_label_values(&[result])
                .get()
        };
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": crate::COMMIT,
            "config": rt.config.source.display().to_string(),
            "started_at": rfc3339(self.started_at),
            "config_loaded_at": rfc3339(rt.loaded_at),
            "last_reload": last_reload,
            "reloads": { "ok": reloads("ok"), "error": reloads("error") },
            "tracing": rt.tracer.as_ref().map(|t| json!({
                "otlp_endpoint": crate::http_client::redacted(&t.config.endpoint),
                "sample_ratio": t.config.sample_ratio,
            })),
            "listeners": listeners,
            "rate_limit_store": {
                "kind": format!("{:?}", rt.rate_store.kind()).to_lowercase(),
                "state": rt.rate_store.state().name(),
                "errors": rt.rate_store.redis_errors(),
            },
            "routes": routes,
            "services": services,
        })
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// Who may use the admin endpoints. With a token, everything but `/healthz`, `/readyz`
/// and the dashboard page needs `Authorization: Bearer <token>` (compared in constant time); without
/// one, `POST` endpoints are refused unless the admin listener is loopback-only.
/// `None`: go on; else the answer.
pub fn access(
    req: &pingora::http::RequestHeader,
    token: Option<&AdminToken>,
    loopback_only: bool,
) -> Option<Response<Vec<u8>>> {
    // The dashboard page holds no data (it asks for the token, then fetches with it).
    let open = matches!(req.uri.path(), "/healthz" | "/readyz")
        || (req.uri.path() == "/" && req.method != http::Method::POST);
    match token {
        Some(_) if open => None,
        Some(t) => {
            let presented = req
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| crate::auth::bearer_token(v.as_bytes()).ok())
                .unwrap_or("");
            if crate::consumers::ct_eq(presented.as_bytes(), &t.0) {
                return None;
            }
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "unauthorized" }),
            );
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
            );
            Some(r)
        }
        None if req.method == http::Method::POST && !loopback_only => Some(json_response(
            StatusCode::FORBIDDEN,
            &json!({ "error": "admin_token_required",
                     "detail": "POST on a non-loopback admin listener needs admin.token" }),
        )),
        None => None,
    }
}

/// `POST /admin/cache/purge?route=NAME&prefix=/PATH`: drop the cached responses of one
/// route (every cached route without `route`) whose path starts with `prefix` (all of
/// them without it).
fn purge(rt: &Runtime, query: &str) -> Response<Vec<u8>> {
    use crate::routing::conditions::query_param;
    let text =
        |name: &str| query_param(query, name).map(|v| String::from_utf8_lossy(&v).into_owned());
    let route = text("route");
    let prefix = text("prefix");
    if prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "bad_prefix", "detail": "prefix is a path: it starts with /" }),
        );
    }
    if let Some(name) = &route {
        match rt.route(name) {
            None => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": "unknown_route", "route": name }),
                )
            }
            Some(r) if r.cache.is_none() => {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({ "error": "route_not_cached", "route": name }),
                )
            }
            Some(_) => {}
        }
    }
    let mut per_route = serde_json::Map::new();
    let mut total = 0;
    for r in rt.routes.routes() {
        let Some(cache) = &r.cache else { continue };
        if route.as_deref().is_some_and(|n| n != &*r.name) {
            continue;
        }
        let n = cache.purge(prefix.as_deref());
        total += n;
        per_route.insert(r.name.to_string(), json!(n));
    }
    log::info!(
        "admin: cache purge (route {}, prefix {}): {total} entries",
        route.as_deref().unwrap_or("*"),
        prefix.as_deref().unwrap_or("*")
    );
    json_response(
        StatusCode::OK,
        &json!({ "purged": total, "routes": per_route, "prefix": prefix }),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let rt = self.runtime.load_full();
        let req = session.req_header();
        let loopback_only = rt.config.admin.is_some_and(|a| a.ip().is_loopback());
        if let Some(denied) = access(req, rt.config.admin_token.as_ref(), loopback_only) {
            return denied;
        }
        if req.method == http::Method::POST && req.uri.path() == "/admin/reload" {
            return match self.reloader.reload().await {
                Ok(report) => json_response(
                    StatusCode::OK,
                    &json!({ "result": "ok", "needs_upgrade": report.needs_upgrade }),
                ),
                Err(errors) => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "result": "error", "errors": errors }),
                ),
            };
        }
        if req.method == http::Method::POST && req.uri.path() == "/admin/cache/purge" {
            return purge(&rt, req.uri.query().unwrap_or(""));
        }
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            let mut r = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({ "error": "method_not_allowed" }),
            );
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        match req.uri.path() {
            "/metrics" => {
                self.refresh_gauges(&rt);
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            // The pid tells `gatehouse-ctl upgrade` which process answered.
            "/healthz" => json_response(
                StatusCode::OK,
                &json!({ "status": "ok", "pid": std::process::id() }),
            ),
            "/readyz" => {
                let (code, body) = Self::readiness(&rt);
                json_response(code, &body)
            }
            "/admin/status" => json_response(StatusCode::OK, &self.status(&rt)),
            "/admin/stats" => json_response(StatusCode::OK, &self.stats.report()),
            "/" => {
                let mut r = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    DASHBOARD.as_bytes().to_vec(),
                );
                let h = r.headers_mut();
                // Inline script and style only; nothing from elsewhere, no framing.
                h.insert(
                    http::header::CONTENT_SECURITY_POLICY,
                    http::HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                         connect-src 'self'; img-src data:; frame-ancestors 'none'",
                    ),
                );
                h.insert(
                    http::header::X_CONTENT_TYPE_OPTIONS,
                    http::HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                r
            }
            "/admin/reload" | "/admin/cache/purge" => {
                let mut r = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({ "error": "method_not_allowed" }),
                );
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
                r
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({ "error": "not_found" })),
        }
    }
}

#[cfg(test)]
mod tests;
