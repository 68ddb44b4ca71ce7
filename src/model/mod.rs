//! The routing table (the IR between the compiler and the proxy).
//!
//! Everything here is plain data plus pure functions over it: no Kubernetes, no sockets. The
//! compiler produces a [`RoutingTable`]; the proxy only reads it.

pub mod access;
mod backend;
mod canary;
mod cidr;
mod diagnostic;
mod discovery;
pub mod ext_auth;
pub mod filter;
mod host_index;
pub mod jwt;
mod l4;
mod matching;
mod object;
pub mod precedence;
mod rate_limit;
mod ser;
mod session;
mod table;
mod tls;
pub mod weighted;

pub use access::{
    Access, BasicAuth, Cors, NameList, ORDER as ACCESS_ORDER, OriginPattern, PasswordHash,
};
pub use backend::{
    ActiveHealthCheck, Backend, CircuitBreaker, ConnectionLimits, Endpoint, HashKey, LoadBalancing,
    PassiveHealthCheck, ProbeKind, UpstreamProtocol,
};
pub use canary::{CANARY_ALWAYS, CANARY_NEVER, Canary};
pub use cidr::{Cidr, ParseCidrError};
pub use diagnostic::{Diagnostic, Reason, Severity};
pub use discovery::{DiscoveryKey, DnsQuery, DnsRecordType, EndpointSink, ServiceKey};
pub use filter::{
    Answer, BackendFilters, DirectResponse, HeaderModifier, PathRewrite, Redirect, RegexTemplate,
    RequestFilter, TemplatePiece, UrlRewrite,
};
pub use host_index::{Candidate, Group, HostIndex, IndexBuilder};
pub use l4::{L4Listener, L4Protocol, L4Route, ProxyProtocolVersion, UdpSessions};
pub use matching::{
    HeaderMatcher, PathMatcher, Pattern, QueryMatcher, RequestMatch, RequestView, ValueMatcher,
    query_pairs,
};
pub use object::{Kind, ObjectRef};
pub use rate_limit::{
    Algorithm, ConcurrencyLimit, FailureMode, KeyPart, Limit, LimitKey, MissingHeader,
    RateLimitPolicy, Scope,
};
pub use ser::format_duration;
pub use ser::unix_time;
pub use session::{DEFAULT_SESSION_COOKIE, SameSite, SessionCookie, same_site_none_compatible};
pub use table::{
    Action, BackendAt, BackendIdx, ErrorResponses, Hit, NoBackend, Picked, Retry, RetryOn,
    RoutingTable, Rule, TableError, Target, Timeouts, WeightedBackend, passthrough, pick,
};
pub use tls::{
    CaBundle, Certificate, ClientValidation, NginxCertHeaders, TlsHost, TlsTable, UpstreamTls,
    name_covers,
};
