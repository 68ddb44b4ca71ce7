//! The data plane: listeners, route lookup, filters, upstream pick and forwarding.
//!
//! Three layers, each reading only the ones below it (ARCHITECTURE.md draws them; CI checks
//! the direction):
//!
//! - `request/` (top): what a request means: lookup, filters, forwarding steps, retries, the
//!   exchange record, errors into responses with a reason;
//! - `transport/`: bytes on the wire: listeners, the native HTTP/1.1 codec and client, hyper,
//!   bodies, tunnels, the upstream error type;
//! - [`upstream`] (bottom): live state: endpoints, health, balancers, breakers, limits,
//!   budgets, the [`Router`] that links a table to it.
//!
//! The proxy serves from an immutable [`Router`] that is swapped whole on every publish; a
//! request keeps the router it started with. This file only wires the layers together.

pub mod jwks;
pub(crate) mod request;
pub(crate) mod transport;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use request::{Middleware, ProxyError, keep_timers_on_this_thread, reason};
pub use transport::{
    ClientIpConfig, ForwardedHeader, Http1Codec, ProxyBody, RedisConfig, RedisSetupError,
};
pub use upstream::{BackendState, Custom, Registry, Router, UpstreamSettings, balance};

use crate::model::RoutingTable;
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::{
    CertificateLabels, EndpointStateLabels, LimitLabels, ListenerLabels,
};
use request::{RequestSettings, Service};
use transport::{
    ClientIpResolver, Clients, ConnLimits, L4Metrics, L4Proxy, Redis, RedisMetrics, Server,
    TlsAcceptor, TlsListener, Tunnels, proxy_protocol::ProxyProtocolFrom,
};

/// Limits and timeouts of the proxy. Every field has a documented default.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// A client must send the whole request head within this time.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// A request body whose next bytes take longer than this to arrive is cut, and the
    /// request answered 408 (`None`: no limit).
    pub body_read_timeout: Option<Duration>,
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
    /// Who the client of a request is: trusted proxies and their forwarding header.
    pub client_ip: ClientIpConfig,
    /// The Redis server Global rate limits count in; without one, Global limits are refused.
    pub redis: Option<RedisConfig>,
    /// The port clients reach the HTTPS listener on (HTTPS redirects point there), when it
    /// differs from the bound port. `None`: the port [`crate::Gateway`] binds (else 443).
    pub https_port: Option<u16>,
    /// The L4 ports TCP and UDP Routes may open (`--l4-ports`); each is bound while a Route
    /// uses it.
    pub l4_ports: Vec<crate::model::L4Listener>,
    /// Peers (load balancers in front) whose connections must start with a PROXY protocol
    /// header (v1 or v2), read within `header_read_timeout`; the client it names is the
    /// connection's client everywhere. Empty: no header is ever read.
    pub proxy_protocol_from: Vec<crate::model::Cidr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            body_read_timeout: Some(Duration::from_secs(60)),
            default_request_timeout: Some(Duration::from_secs(60)),
            upstream: UpstreamSettings::default(),
            http1_codec: Http1Codec::default(),
            http_port: None,
            client_ip: ClientIpConfig::default(),
            redis: None,
            https_port: None,
            l4_ports: Vec::new(),
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// The HTTP proxy: serves listeners from the latest published table.
#[derive(Clone)]
pub struct Proxy {
    service: Arc<Service>,
    server: Arc<Server<Service>>,
    tls: Arc<TlsListener>,
    l4: Arc<L4Proxy>,
    hard_stop: CancellationToken,
}

impl Proxy {
    /// A proxy with an empty table (every request gets 404 until a table is published). With
    /// a Redis server configured, it starts connecting in the background (so this must run
    /// inside a tokio runtime); a bad Redis URL or CA file is an error.
    pub fn new(config: ProxyConfig, telemetry: Arc<Telemetry>) -> Result<Self, RedisSetupError> {
        Self::with_middleware(config, telemetry, None)
    }

    /// A proxy whose requests and responses pass through `middleware`.
    pub fn with_middleware(
        config: ProxyConfig,
        telemetry: Arc<Telemetry>,
        middleware: Option<Arc<dyn Middleware>>,
    ) -> Result<Self, RedisSetupError> {
        Self::extended(config, telemetry, middleware, Custom::default())
    }

    /// A proxy with `middleware` and the selectors and health checks of `custom`. With a Redis
    /// server configured, it starts connecting in the background (so this must run inside a
    /// tokio runtime); a bad Redis URL or CA file is an error.
    pub fn extended(
        config: ProxyConfig,
        telemetry: Arc<Telemetry>,
        middleware: Option<Arc<dyn Middleware>>,
        custom: Custom,
    ) -> Result<Self, RedisSetupError> {
        let metrics = &telemetry.metrics;
        let redis = match &config.redis {
            Some(redis) => Some(Redis::start(
                redis,
                vec![request::rate_limit::SCRIPT.clone()],
                RedisMetrics {
                    errors: metrics.redis_errors.clone(),
                    duration: metrics.redis_duration.clone(),
                    connected: metrics.redis_connected.clone(),
                },
            )?),
            None => None,
        };
        // HTTP probes of TLS backends use the transport layer's TLS clients.
        let custom = custom.with_tls_probes(Arc::new(transport::clients::TlsProbeClients));
        let registry = Registry::with_metrics(
            config.upstream.clone(),
            custom,
            upstream::rate_limit::RateLimitMetrics {
                decisions: metrics.rate_limit_decisions.clone(),
                evictions: metrics.rate_limit_evictions.clone(),
            },
        );
        let router = Arc::new(Router::link(Arc::new(RoutingTable::default()), &registry));
        let hard_stop = CancellationToken::new();
        let proxy_protocol = ProxyProtocolFrom::new(
            config.proxy_protocol_from.clone(),
            config.header_read_timeout,
            metrics.proxy_protocol_rejected.clone(),
        );
        let l4 = Arc::new(L4Proxy::new(
            config.l4_ports.clone(),
            router.clone(),
            config.upstream.connect_timeout,
            hard_stop.clone(),
            L4Metrics::new(metrics),
            proxy_protocol.clone(),
        ));
        let settings = RequestSettings {
            default_request_timeout: config.default_request_timeout,
            native_http1: config.http1_codec == Http1Codec::Native,
            http_port: config.http_port.unwrap_or(80),
            https_port: config.https_port.unwrap_or(443),
        };
        let service = Arc::new(Service {
            router: ArcSwap::new(router),
            registry,
            clients: Clients::new(&config.upstream),
            forwarded_ports: request::ForwardedPorts::new(&settings),
            settings,
            telemetry: telemetry.clone(),
            tunnels: Tunnels::new(hard_stop.clone()),
            middleware,
            client_ip: ClientIpResolver::new(&config.client_ip),
            redis,
        });
        let limits = ConnLimits {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_header_bytes: config.max_header_bytes,
            body_read_timeout: config.body_read_timeout,
        };
        let server = Arc::new(
            Server::new(service.clone(), limits, config.http1_codec)
                .with_proxy_protocol(proxy_protocol),
        );
        // Idle upstream connections the upstream closed, or that outlived the idle timeout,
        // are closed even when no request comes to check them out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&service);
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let Some(service) = weak.upgrade() else { break };
                    service.clients.reap_idle(&service.registry);
                }
            });
        }
        let tls = Arc::new(TlsListener {
            acceptor: Arc::new(TlsAcceptor::new().expect("the system's random generator works")),
            l4: Some(l4.clone()),
            handshakes: telemetry.metrics.tls_handshakes.clone(),
        });
        Ok(Self {
            service,
            server,
            tls,
            l4,
            hard_stop,
        })
    }

    /// Waits up to `within` for the Redis connection (if one is configured); returns whether
    /// it is up. Until it is, Global limits follow their failureMode.
    pub async fn redis_ready(&self, within: Duration) -> bool {
        match &self.service.redis {
            Some(redis) => redis.ready(within).await,
            None => false,
        }
    }

    /// Makes `table` the one new requests are served from.
    pub fn publish(&self, table: Arc<RoutingTable>) {
        self.tls.acceptor.publish(&table);
        self.export_certificate_expiry(&table);
        let router = Arc::new(Router::link(table, &self.service.registry));
        self.l4.publish(router.clone());
        let previous = self.service.router.swap(router);
        self.export_endpoint_counts(&previous);
    }

    /// Sets `tidegate_tls_certificate_expiry_timestamp_seconds` for the certificates served,
    /// and drops the series of the ones no longer served.
    fn export_certificate_expiry(&self, table: &RoutingTable) {
        let gauge = &self.service.telemetry.metrics.tls_certificate_expiry;
        let previous = self.service.router.load();
        for old in &previous.table.tls.certificates {
            if !table
                .tls
                .certificates
                .iter()
                .any(|c| c.source == old.source)
            {
                gauge.remove(&CertificateLabels {
                    certificate: old.source.clone(),
                });
            }
        }
        for c in &table.tls.certificates {
            gauge
                .get_or_create(&CertificateLabels {
                    certificate: c.source.clone(),
                })
                .set(c.not_after);
        }
    }

    /// Sets `tidegate_backend_endpoints` for the current backends and drops the series of
    /// backends that are gone.
    fn export_endpoint_counts(&self, previous: &Router) {
        let gauge = &self.service.telemetry.metrics.backend_endpoints;
        let current = self.service.router.load();
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

    /// Sets the live gauges (endpoints ready and known per backend, keys per Local rate
    /// limit); the admin server calls this before each scrape, so health changes show without
    /// a configuration change.
    pub fn refresh_metrics(&self) {
        let keys = &self.service.telemetry.metrics.rate_limit_keys;
        keys.clear();
        for state in self.service.registry.rate_limits().states() {
            if let Some(store) = &state.local {
                keys.get_or_create(&LimitLabels {
                    policy: state.policy.clone(),
                    limit: state.limit.name.clone(),
                })
                .set(store.len() as i64);
            }
        }
        let gauge = &self.service.telemetry.metrics.backend_endpoints;
        let current = self.service.router.load();
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

    /// The L4 ports bound now (a port of `--l4-ports` is bound while a Route uses it).
    pub fn l4_bound(&self) -> Vec<crate::model::L4Listener> {
        self.l4.bound()
    }

    /// The router new requests use.
    pub fn router(&self) -> Arc<Router> {
        self.service.router.load_full()
    }

    /// Where discovered endpoints go: a source that watches EndpointSlices writes here, and
    /// the backends of every table read from it without a republish.
    pub fn discovery(&self) -> Arc<upstream::Discovery> {
        self.service.registry.discovery().clone()
    }

    /// The runtime state of backends.
    pub fn registry(&self) -> &Registry {
        &self.service.registry
    }

    /// Fetches the JWKS URIs the tables name, through this proxy's upstream clients, until
    /// `stop` ([`jwks::run`]).
    pub fn follow_jwks(
        &self,
        tables: tokio::sync::watch::Receiver<Option<Arc<RoutingTable>>>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        jwks::run(
            jwks::fetcher(self.service.clone()),
            tables,
            self.service.telemetry.clone(),
            stop,
        )
    }

    /// Serves `listener` until [`Proxy::drain`] is called.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let open = self
            .service
            .telemetry
            .metrics
            .open_connections
            .get_or_create(&ListenerLabels {
                listener: "http",
                protocol: "http",
            })
            .clone();
        tokio::spawn(self.server.clone().accept_loop(listener, open, None))
    }

    /// Serves `listener` as the HTTPS listener (TLS, then HTTP/1.1 or HTTP/2 by ALPN) until
    /// [`Proxy::drain`] is called.
    pub fn serve_tls(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let open = self
            .service
            .telemetry
            .metrics
            .open_connections
            .get_or_create(&ListenerLabels {
                listener: "https",
                protocol: "https",
            })
            .clone();
        let server = self.server.clone();
        tokio::spawn(server.accept_loop(listener, open, Some(self.tls.clone())))
    }

    /// Stops accepting, lets in-flight requests and tunnels finish for up to `timeout`, then
    /// closes what is left. Returns whether everything finished in time.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.server.drain();
        self.service.tunnels.close();
        self.l4.drain();
        let finished = tokio::time::timeout(timeout, async {
            self.server.wait().await;
            self.service.tunnels.wait().await;
            self.l4.wait().await;
        })
        .await
        .is_ok();
        self.hard_stop.cancel();
        finished
    }
}
