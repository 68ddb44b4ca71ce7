//! The Prometheus metrics (OpenMetrics text on the admin server's `/metrics`).
//!
//! Every label value comes from configuration (route and backend names) or a small fixed set
//! (methods, status codes, states), never from request data, so cardinality stays bounded. Label
//! values are `Arc<str>` shared with the routing table: recording a request allocates nothing
//! once its series exists.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Metric names, in one place (also listed in the README).
pub mod names {
    /// `tidegate_requests`.
    pub const REQUESTS: &str = "tidegate_requests";
    /// `tidegate_request_duration_seconds`.
    pub const REQUEST_DURATION: &str = "tidegate_request_duration_seconds";
    /// `tidegate_upstream_connect_errors`.
    pub const UPSTREAM_CONNECT_ERRORS: &str = "tidegate_upstream_connect_errors";
    /// `tidegate_upstream_retries`.
    pub const UPSTREAM_RETRIES: &str = "tidegate_upstream_retries";
    /// `tidegate_open_connections`.
    pub const OPEN_CONNECTIONS: &str = "tidegate_open_connections";
    /// `tidegate_backend_endpoints`.
    pub const BACKEND_ENDPOINTS: &str = "tidegate_backend_endpoints";
    /// `tidegate_circuit_breaker_open`.
    pub const CIRCUIT_BREAKER_OPEN: &str = "tidegate_circuit_breaker_open";
    /// `tidegate_config_reloads`.
    pub const CONFIG_RELOADS: &str = "tidegate_config_reloads";
    /// `tidegate_config_last_reload_success_timestamp_seconds`.
    pub const CONFIG_LAST_RELOAD_SUCCESS: &str =
        "tidegate_config_last_reload_success_timestamp_seconds";
    /// `tidegate_config_stale_since_timestamp_seconds`.
    pub const CONFIG_STALE_SINCE: &str = "tidegate_config_stale_since_timestamp_seconds";
    /// `tidegate_routes`.
    pub const ROUTES: &str = "tidegate_routes";
    /// `tidegate_config_compile_duration_seconds`.
    pub const CONFIG_COMPILE_DURATION: &str = "tidegate_config_compile_duration_seconds";
    /// `tidegate_controller_events`.
    pub const CONTROLLER_EVENTS: &str = "tidegate_controller_events";
    /// `tidegate_controller_errors`.
    pub const CONTROLLER_ERRORS: &str = "tidegate_controller_errors";
    /// `tidegate_access_log_dropped`.
    pub const ACCESS_LOG_DROPPED: &str = "tidegate_access_log_dropped";
    /// `tidegate_rate_limit_decisions`.
    pub const RATE_LIMIT_DECISIONS: &str = "tidegate_rate_limit_decisions";
    /// `tidegate_rate_limit_keys`.
    pub const RATE_LIMIT_KEYS: &str = "tidegate_rate_limit_keys";
    /// `tidegate_rate_limit_evictions`.
    pub const RATE_LIMIT_EVICTIONS: &str = "tidegate_rate_limit_evictions";
    /// `tidegate_access_decisions`.
    pub const ACCESS_DECISIONS: &str = "tidegate_access_decisions";
    /// `tidegate_redis_errors`.
    pub const REDIS_ERRORS: &str = "tidegate_redis_errors";
    /// `tidegate_redis_duration_seconds`.
    pub const REDIS_DURATION: &str = "tidegate_redis_duration_seconds";
    /// `tidegate_redis_connected`.
    pub const REDIS_CONNECTED: &str = "tidegate_redis_connected";

    /// `tidegate_tls_handshakes`.
    pub const TLS_HANDSHAKES: &str = "tidegate_tls_handshakes";
    /// `tidegate_tls_certificate_expiry_timestamp_seconds`.
    pub const TLS_CERTIFICATE_EXPIRY: &str = "tidegate_tls_certificate_expiry_timestamp_seconds";
    /// `tidegate_proxy_protocol_rejected`.
    pub const PROXY_PROTOCOL_REJECTED: &str = "tidegate_proxy_protocol_rejected";

    /// `tidegate_dns_resolutions`.
    pub const DNS_RESOLUTIONS: &str = "tidegate_dns_resolutions";
    /// `tidegate_dns_stale`.
    pub const DNS_STALE: &str = "tidegate_dns_stale";

    /// `tidegate_l4_connections`.
    pub const L4_CONNECTIONS: &str = "tidegate_l4_connections";
    /// `tidegate_l4_open_connections`.
    pub const L4_OPEN_CONNECTIONS: &str = "tidegate_l4_open_connections";
    /// `tidegate_l4_bytes`.
    pub const L4_BYTES: &str = "tidegate_l4_bytes";
    /// `tidegate_jwks_fetches`.
    pub const JWKS_FETCHES: &str = "tidegate_jwks_fetches";
    /// `tidegate_jwks_stale`.
    pub const JWKS_STALE: &str = "tidegate_jwks_stale";

    /// Every name above (counters without their `_total` suffix).
    pub const ALL: &[&str] = &[
        REQUESTS,
        REQUEST_DURATION,
        UPSTREAM_CONNECT_ERRORS,
        UPSTREAM_RETRIES,
        OPEN_CONNECTIONS,
        BACKEND_ENDPOINTS,
        CIRCUIT_BREAKER_OPEN,
        CONFIG_RELOADS,
        CONFIG_LAST_RELOAD_SUCCESS,
        CONFIG_STALE_SINCE,
        ROUTES,
        CONFIG_COMPILE_DURATION,
        CONTROLLER_EVENTS,
        CONTROLLER_ERRORS,
        ACCESS_LOG_DROPPED,
        RATE_LIMIT_DECISIONS,
        RATE_LIMIT_KEYS,
        RATE_LIMIT_EVICTIONS,
        ACCESS_DECISIONS,
        REDIS_ERRORS,
        REDIS_DURATION,
        REDIS_CONNECTED,
        TLS_HANDSHAKES,
        TLS_CERTIFICATE_EXPIRY,
        PROXY_PROTOCOL_REJECTED,
        DNS_RESOLUTIONS,
        DNS_STALE,
        L4_CONNECTIONS,
        L4_OPEN_CONNECTIONS,
        L4_BYTES,
        JWKS_FETCHES,
        JWKS_STALE,
    ];
}

/// Request-duration buckets, in seconds: fine below 100 ms, where a proxy's latency lives.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An HTTP method as a bounded label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    /// `GET`.
    GET,
    /// `HEAD`.
    HEAD,
    /// `POST`.
    POST,
    /// `PUT`.
    PUT,
    /// `DELETE`.
    DELETE,
    /// `CONNECT`.
    CONNECT,
    /// `OPTIONS`.
    OPTIONS,
    /// `TRACE`.
    TRACE,
    /// `PATCH`.
    PATCH,
    /// Any other method.
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => MethodLabel::GET,
            Method::HEAD => MethodLabel::HEAD,
            Method::POST => MethodLabel::POST,
            Method::PUT => MethodLabel::PUT,
            Method::DELETE => MethodLabel::DELETE,
            Method::CONNECT => MethodLabel::CONNECT,
            Method::OPTIONS => MethodLabel::OPTIONS,
            Method::TRACE => MethodLabel::TRACE,
            Method::PATCH => MethodLabel::PATCH,
            _ => MethodLabel::OTHER,
        }
    }
}

/// `{route, backend, method, code, reason}`; `reason` is empty (no label) when the upstream
/// answered, and says why when the gateway answered itself (`no_route`, `breaker_open`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The `route` label.
    pub route: Arc<str>,
    /// The `backend` label.
    pub backend: Arc<str>,
    /// The `method` label.
    pub method: MethodLabel,
    /// The `code` label.
    pub code: u16,
    /// The `reason` label.
    pub reason: &'static str,
}

/// The request series of one route and backend, looked up in the families once: a request
/// then records without hashing its labels (two family lookups cost about 1,300 instructions
/// per request).
#[derive(Debug, Default)]
pub struct RequestSeries {
    duration: OnceLock<Histogram>,
    /// By method, code and reason; at most [`RequestSeries::CACHED`] (more go to the family).
    requests: RwLock<Vec<(MethodLabel, u16, &'static str, Counter)>>,
}

impl RequestSeries {
    /// How many (method, code, reason) series one route and backend keep at hand.
    pub const CACHED: usize = 32;

    /// Counts one request and observes its duration; `labels` builds the full label set the
    /// first time a series is needed.
    pub fn record(
        &self,
        metrics: &Metrics,
        (method, code, reason): (MethodLabel, u16, &'static str),
        labels: impl FnOnce() -> RequestLabels,
        seconds: f64,
    ) {
        let hit = {
            let cached = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            cached
                .iter()
                .find(|(m, c, r, _)| *m == method && *c == code && *r == reason)
                .map(|(.., counter)| counter.inc())
                .is_some()
        };
        let labels = (!hit || self.duration.get().is_none()).then(labels);
        if let Some(labels) = &labels
            && !hit
        {
            let counter = metrics.requests.get_or_create(labels).clone();
            counter.inc();
            let mut cached = self
                .requests
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if cached.len() < Self::CACHED
                && !cached
                    .iter()
                    .any(|(m, c, r, _)| *m == method && *c == code && *r == reason)
            {
                cached.push((method, code, reason, counter));
            }
        }
        self.duration
            .get_or_init(|| {
                let labels = labels.expect("built when the duration series is not cached yet");
                metrics
                    .request_duration
                    .get_or_create(&RouteBackendLabels {
                        route: labels.route,
                        backend: labels.backend,
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

/// `{route, backend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteBackendLabels {
    /// The `route` label.
    pub route: Arc<str>,
    /// The `backend` label.
    pub backend: Arc<str>,
}

/// `{name, record_type}`: one DNS query a Backend follows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// The `name` label: the name looked up.
    pub name: Arc<str>,
    /// The `record_type` label: `A`, `AAAA` or `SRV`.
    pub record_type: &'static str,
}

/// `{name, record_type, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsResultLabels {
    /// The `name` label: the name looked up.
    pub name: Arc<str>,
    /// The `record_type` label: `A`, `AAAA` or `SRV`.
    pub record_type: &'static str,
    /// The `result` label: `answer`, `empty`, `nxdomain`, `servfail`, `timeout`, `error`.
    pub result: &'static str,
}

/// `{uri, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksFetchLabels {
    /// The `uri` label: the JWKS URI.
    pub uri: Arc<str>,
    /// The `result` label: `ok`, `http_error`, `unreachable`, `invalid`.
    pub result: &'static str,
}

/// `{uri}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// The `uri` label: the JWKS URI.
    pub uri: Arc<str>,
}

/// `{backend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The `backend` label.
    pub backend: Arc<str>,
}

/// `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The `route` label.
    pub route: Arc<str>,
}

/// `{policy, limit, result}`: one rate-limit decision (`result`: `allowed`, `limited`,
/// `unavailable_allowed`, `unavailable_denied`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// The `policy` label (`namespace/name`).
    pub policy: Arc<str>,
    /// The `limit` label.
    pub limit: Arc<str>,
    /// The `result` label.
    pub result: &'static str,
}

/// `{route, mechanism, result}`: one access-control decision (`mechanism`: `ip`, `cors`,
/// `basic`; `result`: `allowed`, `denied`, `preflight`, `unknown_origin`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessLabels {
    /// The `route` label (the rule's label).
    pub route: Arc<str>,
    /// The `mechanism` label.
    pub mechanism: &'static str,
    /// The `result` label.
    pub result: &'static str,
}

/// `{policy, limit}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The `policy` label (`namespace/name`).
    pub policy: Arc<str>,
    /// The `limit` label.
    pub limit: Arc<str>,
}

/// `{listener, protocol}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The `listener` label.
    pub listener: &'static str,
    /// The `protocol` label.
    pub protocol: &'static str,
}

/// `{route, backend, result}`: one connection an L4 Route took (`result`: `forwarded`,
/// `limited`, `no_backend`, `connect_failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4ConnectionLabels {
    /// The `route` label (`namespace/name`).
    pub route: Arc<str>,
    /// The `backend` label (empty when none was chosen).
    pub backend: Arc<str>,
    /// The `result` label.
    pub result: &'static str,
}

/// `{route, backend, direction}` (`direction`: `to_backend`, `to_client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4BytesLabels {
    /// The `route` label (`namespace/name`).
    pub route: Arc<str>,
    /// The `backend` label.
    pub backend: Arc<str>,
    /// The `direction` label.
    pub direction: &'static str,
}

/// `{backend, state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStateLabels {
    /// The `backend` label.
    pub backend: Arc<str>,
    /// The `state` label.
    pub state: &'static str,
}

/// `{result}` (`success` or `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The `result` label.
    pub result: &'static str,
}

/// `{state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The `state` label.
    pub state: &'static str,
}

/// `{result, version}` of a TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `success`, `unrecognized_name` (no certificate for the server name), `failed` (a TLS
    /// error: no common version or cipher, bad data) or `aborted` (the connection closed or
    /// timed out).
    pub result: &'static str,
    /// `TLSv1.3` or `TLSv1.2` for a completed handshake, else empty.
    pub version: &'static str,
}

/// `{listener, reason}` of a connection refused for its PROXY protocol header.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyProtocolLabels {
    /// `http`, `https` or `l4`.
    pub listener: &'static str,
    /// `missing`, `malformed_v1`, `malformed_v2`, `too_large` or `timeout`.
    pub reason: &'static str,
}

/// `{certificate}`: where a served certificate comes from (`namespace/name` of its Secret).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// The `certificate` label.
    pub certificate: Arc<str>,
}

/// `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The `kind` label.
    pub kind: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Redis round trips live well under a millisecond on a local network.
fn redis_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    ])
}

fn compile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

/// Every metric Tidegate exports.
pub struct Metrics {
    registry: Registry,
    /// [`names::REQUESTS`].
    pub requests: Family<RequestLabels, Counter>,
    /// [`names::REQUEST_DURATION`].
    pub request_duration: Family<RouteBackendLabels, Histogram, fn() -> Histogram>,
    /// [`names::UPSTREAM_CONNECT_ERRORS`].
    pub upstream_connect_errors: Family<BackendLabels, Counter>,
    /// [`names::UPSTREAM_RETRIES`].
    pub upstream_retries: Family<RouteLabels, Counter>,
    /// [`names::OPEN_CONNECTIONS`].
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// [`names::BACKEND_ENDPOINTS`].
    pub backend_endpoints: Family<EndpointStateLabels, Gauge>,
    /// [`names::CIRCUIT_BREAKER_OPEN`].
    pub circuit_breaker_open: Family<BackendLabels, Gauge>,
    /// [`names::CONFIG_RELOADS`].
    pub config_reloads: Family<ResultLabels, Counter>,
    /// [`names::CONFIG_LAST_RELOAD_SUCCESS`].
    pub config_last_reload_success: Gauge<f64, AtomicU64>,
    /// [`names::CONFIG_STALE_SINCE`].
    pub config_stale_since: Gauge<f64, AtomicU64>,
    /// [`names::ROUTES`].
    pub routes: Family<StateLabels, Gauge>,
    /// [`names::CONFIG_COMPILE_DURATION`].
    pub compile_duration: Histogram,
    /// [`names::CONTROLLER_EVENTS`].
    pub controller_events: Family<KindLabels, Counter>,
    /// [`names::CONTROLLER_ERRORS`].
    pub controller_errors: Family<KindLabels, Counter>,
    /// [`names::ACCESS_LOG_DROPPED`].
    pub access_log_dropped: Counter,
    /// [`names::RATE_LIMIT_DECISIONS`].
    pub rate_limit_decisions: Family<RateLimitLabels, Counter>,
    /// [`names::RATE_LIMIT_KEYS`].
    pub rate_limit_keys: Family<LimitLabels, Gauge>,
    /// [`names::RATE_LIMIT_EVICTIONS`].
    pub rate_limit_evictions: Family<LimitLabels, Counter>,
    /// [`names::ACCESS_DECISIONS`].
    pub access_decisions: Family<AccessLabels, Counter>,
    /// [`names::REDIS_ERRORS`].
    pub redis_errors: Family<KindLabels, Counter>,
    /// [`names::REDIS_DURATION`].
    pub redis_duration: Histogram,
    /// [`names::REDIS_CONNECTED`].
    pub redis_connected: Gauge,
    /// [`names::TLS_HANDSHAKES`].
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    /// [`names::TLS_CERTIFICATE_EXPIRY`].
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    /// [`names::PROXY_PROTOCOL_REJECTED`].
    pub proxy_protocol_rejected: Family<ProxyProtocolLabels, Counter>,
    /// [`names::DNS_RESOLUTIONS`].
    pub dns_resolutions: Family<DnsResultLabels, Counter>,
    /// [`names::DNS_STALE`].
    pub dns_stale: Family<DnsLabels, Gauge>,
    /// [`names::L4_CONNECTIONS`].
    pub l4_connections: Family<L4ConnectionLabels, Counter>,
    /// [`names::L4_OPEN_CONNECTIONS`].
    pub l4_open_connections: Family<RouteLabels, Gauge>,
    /// [`names::L4_BYTES`].
    pub l4_bytes: Family<L4BytesLabels, Counter>,
    /// [`names::JWKS_FETCHES`].
    pub jwks_fetches: Family<JwksFetchLabels, Counter>,
    /// [`names::JWKS_STALE`].
    pub jwks_stale: Family<JwksLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            upstream_connect_errors: Family::default(),
            upstream_retries: Family::default(),
            open_connections: Family::default(),
            backend_endpoints: Family::default(),
            circuit_breaker_open: Family::default(),
            config_reloads: Family::default(),
            config_last_reload_success: Gauge::default(),
            config_stale_since: Gauge::default(),
            routes: Family::default(),
            compile_duration: compile_histogram(),
            controller_events: Family::default(),
            controller_errors: Family::default(),
            access_log_dropped: Counter::default(),
            rate_limit_decisions: Family::default(),
            rate_limit_keys: Family::default(),
            rate_limit_evictions: Family::default(),
            access_decisions: Family::default(),
            redis_errors: Family::default(),
            redis_duration: redis_histogram(),
            redis_connected: Gauge::default(),
            tls_handshakes: Family::default(),
            tls_certificate_expiry: Family::default(),
            proxy_protocol_rejected: Family::default(),
            dns_resolutions: Family::default(),
            dns_stale: Family::default(),
            l4_connections: Family::default(),
            l4_open_connections: Family::default(),
            l4_bytes: Family::default(),
            jwks_fetches: Family::default(),
            jwks_stale: Family::default(),
            registry: Registry::default(),
        };
        use names::*;
        registry.register(
            REQUESTS,
            "Requests answered, by route, backend, method, status code and, for answers the gateway made itself, reason",
            m.requests.clone(),
        );
        registry.register(
            REQUEST_DURATION,
            "Time from a request's arrival to the end of its response, by route and backend",
            m.request_duration.clone(),
        );
        registry.register(
            UPSTREAM_CONNECT_ERRORS,
            "Failed TCP connects to a backend's endpoints",
            m.upstream_connect_errors.clone(),
        );
        registry.register(
            UPSTREAM_RETRIES,
            "Retried upstream attempts, by route",
            m.upstream_retries.clone(),
        );
        registry.register(
            OPEN_CONNECTIONS,
            "Client connections open, by listener and protocol",
            m.open_connections.clone(),
        );
        registry.register(
            BACKEND_ENDPOINTS,
            "Endpoints of a backend, by state (ready: gets new requests; total: known)",
            m.backend_endpoints.clone(),
        );
        registry.register(
            CIRCUIT_BREAKER_OPEN,
            "1 while a backend's circuit breaker is open",
            m.circuit_breaker_open.clone(),
        );
        registry.register(
            CONFIG_RELOADS,
            "Configuration reloads, by result",
            m.config_reloads.clone(),
        );
        registry.register(
            CONFIG_LAST_RELOAD_SUCCESS,
            "Unix time of the last successful configuration reload",
            m.config_last_reload_success.clone(),
        );
        registry.register(
            CONFIG_STALE_SINCE,
            "Unix time since when a configuration source (a watch, the config path) fails and the served configuration may be stale; 0 while every source is current",
            m.config_stale_since.clone(),
        );
        registry.register(
            ROUTES,
            "Route objects, by state (accepted, rejected, ignored)",
            m.routes.clone(),
        );
        registry.register(
            CONFIG_COMPILE_DURATION,
            "Time to compile the configuration into a routing table",
            m.compile_duration.clone(),
        );
        registry.register(
            CONTROLLER_EVENTS,
            "Configuration events seen by the controller, by kind",
            m.controller_events.clone(),
        );
        registry.register(
            CONTROLLER_ERRORS,
            "Errors of the controller's sources (unreadable files, failed watches), by kind",
            m.controller_errors.clone(),
        );
        registry.register(
            ACCESS_LOG_DROPPED,
            "Access-log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        registry.register(
            RATE_LIMIT_DECISIONS,
            "Rate-limit decisions, by policy, limit and result (allowed, limited, unavailable_allowed, unavailable_denied)",
            m.rate_limit_decisions.clone(),
        );
        registry.register(
            RATE_LIMIT_KEYS,
            "Keys (clients) a Local rate limit keeps in this replica",
            m.rate_limit_keys.clone(),
        );
        registry.register(
            RATE_LIMIT_EVICTIONS,
            "Keys a Local rate limit evicted while they still counted (bounded by maxKeys)",
            m.rate_limit_evictions.clone(),
        );
        registry.register(
            ACCESS_DECISIONS,
            "Access-control decisions, by route, mechanism (ip, cors, basic) and result (allowed, denied, preflight, unknown_origin)",
            m.access_decisions.clone(),
        );
        registry.register(
            REDIS_ERRORS,
            "Redis calls of Global rate limits that failed or were not made, by kind (timeout, connection, response, overloaded, disconnected)",
            m.redis_errors.clone(),
        );
        registry.register(
            REDIS_DURATION,
            "Time of one Redis call of Global rate limits (one per request)",
            m.redis_duration.clone(),
        );
        registry.register(
            REDIS_CONNECTED,
            "1 while the connection to Redis is up",
            m.redis_connected.clone(),
        );
        registry.register(
            TLS_HANDSHAKES,
            "TLS handshakes on the HTTPS listener, by result and TLS version",
            m.tls_handshakes.clone(),
        );
        registry.register(
            TLS_CERTIFICATE_EXPIRY,
            "Unix time a served certificate expires (notAfter), by certificate",
            m.tls_certificate_expiry.clone(),
        );
        registry.register(
            PROXY_PROTOCOL_REJECTED,
            "Connections from --proxy-protocol-from peers closed because their PROXY protocol header was missing, malformed, too large or late, by listener and reason",
            m.proxy_protocol_rejected.clone(),
        );
        registry.register(
            DNS_RESOLUTIONS,
            "DNS lookups of Backends that follow DNS, by name, record type and result (answer, empty, nxdomain, servfail, timeout, error)",
            m.dns_resolutions.clone(),
        );
        registry.register(
            DNS_STALE,
            "1 while a followed DNS name's lookups fail and its last good answer serves, stale",
            m.dns_stale.clone(),
        );
        registry.register(
            L4_CONNECTIONS,
            "Connections L4 Routes took, by route, backend and result (forwarded, limited, no_backend, connect_failed)",
            m.l4_connections.clone(),
        );
        registry.register(
            L4_OPEN_CONNECTIONS,
            "Connections open through an L4 Route",
            m.l4_open_connections.clone(),
        );
        registry.register(
            L4_BYTES,
            "Bytes copied by L4 Routes, by route, backend and direction (to_backend, to_client)",
            m.l4_bytes.clone(),
        );
        registry.register(
            JWKS_FETCHES,
            "Fetches of JWKS URIs, by URI and result (ok, http_error, unreachable, invalid)",
            m.jwks_fetches.clone(),
        );
        registry.register(
            JWKS_STALE,
            "1 while a JWKS URI's fetches fail and its last fetched keys serve past their refresh",
            m.jwks_stale.clone(),
        );
        Self { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(code: u16) -> RequestLabels {
        RequestLabels {
            route: Arc::from("default/r/0"),
            backend: Arc::from("default/b"),
            method: MethodLabel::GET,
            code,
            reason: "",
        }
    }

    #[test]
    fn a_request_series_counts_into_the_same_series_as_the_families() {
        let m = Metrics::new();
        let series = RequestSeries::default();
        // More codes than are kept at hand: the rest still count, through the family.
        let codes = 200..200 + RequestSeries::CACHED as u16 + 3;
        for _ in 0..2 {
            for code in codes.clone() {
                series.record(&m, (MethodLabel::GET, code, ""), || labels(code), 0.01);
            }
        }
        for code in codes.clone() {
            assert_eq!(m.requests.get_or_create(&labels(code)).get(), 2, "{code}");
        }
        let rb = RouteBackendLabels {
            route: Arc::from("default/r/0"),
            backend: Arc::from("default/b"),
        };
        let text = {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
            out
        };
        let count = 2 * codes.len();
        assert!(
            text.contains(&format!(
                "tidegate_request_duration_seconds_count{{route=\"{}\",backend=\"{}\"}} {count}",
                rb.route, rb.backend
            )),
            "{text}"
        );
    }
}
