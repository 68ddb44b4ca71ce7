//! The `Route` custom resource: how requests and connections are matched and where they go.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;
use super::access::{BasicAuthentication, Cors};
use super::cel;
use super::limits::*;

/// How requests (or, for L4 protocols, connections) are matched and where they go.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tidegate.dev",
    version = "v1alpha1",
    kind = "Route",
    namespaced,
    status = "RouteStatus",
    shortname = "tgr",
    category = "tidegate",
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".spec.ingressClassName"}"#,
    printcolumn = r#"{"name":"Hosts","type":"string","jsonPath":".spec.hostnames"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.conditions[?(@.type==\"Programmed\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// The ingress class this Route belongs to; Routes without one belong to the default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    /// HTTP (default), TCP, UDP or TLS (passthrough, routed by SNI).
    #[serde(default)]
    pub protocol: RouteProtocol,
    /// Host names this Route serves: exact (`shop.example.com`) or wildcard (`*.example.com`).
    /// None means every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_HOSTNAMES),
        inner(length(max = MAX_HOSTNAME_LEN), pattern(HOSTNAME_PATTERN)),
        transform = cel::hostnames
    )]
    pub hostnames: Vec<String>,
    /// Terminate TLS for these host names (HTTP only).
    // Boxed: 136 bytes inline in every Route held, most of which have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<RouteTls>>,
    /// For TCP and UDP Routes: the gateway port this Route listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// HTTP rules, tried by precedence (see the README).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_RULES))]
    pub rules: Vec<RouteRule>,
    /// For TCP and UDP Routes: where connections go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub backend_refs: Vec<BackendRef>,
    /// For UDP Routes: session settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSettings>,
    /// For TCP Routes: connection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
}

/// The protocol a Route serves.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RouteProtocol {
    /// HTTP/1.1, HTTP/2, gRPC and WebSocket.
    #[default]
    Http,
    /// Plain TCP.
    Tcp,
    /// UDP datagrams.
    Udp,
    /// TLS passthrough, routed by SNI.
    Tls,
}

/// TLS termination settings of a Route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTls {
    /// A `kubernetes.io/tls` Secret in the Route's namespace.
    pub secret_name: String,
    /// Answer plain-HTTP requests with a 308 to https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// Add `Strict-Transport-Security` to every HTTPS response of the Route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Hsts>,
    /// Ask HTTPS clients of the Route's hostnames for a certificate (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<ClientValidation>,
}

/// Client certificates (mTLS) on the Route's hostnames.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::client_validation)]
pub struct ClientValidation {
    /// A Secret in the Route's namespace whose `ca.crt` holds the CAs that sign client
    /// certificates (any type; set exactly one of this, `caConfigMapRef` or `caFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// A ConfigMap in the Route's namespace whose `ca.crt` holds those CAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map_ref: Option<LocalObjectRef>,
    /// A PEM file on the gateway's filesystem holding those CAs (standalone, or a volume
    /// mounted into the gateway's pod); followed when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_PATH_LEN))]
    pub ca_file: Option<String>,
    /// `Require` (default): requests without a valid client certificate are refused.
    /// `Optional`: a certificate is asked for; one that is sent must be valid.
    #[serde(default)]
    pub mode: ClientValidationMode,
}

/// Whether a client certificate is required.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientValidationMode {
    /// Every request needs a valid client certificate.
    #[default]
    Require,
    /// A client certificate is asked for, not required.
    Optional,
}

/// HTTP Strict Transport Security (RFC 6797).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hsts {
    /// How long browsers keep to HTTPS only (`max-age`), e.g. `8760h`; `0s` tells them to forget.
    pub max_age: Duration,
    /// The policy covers subdomains too (`includeSubDomains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_sub_domains: Option<bool>,
    /// Ask for inclusion in browsers' preload lists (`preload`; needs `includeSubDomains`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<bool>,
}

/// TCP Route connection settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// A connection with no bytes either way for this long is closed (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Most connections open at once through this Route; more are closed on arrival
    /// (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// When a connection's endpoint leaves its Backend, or the Route goes away, the
    /// connection may go on for this long before it is closed (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Option<Duration>,
}

/// UDP session settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UdpSettings {
    /// A client's session (its upstream socket and endpoint) ends after this long without a
    /// datagram either way (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Most sessions (clients, by address and port) at once through this Route; datagrams of
    /// further clients are dropped and counted (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_sessions: Option<u32>,
    /// Largest datagram payload passed on, either way, in bytes (default and most 65507);
    /// larger ones are dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65507))]
    pub max_datagram_size: Option<u32>,
    /// For request/response protocols (DNS and the like): a datagram sent to an endpoint that
    /// gets no reply within this long counts as a failure for the Backend's passive health
    /// check. Unset (default): replies are not expected (syslog, statsd); only an endpoint that
    /// refuses datagrams (ICMP port unreachable) counts as failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_timeout: Option<Duration>,
}

/// One HTTP rule: when it applies, what to do to the request, and where it goes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::route_rule)]
pub struct RouteRule {
    /// Optional name, so that policies and metrics can name this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63), pattern(RULE_NAME_PATTERN))]
    pub name: Option<String>,
    /// Any match selects the rule; within a match every condition must hold. None: every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub matches: Vec<RouteMatch>,
    /// Applied in order; each entry sets exactly one filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub filters: Vec<RouteFilter>,
    /// Weighted split of the traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub backend_refs: Vec<BackendRef>,
    /// Time limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    /// Retries of failed attempts.
    // Boxed, as `authentication`: a rule without it is a pointer smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<RetryPolicy>>,
    /// Client addresses (CIDRs or single addresses, IPv4 or IPv6) allowed; empty: every
    /// client. Evaluated on the client address `--trusted-proxies` resolves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDRS), inner(length(max = 64)))]
    pub ip_allow: Vec<String>,
    /// Client addresses refused (403), checked before `ipAllow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDRS), inner(length(max = 64)))]
    pub ip_deny: Vec<String>,
    /// Who may call this rule.
    // Boxed: inline it was 656 of a rule's 1,096 bytes, kept for every rule of every Route the
    // controller holds (6.5 MB at 10,000 single-rule Routes) though few rules have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Box<Authentication>>,
    /// The longest request body accepted, in bytes (default: no limit): a longer
    /// `Content-Length` is answered 413 before the backend is asked; a body of unknown length
    /// (chunked, HTTP/2 without content-length) is cut when it passes the limit (413 if no
    /// response has started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_request_body_bytes: Option<u64>,
    /// Where requests go when the backend picked for them has no endpoint to send to (none
    /// discovered, or every one unhealthy or ejected), instead of a 503: ingress-nginx's
    /// `default-backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_backend_ref: Option<LocalBackendRef>,
    /// Upstream answers with these statuses are replaced by the answer of another backend (an
    /// error-page service): ingress-nginx's `custom-http-errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_responses: Option<ErrorResponses>,
}

/// A Backend or Service port in the Route's namespace, that a rule sends some requests to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalBackendRef {
    /// Name of the Backend or Service.
    pub name: String,
    /// `Backend` or `Service`. Unset: the Backend of that name, else the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service port (kind Service only; unset: the Service's only port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
}

/// Upstream error answers replaced by an error-page backend's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorResponses {
    /// The upstream statuses replaced (400-599).
    #[schemars(length(min = 1, max = 200), inner(range(min = 400, max = 599)))]
    pub statuses: Vec<u16>,
    /// The backend asked for the answer (`GET /` with the request's query, `HEAD` for a HEAD
    /// request, with the client's headers and `X-Code`, `X-Format`, `X-Original-URI` and the
    /// others ingress-nginx sends).
    pub backend_ref: LocalBackendRef,
}

/// Conditions a request must meet, all of them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Path condition; default: prefix `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(METHOD_PATTERN))]
    pub method: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub query_params: Vec<QueryParamMatch>,
}

/// A condition on the request path.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::path_match)]
pub struct PathMatch {
    /// PathPrefix (default, segment-aware), Exact or RegularExpression (whole path).
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// The path, prefix or pattern.
    #[serde(default = "root_path")]
    #[schemars(length(max = MAX_PATH_LEN))]
    pub value: String,
}

fn root_path() -> String {
    "/".to_owned()
}

/// How a path is compared.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PathMatchType {
    /// Segment-aware prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[default]
    PathPrefix,
    /// The whole path, byte for byte.
    Exact,
    /// A regular expression that must match the whole path.
    RegularExpression,
}

/// How a header or query value is compared.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ValueMatchType {
    /// The whole value, byte for byte.
    #[default]
    Exact,
    /// A regular expression that must match the whole value.
    RegularExpression,
}

/// A condition on one request header.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// Expected value or pattern.
    #[schemars(length(max = MAX_VALUE_LEN))]
    pub value: String,
    /// Exact (default) or RegularExpression.
    #[serde(default, rename = "type")]
    pub kind: ValueMatchType,
}

/// A condition on one query parameter.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParamMatch {
    /// Parameter name (case-sensitive).
    #[schemars(length(min = 1, max = MAX_NAME_LEN))]
    pub name: String,
    /// Expected value or pattern.
    #[schemars(length(max = MAX_VALUE_LEN))]
    pub value: String,
    /// Exact (default) or RegularExpression.
    #[serde(default, rename = "type")]
    pub kind: ValueMatchType,
}

/// One filter; exactly one of the fields is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::route_filter)]
pub struct RouteFilter {
    /// Change request headers before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// Change response headers before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// Rewrite the path or host before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<UrlRewrite>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<RequestRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Cross-origin resource sharing (a rule's filters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderModifier {
    /// Headers set to this value, replacing any present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub set: Vec<HeaderValueSpec>,
    /// Headers appended, keeping any present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub add: Vec<HeaderValueSpec>,
    /// Header names removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_LIST),
        inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)),
        transform = cel::removed_headers
    )]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::header_value_spec)]
pub struct HeaderValueSpec {
    /// Header name.
    #[schemars(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// Header value.
    #[schemars(length(max = MAX_VALUE_LEN), pattern(HEADER_VALUE_PATTERN))]
    pub value: String,
}

/// Rewrite of the forwarded request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::url_rewrite)]
pub struct UrlRewrite {
    /// New path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// New Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_HOSTNAME_LEN), pattern(EXACT_HOSTNAME_PATTERN), transform = cel::hostname)]
    pub hostname: Option<String>,
}

/// How a path is replaced; exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::path_modifier)]
pub struct PathModifier {
    /// Replace the matched prefix (the rule's match must be a PathPrefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PLAIN_PATH_PATTERN))]
    pub replace_prefix_match: Option<String>,
    /// Replace the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PLAIN_PATH_PATTERN))]
    pub replace_full_path: Option<String>,
    /// Replace the whole path with this template, filled from the groups of the rule's
    /// RegularExpression path match: `$1`..`$9`, `${N}`, `${name}` (the rule's every match must be
    /// a RegularExpression with the groups named). A `?` starts a query, as in nginx's
    /// `rewrite`: the request's query follows it after `&`, unless the template ends with `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PATH_AND_QUERY_PATTERN))]
    pub replace_regex_match: Option<String>,
}

/// A redirect answer. Unset parts keep the request's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestRedirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["http", "https"]))]
    pub scheme: Option<String>,
    /// Host of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_HOSTNAME_LEN), pattern(EXACT_HOSTNAME_PATTERN), transform = cel::hostname)]
    pub hostname: Option<String>,
    /// Port of the Location; default: the scheme's well-known port when `scheme` is set, else the
    /// port clients reached the gateway on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Path of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 303, 307, 308]))]
    pub status_code: Option<u16>,
}

/// A fixed answer.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    /// HTTP status, 200-599.
    #[schemars(range(min = 200, max = 599))]
    pub status: u16,
    /// Body, sent as text/plain (at most 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DIRECT_BODY))]
    pub body: Option<String>,
}

/// A weighted reference to a Backend (default) or a Service.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::backend_ref)]
pub struct BackendRef {
    /// Name of the Backend or Service.
    pub name: String,
    /// `Backend` or `Service`. Unset: the Backend of that name, else the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace; only the Route's own namespace is supported today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port (kind Service only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Relative share of the traffic (0-1000000, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_WEIGHT))]
    pub weight: Option<u32>,
    /// Filters that run only for the requests sent to this backendRef, after the rule's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub filters: Vec<RouteFilter>,
}

/// Time limits of a rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::route_timeouts)]
pub struct RouteTimeouts {
    /// From receiving the request to the response headers, across every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Duration>,
    /// From sending to one backend until its response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<Duration>,
}

/// Retries of failed attempts.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included (2-10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = RETRY_ATTEMPTS.0, max = RETRY_ATTEMPTS.1))]
    pub attempts: Option<u32>,
    /// Conditions that allow a retry: connect-failure, reset, gateway-error, 5xx, or a status code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(pattern(RETRY_ON_PATTERN)))]
    pub on: Vec<String>,
    /// Limit of one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// No new attempt starts once this long has passed since the first began; an attempt
    /// under way is not cut (ingress-nginx's `proxy-next-upstream-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<Duration>,
    /// Exponential backoff with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Retry non-idempotent methods (POST, PATCH, …) too; off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_idempotent: Option<bool>,
    /// Largest request body kept for replay (default 64 KiB); larger bodies are not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_RETRY_BODY))]
    pub max_body_bytes: Option<u32>,
}

/// Exponential backoff bounds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::backoff)]
pub struct Backoff {
    /// First delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Duration>,
    /// Largest delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Authentication of a rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// JWT bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuthentication>,
    /// HTTP basic authentication against htpasswd content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuthentication>,
    /// External authorization: an HTTP auth service decides (ingress-nginx `auth-url`, Envoy
    /// `ext_authz` HTTP). Runs after `jwt`/`basic` when those are set too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExtAuth>,
}

/// An HTTP auth service asked about every request of the rule.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::ext_auth)]
pub struct ExtAuth {
    /// The auth service, `http://host:port/prefix` or `https://…`: the request's path (and
    /// query) is appended to this URL's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Backend in the Route's namespace as the auth service, instead of `url`: asked as
    /// requests to that Backend are (its load balancing among its healthy endpoints, its
    /// protocol, TLS, breaker and connection limits), with the client's `Host`. In Kubernetes
    /// mode a name with no Backend of that name is the Service (its only port), as in a rule's
    /// backendRefs. The request's path and query are sent as they are, after `pathPrefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_ref: Option<LocalObjectRef>,
    /// With `backendRef`: a path put before the request's path (`/verify` asks
    /// `/verify/orders/7` about `/orders/7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_LEN), pattern(PLAIN_PATH_PATTERN))]
    pub path_prefix: Option<String>,
    /// With an `https` url: a Secret whose `ca.crt` verifies the auth service (default: the
    /// system's trust store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// Request headers sent to the auth service (default: `Authorization`, `Cookie`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)))]
    pub headers_to_auth: Option<Vec<String>>,
    /// Headers of a 2xx answer copied into the request to the backend (the client's copies of
    /// these are always removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)))]
    pub allowed_upstream_headers: Vec<String>,
    /// Send the request body too, buffered up to this many bytes (at most 8 MiB); a longer
    /// body is refused with 413 without asking the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8388608))]
    pub max_body_bytes: Option<u32>,
    /// How long the auth service may take (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// When the auth service cannot be asked (unreachable, TLS failure, timeout; with
    /// `backendRef` also no available endpoint or an open breaker): `Closed` answers 503
    /// (default), `Open` lets the request through. An answer, 5xx included, is passed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_mode: Option<super::rate_limit::FailureMode>,
    /// Keep decisions for a short time, keyed by the values of some request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ExtAuthCache>,
    /// The method of every subrequest (default: the request's own), e.g. `GET` as ingress-nginx
    /// asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^[A-Z]+$"))]
    pub method: Option<String>,
    /// `false`: ask `url` as written, its path and query, instead of the URL's path followed by
    /// the request's (default `true`; with `backendRef`, `pathPrefix` as written). Only then
    /// may `url` hold variables (`$host`, `$request_uri`, …; see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_path: Option<bool>,
    /// Send every request header (hop-by-hop headers, `Host` and `Content-Length` aside)
    /// instead of `headersToAuth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_all_headers: Option<bool>,
    /// The non-2xx statuses of the auth service passed back to the client; any other non-2xx
    /// answer is a 500 (default: every non-2xx answer is passed back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(range(min = 300, max = 599)))]
    pub deny_statuses: Vec<u16>,
    /// A 401 from the auth service becomes a 302 to this URL (variables expanded, as in `url`),
    /// with the `Set-Cookie` headers of the 401.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub signin_url: Option<String>,
    /// The `Set-Cookie` headers of an allowing answer are added to the response the client
    /// gets (a session the auth service refreshes): `Success` when that response is 2xx or 3xx
    /// (as nginx's `add_header`), `Always` on any (default: not passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_set_cookie: Option<PassSetCookie>,
}

/// When an allowing auth answer's `Set-Cookie` headers reach the client.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PassSetCookie {
    /// On a 2xx or 3xx response.
    Success,
    /// On any response.
    Always,
}

/// A short-lived cache of an auth service's decisions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthCache {
    /// The request headers whose values make the key (the decision must depend on them only).
    #[schemars(length(min = 1, max = MAX_LIST), inner(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN)))]
    pub key_headers: Vec<String>,
    /// How long a decision is kept (at most 5m).
    pub ttl: Duration,
}

/// JWT validation settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuthentication {
    /// Expected `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub audiences: Vec<String>,
    /// Where the signing keys come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSource>,
    /// Claims copied into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Read the token from this header instead of `Authorization: Bearer` (its whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN))]
    pub from_header: Option<String>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_LEN), pattern(HEADER_NAME_PATTERN))]
    pub from_cookie: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30s, at most 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Duration>,
    /// Claims a valid token must carry (else 403), optionally with one of these values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST))]
    pub required_claims: Vec<RequiredClaim>,
}

/// A claim a token must have: present, or (with `values`) equal to one of them. A string claim
/// is read as a space-separated list (`scope: "read write"`), an array claim as its elements.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredClaim {
    /// Claim name.
    #[schemars(length(max = MAX_NAME_LEN))]
    pub name: String,
    /// Accepted values (any one); empty: presence is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LIST), inner(length(max = MAX_NAME_LEN)))]
    pub values: Vec<String>,
}

/// A JWKS location; exactly one field is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = cel::jwks_source)]
pub struct JwksSource {
    /// Fetched over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A Secret holding the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
    /// The JWKS document itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// With `uri` (`https://`): a Secret whose `ca.crt` holds the CA bundle that verifies the
    /// issuer (default: the system's trust store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// With `uri`: bounds on the time between fetches: the response's `Cache-Control`
    /// `max-age` (5m without one), raised to `min` and cut to `max` (default 30s and 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<JwksRefresh>,
    /// With `uri`: the least time between two fetches a token with an unknown `kid` can cause
    /// (default 30s, at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refetch_cooldown: Option<Duration>,
    /// With `uri`: how long the last fetched keys keep verifying tokens after they were due
    /// for a refresh while the issuer cannot be fetched (default 24h); then tokens get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stale: Option<Duration>,
}

/// Bounds on the time between JWKS fetches.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksRefresh {
    /// The least time between fetches (default 30s, at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Duration>,
    /// The most time between fetches (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// A claim copied into a header.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Claim name.
    pub claim: String,
    /// Header name.
    pub header: String,
}

/// A reference to an object in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectRef {
    /// Object name.
    pub name: String,
}

/// What the controller reports about a Route.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs, Programmed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
