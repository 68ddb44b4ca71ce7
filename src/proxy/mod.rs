//! The data plane: listeners, route lookup, filters, upstream pick and forwarding.
//!
//! The proxy serves from an immutable [`Router`] (a routing table linked to runtime state) that
//! is swapped whole on every publish; a request keeps the router it started with.

pub mod balance;
mod body;
mod conn;
mod error;
mod exchange;
mod forward;
mod h1;
mod handler;
pub mod headers;
mod path;
pub mod request_id;
mod router;
mod server;
mod trace;
mod tunnel;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use body::ProxyBody;
pub use error::ProxyError;
pub use router::Router;
pub use upstream::{BackendState, Registry, UpstreamSettings};

use crate::model::RoutingTable;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::EndpointStateLabels;
use upstream::Clients;

/// Limits and timeouts of the proxy. Every field has a documented default.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// A client must send the whole request head within this time.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Time to the upstream's response headers when a rule sets no timeout; `None`: no limit.
    pub default_request_timeout: Option<Duration>,
    /// Upstream client settings.
    pub upstream: UpstreamSettings,
    /// Who speaks HTTP/1.1: the native codec (default) or hyper.
    pub http1_codec: Http1Codec,
    /// The port clients reach the HTTP listener on (a redirect that names neither scheme nor
    /// port points there), when it differs from the bound port (a Service's port 80 in front of
    /// the pod's 8080). `None`: the port [`crate::Gateway`] binds (for a `Proxy` used on its
    /// own: 80).
    pub http_port: Option<u16>,
}

/// The HTTP/1.1 implementation on both sides of the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Http1Codec {
    /// Tidegate's own codec for clients and pooled client for HTTP/1.1 upstreams; hyper serves
    /// what it leaves (HTTP/2, upgrades, HTTP/1.0, `Expect`).
    #[default]
    Native,
    /// hyper for everything.
    Hyper,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            default_request_timeout: Some(Duration::from_secs(60)),
            upstream: UpstreamSettings::default(),
            http1_codec: Http1Codec::default(),
            http_port: None,
        }
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    router: ArcSwap<Router>,
    registry: Registry,
    clients: Clients,
    config: ProxyConfig,
    telemetry: Arc<Telemetry>,
    server: auto::Builder<TokioExecutor>,
    /// Cancelled when the gateway stops accepting: connections finish what is in flight.
    draining: CancellationToken,
    /// Cancelled when the drain period is over: whatever is left is closed.
    hard_stop: CancellationToken,
    connections: TaskTracker,
    tunnels: TaskTracker,
}

/// The HTTP proxy: serves listeners from the latest published table.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy with an empty table (every request gets 404 until a table is published).
    pub fn new(config: ProxyConfig, telemetry: Arc<Telemetry>) -> Self {
        let registry = Registry::new(config.upstream.clone());
        let router = Router::link(Arc::new(RoutingTable::default()), &registry);
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32);
        let shared = Arc::new(Shared {
            router: ArcSwap::from_pointee(router),
            registry,
            clients: Clients::new(&config.upstream),
            config,
            telemetry,
            server,
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            connections: TaskTracker::new(),
            tunnels: TaskTracker::new(),
        });
        // Idle upstream connections the upstream closed, or that outlived the idle timeout,
        // are closed even when no request comes to check them out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&shared);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let Some(shared) = weak.upgrade() else { break };
                    shared.registry.reap_idle();
                }
            });
        }
        Self { shared }
    }

    /// Makes `table` the one new requests are served from.
    pub fn publish(&self, table: Arc<RoutingTable>) {
        let router = Router::link(table, &self.shared.registry);
        let previous = self.shared.router.swap(Arc::new(router));
        self.export_endpoint_counts(&previous);
    }

    /// Sets `tidegate_backend_endpoints` for the current backends and drops the series of
    /// backends that are gone.
    fn export_endpoint_counts(&self, previous: &Router) {
        let gauge = &self.shared.telemetry.metrics.backend_endpoints;
        let current = self.shared.router.load();
        for old in &previous.table.backends {
            if !current.table.backends.iter().any(|b| b.label == old.label) {
                for state in ["ready", "total"] {
                    gauge.remove(&EndpointStateLabels {
                        backend: old.label.clone(),
                        state,
                    });
                }
            }
        }
        self.refresh_metrics();
    }

    /// Sets the live gauges (endpoints ready and known per backend); the admin server calls
    /// this before each scrape, so health changes show without a configuration change.
    pub fn refresh_metrics(&self) {
        let gauge = &self.shared.telemetry.metrics.backend_endpoints;
        let current = self.shared.router.load();
        for (cfg, state) in current.table.backends.iter().zip(&current.backends) {
            let (ready, total) = state.counts();
            for (s, n) in [("ready", ready), ("total", total)] {
                gauge
                    .get_or_create(&EndpointStateLabels {
                        backend: cfg.label.clone(),
                        state: s,
                    })
                    .set(n as i64);
            }
        }
    }

    /// The router new requests use.
    pub fn router(&self) -> Arc<Router> {
        self.shared.router.load_full()
    }

    /// Where discovered endpoints go: a source that watches EndpointSlices writes here, and
    /// the backends of every table read from it without a republish.
    pub fn discovery(&self) -> Arc<crate::model::Discovery> {
        self.shared.registry.discovery().clone()
    }

    /// The runtime state of backends.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Serves `listener` until [`Proxy::drain`] is called.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(server::accept_loop(self.shared.clone(), listener))
    }

    /// Stops accepting, lets in-flight requests and tunnels finish for up to `timeout`, then
    /// closes what is left. Returns whether everything finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        s.draining.cancel();
        s.connections.close();
        s.tunnels.close();
        let finished = tokio::time::timeout(timeout, async {
            s.connections.wait().await;
            s.tunnels.wait().await;
        })
        .await
        .is_ok();
        s.hard_stop.cancel();
        finished
    }
}
