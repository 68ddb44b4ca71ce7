//! The `Backend` custom resource: a pool of endpoints and how to treat them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cel;
use super::limits::*;
use super::route::LocalObjectRef;
use super::{Duration, Empty};

/// A pool of endpoints (a Service's, or a static list) and how traffic to them is treated.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tidegate.dev",
    version = "v1alpha1",
    kind = "Backend",
    namespaced,
    status = "BackendStatus",
    shortname = "tgb",
    category = "tidegate",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.service.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.endpoints.ready"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::backend_spec)]
pub struct BackendSpec {
    /// A Service whose EndpointSlices give the endpoints (Kubernetes mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,
    /// Static endpoints `host:port`, optionally with a weight: `host:port weight=3`
    /// (standalone mode, instead of `service`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENDPOINTS))]
    pub endpoints: Vec<String>,
    /// Endpoints from DNS records (A, AAAA or SRV), re-resolved as their TTL says (instead of
    /// `service` and `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscovery>,
    /// How the gateway talks to the endpoints.
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// How an endpoint is picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Active and passive health checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Stop sending to a failing backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Connection limits and timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionSettings>,
    /// Ramp up newly healthy endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    /// TLS or mTLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// Write a PROXY protocol header (V1: text, V2: binary) with the client's address and the
    /// address it connected to at the start of every connection (`protocol: TCP` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// A PROXY protocol version.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// A Service and one of its ports.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::service_ref)]
pub struct ServiceRef {
    /// Service name, in the Backend's namespace.
    pub name: String,
    /// Port number or name.
    pub port: IntOrString,
}

/// A DNS name whose records are a Backend's endpoints.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::dns_discovery)]
pub struct DnsDiscovery {
    /// The name looked up, e.g. `api.service.consul` (searched as the resolver's configuration
    /// says unless it ends in a dot).
    #[schemars(length(min = 1, max = MAX_HOSTNAME_LEN), pattern(DNS_NAME_PATTERN))]
    pub name: String,
    /// The record type: A or AAAA (addresses, with `port`) or SRV (targets with their own
    /// port, priority and weight).
    #[serde(rename = "type")]
    pub record_type: DnsRecordType,
    /// The endpoints' port, for A and AAAA records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Bounds on the time between lookups: the records' TTL, raised to `min` and cut to `max`
    /// (default 1s and 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<DnsRefresh>,
    /// How long the last good answer keeps serving while lookups fail (NXDOMAIN, SERVFAIL,
    /// timeouts); then the Backend has no endpoints (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<Duration>,
}

/// DNS record types a Backend can follow.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DnsRecordType {
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Service records: target, port, priority, weight.
    #[serde(rename = "SRV")]
    Srv,
}

/// Bounds on the time between DNS lookups.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::dns_refresh)]
pub struct DnsRefresh {
    /// The shortest time between lookups (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Duration>,
    /// The longest time between lookups (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// The protocol spoken to endpoints.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 over cleartext (prior knowledge); use it for gRPC.
    H2c,
    /// HTTP/2 over TLS with ALPN.
    #[serde(rename = "HTTP2")]
    Http2,
    /// Plain TCP (for TCP Routes).
    Tcp,
    /// UDP (for UDP Routes).
    Udp,
}

/// Endpoint selection.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::load_balancer)]
pub struct LoadBalancer {
    /// The algorithm; default RoundRobin.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// The hash key, for ConsistentHash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Sticky sessions: a cookie the gateway sets names the endpoint that answered, and later
    /// requests carrying it go to that endpoint while it is there and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// Session persistence (Gateway API's name): the gateway's own cookie keeps a client on one
/// endpoint.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionPersistence {
    /// How the session is recognized: Cookie (the default, and the only type so far).
    #[serde(default, rename = "type")]
    pub persistence_type: SessionPersistenceType,
    /// The cookie's name (default `TIDEGATE_SESSION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_LEN), pattern(COOKIE_NAME_PATTERN))]
    pub cookie_name: Option<String>,
    /// The cookie's `Path` (default: the path of the Route rule's match that took the request
    /// when it is a PathPrefix or Exact match, else `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATH_LEN), pattern(COOKIE_PATH_PATTERN))]
    pub path: Option<String>,
    /// The cookie's `Domain` (default: none, the host that set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_HOSTNAME_LEN), pattern(COOKIE_DOMAIN_PATTERN))]
    pub domain: Option<String>,
    /// How long the cookie lasts (`Max-Age`, and `Expires` for old browsers); default: until
    /// the browser closes (a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// `Secure`: true always, false never; default: when the request came over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// `HttpOnly` (default true: scripts cannot read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// `SameSite` (default: not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSite>,
    /// With `sameSite: None`: leave the attribute out for the old browsers that reject or
    /// mishandle it, recognized by their User-Agent as ingress-nginx recognizes them (default
    /// false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_same_site_none: Option<bool>,
    /// When an attempt on the cookie's endpoint fails and the Route retries: true moves the
    /// retry to another endpoint (the cookie then names the one that answers); false (the
    /// default, as ingress-nginx) retries on the same endpoint while it is available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_on_failure: Option<bool>,
}

/// How a session is recognized.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionPersistenceType {
    /// A cookie the gateway sets.
    #[default]
    Cookie,
}

/// A cookie's `SameSite` attribute.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Sent on same-site requests and top-level navigations.
    Lax,
    /// Sent on cross-site requests too (browsers want `Secure` with it).
    None,
}

/// Load-balancing algorithms.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LbAlgorithm {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin.
    WeightedRoundRobin,
    /// Power of two choices on in-flight requests.
    LeastRequest,
    /// Uniformly random.
    Random,
    /// Hash of a request attribute (see hashOn).
    ConsistentHash,
    /// Hash of the client address.
    #[serde(rename = "IPHash")]
    IpHash,
}

/// The request attribute hashed; exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::hash_on)]
pub struct HashOn {
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN))]
    pub header: Option<String>,
    /// A cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub cookie: Option<String>,
    /// The client address.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<Empty>,
    /// A query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub query_param: Option<String>,
}

/// Health checking.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Probes sent by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealthCheck>,
    /// Ejection after failures seen on real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// Active probing.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::active_health_check)]
pub struct ActiveHealthCheck {
    /// An HTTP probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    /// A TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Empty>,
    /// The port probed on each endpoint's host (default: the endpoint's own port). For a UDP
    /// Backend: a TCP or HTTP port the same hosts serve (a health or admin port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Limit of one probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Successes before an endpoint is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub healthy_threshold: Option<u32>,
    /// Failures before an endpoint is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: Option<u32>,
}

/// An HTTP health probe.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// Path probed.
    #[schemars(length(max = MAX_PATH_LEN), pattern(PLAIN_PATH_PATTERN))]
    pub path: String,
    /// Statuses or ranges counted as healthy, e.g. `200-399`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_LIST),
        inner(length(max = 7), pattern(STATUS_RANGE_PATTERN)),
        transform = cel::status_ranges
    )]
    pub expected_statuses: Vec<String>,
    /// Host header of the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_HOSTNAME_LEN), pattern(EXACT_HOSTNAME_PATTERN), transform = cel::hostname)]
    pub host: Option<String>,
}

/// Passive health checking (outlier detection).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Consecutive failures that eject an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// How long the first ejection lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_time: Option<Duration>,
    /// Most endpoints ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: Option<u32>,
    /// Upstream statuses or ranges that count as failures, e.g. `500-599` (the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_LIST),
        inner(length(max = 7), pattern(STATUS_RANGE_PATTERN)),
        transform = cel::status_ranges
    )]
    pub failure_statuses: Vec<String>,
}

/// Circuit breaker settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failure ratio (above 0, at most 1) that opens the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1), extend("exclusiveMinimum" = true))]
    pub failure_ratio: Option<f64>,
    /// Requests in the window before the ratio counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_requests: Option<u32>,
    /// The measuring window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// How long the breaker stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<Duration>,
    /// Trial requests while half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub half_open_requests: Option<u32>,
}

/// Connection limits and timeouts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::connection_settings)]
pub struct ConnectionSettings {
    /// Limit of one TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Idle pooled connections are closed after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Most connections open to the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// Most requests waiting for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// How long a request may wait for a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_timeout: Option<Duration>,
}

/// Slow start.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowStart {
    /// Ramp-up time.
    pub window: Duration,
}

/// TLS to endpoints: HTTP/1.1 over TLS with protocol HTTP1, and the TLS settings of protocol
/// HTTP2. The server certificate is verified unless `insecureSkipVerify` says otherwise.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::backend_tls)]
pub struct BackendTls {
    /// Server name sent (SNI) and verified. Default: the Service's `NAME.NAMESPACE.svc`, or
    /// each static endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_HOSTNAME_LEN), pattern(EXACT_HOSTNAME_PATTERN), transform = cel::hostname)]
    pub sni: Option<String>,
    /// Secret (any type) whose `ca.crt` holds the CA bundle that verifies the endpoints
    /// (default: the system's trust store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// ConfigMap whose `ca.crt` holds that CA bundle (instead of `caSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<LocalObjectRef>,
    /// A PEM file on the gateway's filesystem holding that CA bundle (instead of the refs;
    /// standalone, or a mounted volume); followed when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATH_LEN))]
    pub ca_file: Option<String>,
    /// Secret with the certificate the gateway presents (mTLS) in `tls.crt` and `tls.key`
    /// (`kubernetes.io/tls`, or Opaque as ingress-nginx's `proxy-ssl-secret` often is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<LocalObjectRef>,
    /// PEM files with the certificate (chain) and key the gateway presents (mTLS), instead
    /// of `clientCertificateRef`; followed when they change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_files: Option<CertificateFiles>,
    /// Accept any certificate the endpoints present, without verifying it (the handshake's
    /// signatures are still checked). A risk: the traffic is encrypted but anyone on the path
    /// can pose as the endpoints. For endpoints with certificates no CA is at hand for (what
    /// ingress-nginx does by default, `proxy-ssl-verify: "off"`); cannot be set with a CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A certificate and its key in PEM files on the gateway's filesystem.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain, leaf first (e.g. `/etc/tidegate/client/tls.crt`).
    #[schemars(length(min = 1, max = MAX_PATH_LEN))]
    pub cert_file: String,
    /// Its private key (e.g. `/etc/tidegate/client/tls.key`).
    #[schemars(length(min = 1, max = MAX_PATH_LEN))]
    pub key_file: String,
}

/// What the controller reports about a Backend.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Endpoint counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointCounts>,
    /// Accepted, ResolvedRefs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Ready and total endpoints.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCounts {
    /// Endpoints that get new traffic.
    pub ready: u32,
    /// All endpoints known.
    pub total: u32,
}
