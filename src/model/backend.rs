//! Backends as the data plane sees them: identity, protocol, endpoints, and how to treat them.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::{DiscoveryKey, DnsQuery, ObjectRef, ServiceKey, UpstreamTls};

/// How the gateway talks to a backend's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 cleartext, prior knowledge.
    #[serde(rename = "H2C")]
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`); the backend's `tls` is always set.
    #[serde(rename = "HTTP2")]
    Http2,
    /// Raw TCP: bytes copied both ways (TCP Routes only).
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP datagrams, one connected socket per client session (UDP Routes only).
    #[serde(rename = "UDP")]
    Udp,
}

/// One endpoint: a `host:port` address (an IP literal or a name resolved when connecting), its
/// relative weight (used by WeightedRoundRobin; 1 unless written) and its priority tier (SRV
/// records; 0 otherwise).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// `host:port`, usable as a URI authority (`[::1]:80` for IPv6).
    pub address: Arc<str>,
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Priority tier, lowest first: only the lowest tier with an endpoint that takes requests
    /// gets them (SRV priority; every endpoint is in tier 0 otherwise).
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

impl Endpoint {
    /// An endpoint of weight 1 from its `host:port` authority.
    pub fn new(address: &str) -> Self {
        Self {
            address: address.into(),
            weight: 1,
            priority: 0,
        }
    }
}

/// The request attribute a hash-based balancer keys on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashKey {
    /// A request header (missing: the client address).
    Header(#[serde(serialize_with = "super::ser::header_name")] HeaderName),
    /// A cookie (missing: the client address).
    Cookie(String),
    /// The client address.
    SourceIp,
    /// A query parameter (missing: the client address).
    QueryParam(String),
}

/// How an endpoint is picked within a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "algorithm", content = "hashOn")]
pub enum LoadBalancing {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin over the endpoints' weights.
    WeightedRoundRobin,
    /// The less loaded of two random endpoints (power of two choices on requests in flight).
    LeastRequest,
    /// Uniformly random.
    Random,
    /// Maglev consistent hashing of a request attribute.
    ConsistentHash(HashKey),
    /// Consistent hashing of the client address.
    #[serde(rename = "IPHash")]
    IpHash,
}

impl LoadBalancing {
    /// Whether it picks by a hash of the request (which is then worth computing).
    pub fn hashes(&self) -> bool {
        matches!(self, Self::ConsistentHash(_) | Self::IpHash)
    }
}

/// What an active probe does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeKind {
    /// `GET path`; healthy when the status is in one of the ranges.
    Http {
        /// Path probed.
        path: String,
        /// Host header (default: the endpoint address).
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// Inclusive status ranges counted as healthy.
        expected: Vec<(u16, u16)>,
    },
    /// A TCP connect.
    Tcp,
}

/// Active health checking.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveHealthCheck {
    /// The probe.
    pub probe: ProbeKind,
    /// The port probed on each endpoint's host; `None`: the endpoint's own port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Time between probes (jittered by up to 10%).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub interval: Duration,
    /// Limit of one probe.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// Passive health checking (outlier ejection) on real traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassiveHealthCheck {
    /// Consecutive failures that eject an endpoint.
    pub consecutive_failures: u32,
    /// First ejection's length; the n-th ejection lasts n times this (at most 10 times).
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub ejection_time: Duration,
    /// Most endpoints ejected at once, in percent (one may always be ejected).
    pub max_ejection_percent: u32,
    /// Upstream statuses that count as failures (inclusive ranges); connect errors, resets and
    /// timeouts always count.
    pub failure_statuses: Vec<(u16, u16)>,
}

/// Circuit breaker settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Failure ratio (0–1] over the window that opens the breaker.
    pub failure_ratio: f64,
    /// Requests in the window before the ratio counts.
    pub min_requests: u32,
    /// The sliding window.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub window: Duration,
    /// How long the breaker stays open before trying again.
    #[serde(serialize_with = "super::ser::plain_duration")]
    pub open_duration: Duration,
    /// Trial requests let through while half-open; all must succeed to close.
    pub half_open_requests: u32,
}

/// Connection limits and timeouts towards a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionLimits {
    /// Limit of one TCP connect (default: the gateway's --connect-timeout).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub connect_timeout: Option<Duration>,
    /// Idle pooled connections are closed after this (default: --upstream-idle-timeout).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub idle_timeout: Option<Duration>,
    /// Most requests in flight to the backend at once (HTTP/1.1: most connections in use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most requests waiting for one of those slots; more get 503 at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Longest wait for a slot before 503.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub pending_timeout: Option<Duration>,
}

impl ConnectionLimits {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A compiled Backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// The object it came from; runtime state (endpoints, health, counters) is keyed by it.
    pub id: ObjectRef,
    /// `namespace/name`, for metrics and logs.
    pub label: Arc<str>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Endpoints known at compile time (static ones); empty when `service` is set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// The Service port whose discovered endpoints this backend uses (Kubernetes mode); the
    /// proxy reads them from its discovery store (`proxy::upstream::Discovery`), so they change without
    /// a new table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceKey>,
    /// The DNS lookup whose answers are this backend's endpoints; like `service`, they reach
    /// the proxy through its discovery store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsQuery>,
    /// Endpoint selection.
    pub load_balancer: LoadBalancing,
    /// Sticky sessions by a cookie the gateway sets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<Arc<super::SessionCookie>>,
    /// Active probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_health_check: Option<ActiveHealthCheck>,
    /// Outlier ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive_health_check: Option<PassiveHealthCheck>,
    /// Circuit breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Connection limits and timeouts.
    #[serde(skip_serializing_if = "ConnectionLimits::is_default")]
    pub connection: ConnectionLimits,
    /// Newly healthy endpoints ramp from a small share to their full share over this window.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::ser::duration"
    )]
    pub slow_start: Option<Duration>,
    /// TLS to the endpoints (HTTP/1.1 over TLS with `Http1`, always with `Http2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Arc<UpstreamTls>>,
    /// A PROXY protocol header written at the start of each connection (TCP Backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<super::ProxyProtocolVersion>,
}

impl Backend {
    /// A backend with static endpoints and default treatment.
    pub fn new(id: ObjectRef, protocol: UpstreamProtocol, endpoints: Vec<Endpoint>) -> Self {
        Self {
            label: id.key().into(),
            id,
            protocol,
            endpoints,
            load_balancer: LoadBalancing::default(),
            session_persistence: None,
            active_health_check: None,
            passive_health_check: None,
            circuit_breaker: None,
            connection: ConnectionLimits::default(),
            slow_start: None,
            service: None,
            tls: None,
            dns: None,
            proxy_protocol: None,
        }
    }

    /// Where this backend's endpoints are discovered, if they are not static.
    pub fn discovery_key(&self) -> Option<DiscoveryKey> {
        match (&self.service, &self.dns) {
            (Some(k), _) => Some(DiscoveryKey::Service(k.clone())),
            (None, Some(q)) => Some(DiscoveryKey::Dns(q.clone())),
            (None, None) => None,
        }
    }
}
