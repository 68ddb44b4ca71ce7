//! The request layer's state, shared by every connection.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::middleware::Middleware;
use crate::proxy::transport::{ClientIpResolver, Clients, Redis, Tunnels};
use crate::proxy::upstream::{Registry, Router};
use crate::telemetry::Telemetry;

/// What the request layer needs of the proxy's configuration.
#[derive(Clone, Copy, Debug)]
pub struct RequestSettings {
    /// Time to the upstream's response headers when a rule sets no timeout; `None`: no limit.
    pub default_request_timeout: Option<Duration>,
    /// Whether HTTP/1.1 upstreams are reached with the native client (else hyper's).
    pub native_http1: bool,
    /// The port clients reach the listener on (redirects that name no port point there).
    pub http_port: u16,
    /// The port clients reach the HTTPS listener on (HTTPS redirects point there).
    pub https_port: u16,
}

/// `X-Forwarded-Port` of each listener (its public port), made once.
pub struct ForwardedPorts {
    /// The HTTP listener's.
    pub http: http::HeaderValue,
    /// The HTTPS listener's.
    pub https: http::HeaderValue,
}

impl ForwardedPorts {
    /// The values for these settings' ports.
    pub fn new(settings: &RequestSettings) -> Self {
        Self {
            http: settings.http_port.into(),
            https: settings.https_port.into(),
        }
    }
}

/// Serves requests from the latest router: the request layer's state, shared by every
/// connection.
pub struct Service {
    /// The router new requests use (swapped whole on publish).
    pub router: ArcSwap<Router>,
    /// The upstream layer's live state, which routers link to.
    pub registry: Registry,
    /// Upstream clients.
    pub clients: Clients,
    /// Settings of the request path.
    pub settings: RequestSettings,
    /// `X-Forwarded-Port` values, from `settings`.
    pub forwarded_ports: ForwardedPorts,
    /// Metrics and access log.
    pub telemetry: Arc<Telemetry>,
    /// Upgraded connections.
    pub tunnels: Tunnels,
    /// The embedding program's middleware, if any.
    pub middleware: Option<Arc<dyn Middleware>>,
    /// Who the client of a request is (trusted proxies).
    pub client_ip: ClientIpResolver,
    /// Where Global rate limits count, if anywhere.
    pub redis: Option<Redis>,
}
