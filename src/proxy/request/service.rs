//! The request layer's state, shared by every connection.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::middleware::Middleware;
use crate::proxy::transport::{Clients, Tunnels};
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
    /// Metrics and access log.
    pub telemetry: Arc<Telemetry>,
    /// Upgraded connections.
    pub tunnels: Tunnels,
    /// The embedding program's middleware, if any.
    pub middleware: Option<Arc<dyn Middleware>>,
}
