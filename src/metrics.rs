//! Prometheus metrics (`logging` phase and the admin `/metrics` endpoint).
//!
//! Names and labels are part of the product contract (SPEC "Metrics"). Labels only ever
//! come from config names (route, service, upstream address as configured) and small
//! fixed sets (method, status, outcome), never from raw paths, client IPs or user ids,
//! so the series count is bounded by the config.
//!
//! The registry is Gatehouse's own (not prometheus' process-wide default), so tests can
//! run several gateways in one process and nothing depends on which prometheus version
//! another crate registered into.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::{Arc, OnceLock};

/// Seconds: the buckets of both latency histograms.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_health_state: IntGaugeVec,
    pub mirror_requests: IntCounterVec,
    pub circuit_state: IntGaugeVec,
    pub inflight: IntGaugeVec,
    pub auth_failures: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub cache_requests: IntCounterVec,
    /// Redis store failures answered per `on_error` (synced from the store at scrape).
    pub rate_store_errors: prometheus::IntCounter,
    /// The shared rate-limit store: 0 up, 1 degraded (failing), 2 down (skipped).
    pub rate_store_state: prometheus::IntGauge,
    /// Lookups of a service's members that failed (the last good set was kept).
    pub discovery_errors: IntCounterVec,
    /// When each listener certificate expires (unix seconds), filled in at scrape.
    pub certificate_expiry: IntGaugeVec,
    /// One upstream attempt, from choosing the upstream to its response head (or the
    /// failure), by service and upstream.
    pub upstream_duration: HistogramVec,
    /// Request and response body bytes, by route and service.
    pub request_bytes: IntCounterVec,
    pub response_bytes: IntCounterVec,
    /// Spans handed to the OTLP exporter and accepted by the collector, and spans
    /// dropped (queue full, export failed).
    pub spans_exported: IntCounter,
    pub spans_dropped: IntCounter,
    /// Downstream connections open now, and the limit (`server.max_connections`; absent
    /// without one), filled in at scrape from the listeners' permits.
    connections_open: prometheus::IntGauge,
    connections_limit: prometheus::IntGauge,
    connection_permits: OnceLock<(Arc<tokio::sync::Semaphore>, usize)>,
    /// Every metric family this exports, series or not (recorded at registration).
    names: Vec<String>,
}

/// The outcome label of one upstream attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Refused,
    /// The TLS handshake failed (certificate not trusted, expired or for another name;
    /// a client certificate refused).
    TlsError,
}

impl Outcome {
    pub const COUNT: usize = 5;
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Refused,
        Outcome::TlsError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::TlsError => "tls_error",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_requests_total",
                "Requests answered, by route and status.",
            ),
            &["route", "service", "method", "status"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_request_duration_seconds",
                "Time from request start to the end of logging, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "service"],
        )
        .expect("static metric definition");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_upstream_requests_total",
                "Attempts sent to upstreams, by outcome (ok, error, timeout, refused, tls_error).",
            ),
            &["service", "upstream", "outcome"],
        )
        .expect("static metric definition");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "gatehouse_upstream_healthy",
                "1 while the upstream passes its health checks, else 0.",
            ),
            &["service", "upstream"],
        )
        .expect("static metric definition");
        let upstream_health_state = IntGaugeVec::new(
            Opts::new(
                "gatehouse_upstream_health_state",
                "Active health-check state: 0 healthy, 1 suspect (adaptive checks: a check failed, checked more often), 2 unhealthy (out of rotation).",
            ),
            &["service", "upstream"],
        )
        .expect("static metric definition");
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_mirror_requests_total",
                "Mirrored copies of requests, by outcome (ok, error, timeout, dropped: too many in flight, skipped: body over max_body).",
            ),
            &["route", "service", "outcome"],
        )
        .expect("static metric definition");
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "gatehouse_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            &["service", "upstream"],
        )
        .expect("static metric definition");
        let inflight = IntGaugeVec::new(
            Opts::new(
                "gatehouse_inflight_requests",
                "Requests in flight, by service.",
            ),
            &["service"],
        )
        .expect("static metric definition");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "gatehouse_auth_failures_total",
                "Requests refused by JWT auth, by route and reason class.",
            ),
            &["route", "reason"],
        )
        .expect("static metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gatehouse_config_reloads_total",
                "Config reloads (SIGHUP or POST /admin/reload), by result (ok, error).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "gatehouse_rate_limited_total",
                "Requests refused by a rate-limit policy, by route and policy.",
            ),
            &["route", "policy"],
        )
        .expect("static metric definition");
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "gatehouse_cache_requests_total",
                "Cacheable requests on cached routes, by result (hit, miss).",
            ),
            &["route", "result"],
        )
        .expect("static metric definition");
        let rate_store_errors = prometheus::IntCounter::new(
            "gatehouse_rate_limit_store_errors_total",
            "Rate-limit decisions the Redis store could not make in time (on_error applied).",
        )
        .expect("static metric definition");
        let rate_store_state = prometheus::IntGauge::new(
            "gatehouse_rate_limit_store_state",
            "The shared rate-limit store: 0 up, 1 degraded (recent failures), 2 down (decisions apply on_error without asking it).",
        )
        .expect("static metric definition");
        let discovery_errors = IntCounterVec::new(
            Opts::new(
                "gatehouse_discovery_errors_total",
                "DNS lookups of a service's upstreams that failed or came back empty (the last good set stays).",
            ),
            &["service"],
        )
        .expect("static metric definition");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "gatehouse_tls_certificate_expiry_seconds",
                "When each listener certificate expires, as unix time in seconds.",
            ),
            &["listener", "name"],
        )
        .expect("static metric definition");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_upstream_duration_seconds",
                "One upstream attempt, from choosing the upstream to its response head (or failure).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "upstream"],
        )
        .expect("static metric definition");
        let request_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_request_bytes_total",
                "Request body bytes received from clients, by route.",
            ),
            &["route", "service"],
        )
        .expect("static metric definition");
        let response_bytes = IntCounterVec::new(
            Opts::new(
                "gatehouse_response_bytes_total",
                "Response body bytes sent to clients, by route.",
            ),
            &["route", "service"],
        )
        .expect("static metric definition");
        let spans_exported = IntCounter::new(
            "gatehouse_tracing_spans_exported_total",
            "Spans the OTLP collector accepted.",
        )
        .expect("static metric definition");
        let spans_dropped = IntCounter::new(
            "gatehouse_tracing_spans_dropped_total",
            "Spans dropped: the export queue was full or the collector failed.",
        )
        .expect("static metric definition");
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "gatehouse_build_info",
                "1, labelled with the version and git commit of the running binary.",
            ),
            &["version", "commit"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::COMMIT])
            .set(1);
        let connections_open = prometheus::IntGauge::new(
            "gatehouse_downstream_connections",
            "Client connections open now, over all listeners.",
        )
        .expect("static metric definition");
        let connections_limit = prometheus::IntGauge::new(
            "gatehouse_downstream_connections_limit",
            "server.max_connections: at this many open connections, accepting waits.",
        )
        .expect("static metric definition");
        let mut names = Vec::new();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_open.clone()),
            Box::new(discovery_errors.clone()),
            Box::new(rate_store_state.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(upstream_healthy.clone()),
            Box::new(upstream_health_state.clone()),
            Box::new(mirror_requests.clone()),
            Box::new(circuit_state.clone()),
            Box::new(inflight.clone()),
            Box::new(auth_failures.clone()),
            Box::new(config_reloads.clone()),
            Box::new(rate_limited.clone()),
            Box::new(cache_requests.clone()),
            Box::new(rate_store_errors.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(request_bytes.clone()),
            Box::new(response_bytes.clone()),
            Box::new(spans_exported.clone()),
            Box::new(spans_dropped.clone()),
            Box::new(build_info),
        ] {
            names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry
                .register(c)
                .expect("metric names are unique in a fresh registry");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, …
        // (read from /proc at scrape).
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            names.extend(process.desc().iter().map(|d| d.fq_name.clone()));
            if let Err(e) = registry.register(Box::new(process)) {
                log::warn!("process metrics unavailable: {e}");
            }
        }
        // Registered only when a limit is set (see `set_connection_gauge`).
        names.extend(connections_limit.desc().iter().map(|d| d.fq_name.clone()));
        names.sort();
        names.dedup();
        Metrics {
            registry,
            requests,
            duration,
            upstream_requests,
            upstream_healthy,
            upstream_health_state,
            mirror_requests,
            circuit_state,
            inflight,
            auth_failures,
            config_reloads,
            rate_limited,
            cache_requests,
            rate_store_errors,
            rate_store_state,
            discovery_errors,
            certificate_expiry,
            upstream_duration,
            request_bytes,
            response_bytes,
            spans_exported,
            spans_dropped,
            connections_open,
            connections_limit,
            connection_permits: OnceLock::new(),
            names,
        }
    }

    /// The listeners' connection permits (one per open connection) and the limit, if
    /// one is configured: the gauges read them at scrape.
    pub fn set_connection_gauge(&self, permits: Arc<tokio::sync::Semaphore>, limit: Option<usize>) {
        let total = permits.available_permits();
        if let Some(limit) = limit {
            self.connections_limit
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
            let _ = self
                .registry
                .register(Box::new(self.connections_limit.clone()));
        }
        let _ = self.connection_permits.set((permits, total));
    }

    /// Update the connection gauge (at scrape).
    pub fn refresh_connections(&self) {
        if let Some((permits, total)) = self.connection_permits.get() {
            let open = total.saturating_sub(permits.available_permits());
            self.connections_open
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }

    /// The names of every metric family Gatehouse exports (whether or not it has a
    /// series yet): the Grafana dashboard's test checks its queries against them.
    pub fn family_names(&self) -> &[String] {
        &self.names
    }

    /// The attempt counters of one upstream, in [`Outcome::ALL`] order.
    pub fn attempt_counters(&self, service: &str, upstream: &str) -> [IntCounter; Outcome::COUNT] {
        Outcome::ALL.map(|o| {
            self.upstream_requests
                .with_label_values(&[service, upstream, o.label()])
        })
    }

    /// Count one answered request (`requests_total`, the duration histogram and the
    /// body bytes each way).
    pub fn record_request(
        &self,
        cached: Option<&RouteMetrics>,
        labels: [&str; 2],
        method: &http::Method,
        status: u16,
        seconds: f64,
        bytes: [u64; 2],
    ) {
        let [route, service] = labels;
        let [received, sent] = bytes;
        match cached {
            Some(c) => {
                let [req, resp] = c.bytes.get_or_init(|| {
                    [
                        self.request_bytes.with_label_values(&[route, service]),
                        self.response_bytes.with_label_values(&[route, service]),
                    ]
                });
                req.inc_by(received);
                resp.inc_by(sent);
            }
            None => {
                self.request_bytes
                    .with_label_values(&[route, service])
                    .inc_by(received);
                self.response_bytes
                    .with_label_values(&[route, service])
                    .inc_by(sent);
            }
        }
        let m = method_index(method);
        match cached {
            Some(c) if status == 200 => c.ok[m]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[route, service, METHODS[m], "200"])
                })
                .inc(),
            _ => self
                .requests
                .with_label_values(&[route, service, METHODS[m], status_label(status)])
                .inc(),
        }
        match cached {
            Some(c) => c
                .duration
                .get_or_init(|| self.duration.with_label_values(&[route, service]))
                .observe(seconds),
            None => self
                .duration
                .with_label_values(&[route, service])
                .observe(seconds),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label values; [`method_index`] indexes them.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// Index of the method's label in [`METHODS`].
pub fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

/// A route's metric children, resolved on first use: `with_label_values` hashes every
/// label under a lock, on every request otherwise. `ok` holds
/// `gatehouse_requests_total{status="200"}` by method; other statuses are looked up.
#[derive(Default)]
pub struct RouteMetrics {
    pub duration: OnceLock<Histogram>,
    pub ok: [OnceLock<IntCounter>; 8],
    /// `gatehouse_request_bytes_total` and `gatehouse_response_bytes_total`.
    pub bytes: OnceLock<[IntCounter; 2]>,
}

/// Status codes as static strings (no allocation per request).
pub fn status_label(code: u16) -> &'static str {
    if (100..600).contains(&code) {
        STATUS_TABLE[(code - 100) as usize]
    } else {
        "other"
    }
}

macro_rules! status_strs {
    ($($n:literal)*) => { [$(stringify!($n)),*] };
}

const STATUS_TABLE: [&str; 500] = status_strs!(
    100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199
    200 201 202 203 204 205 206 207 208 209 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258 259 260 261 262 263 264 265 266 267 268 269 270 271 272 273 274 275 276 277 278 279 280 281 282 283 284 285 286 287 288 289 290 291 292 293 294 295 296 297 298 299
    300 301 302 303 304 305 306 307 308 309 310 311 312 313 314 315 316 317 318 319 320 321 322 323 324 325 326 327 328 329 330 331 332 333 334 335 336 337 338 339 340 341 342 343 344 345 346 347 348 349 350 351 352 353 354 355 356 357 358 359 360 361 362 363 364 365 366 367 368 369 370 371 372 373 374 375 376 377 378 379 380 381 382 383 384 385 386 387 388 389 390 391 392 393 394 395 396 397 398 399
    400 401 402 403 404 405 406 407 408 409 410 411 412 413 414 415 416 417 418 419 420 421 422 423 424 425 426 427 428 429 430 431 432 433 434 435 436 437 438 439 440 441 442 443 444 445 446 447 448 449 450 451 452 453 454 455 456 457 458 459 460 461 462 463 464 465 466 467 468 469 470 471 472 473 474 475 476 477 478 479 480 481 482 483 484 485 486 487 488 489 490 491 492 493 494 495 496 497 498 499
    500 501 502 503 504 505 506 507 508 509 510 511 512 513 514 515 516 517 518 519 520 521 522 523 524 525 526 527 528 529 530 531 532 533 534 535 536 537 538 539 540 541 542 543 544 545 546 547 548 549 550 551 552 553 554 555 556 557 558 559 560 561 562 563 564 565 566 567 568 569 570 571 572 573 574 575 576 577 578 579 580 581 582 583 584 585 586 587 588 589 590 591 592 593 594 595 596 597 598 599
);
