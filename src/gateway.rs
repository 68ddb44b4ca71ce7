//! The library API: build and run a gateway in code, with the same engine as the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::controller::CompileOptions;
use crate::controller::code::{CodeSource, Objects};
use crate::controller::compile::DefaultCertificate;
use crate::controller::dns::DnsOptions;
use crate::controller::file::{FileSource, FileSourceError};
use crate::controller::reload::{self, Change, FileController, SourceController};
use crate::model::{Kind, ObjectRef, RoutingTable};
use crate::proxy::upstream::{Custom, HealthCheck, SelectorFactory};
use crate::proxy::{Middleware, Proxy, ProxyConfig};
use crate::telemetry::{AccessLogConfig, AccessLogFormat, Telemetry};

/// How long `start` waits for Redis before serving anyway.
const REDIS_START_WAIT: Duration = Duration::from_secs(2);

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No configuration source was given.
    #[error("no configuration: call config_path(), objects() or kubernetes() on the builder")]
    NoConfig,
    /// Kubernetes mode cannot start.
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Kube(#[from] crate::controller::kube::KubeError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        #[source]
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration path cannot be read.
    #[error(transparent)]
    Config(#[from] FileSourceError),
    /// The file watcher could not start.
    #[error("cannot watch the configuration for changes: {0}")]
    Watch(#[source] std::io::Error),
    /// The Redis settings are unusable (a bad URL or CA file).
    #[error(transparent)]
    Redis(#[from] crate::proxy::RedisSetupError),
}

/// Where a gateway's configuration comes from.
enum Mode {
    Files(PathBuf),
    Code(Objects),
    #[cfg(feature = "kubernetes")]
    Kube(kube::Client, Box<crate::controller::kube::KubeOptions>),
}

/// Builds a [`Gateway`]. Defaults match the `tidegate run` flags.
pub struct GatewayBuilder {
    config_path: Option<PathBuf>,
    objects: Option<Objects>,
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    proxy: ProxyConfig,
    compile: CompileOptions,
    watch: bool,
    debounce: Duration,
    access_log: AccessLogConfig,
    telemetry: Option<Arc<Telemetry>>,
    #[cfg(feature = "kubernetes")]
    kube: Option<crate::controller::kube::KubeOptions>,
    middleware: Option<Arc<dyn Middleware>>,
    custom: Custom,
    dns: DnsOptions,
    l4_ports: Vec<crate::model::L4Listener>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            config_path: None,
            objects: None,
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            // A library user opts in; the binary listens on 0.0.0.0:8443 by default.
            https_addr: None,
            admin_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            proxy: ProxyConfig::default(),
            compile: CompileOptions::default(),
            watch: true,
            debounce: Duration::from_millis(50),
            // A library user opts in; the binary turns it on by default (--access-log).
            access_log: AccessLogConfig {
                format: AccessLogFormat::Off,
                include_query: false,
            },
            telemetry: None,
            #[cfg(feature = "kubernetes")]
            kube: None,
            middleware: None,
            custom: Custom::default(),
            dns: DnsOptions::default(),
            l4_ports: Vec::new(),
        }
    }
}

impl GatewayBuilder {
    /// Reads Route/Backend YAML from this file or directory.
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    /// Serves Routes, Backends and RateLimitPolicies built in code (the same types the YAML
    /// holds; no files). Replace them later with [`Gateway::apply`].
    pub fn objects(mut self, objects: Objects) -> Self {
        self.objects = Some(objects);
        self
    }

    /// Where user traffic is served (port 0 picks a free port; see [`Gateway::http_addr`]).
    pub fn http_addr(mut self, addr: SocketAddr) -> Self {
        self.http_addr = addr;
        self
    }

    /// Where HTTPS is served (TLS with the certificates of Routes, Ingresses and the default
    /// certificate; HTTP/1.1 and HTTP/2 by ALPN); `None` (the default): no HTTPS listener.
    pub fn https_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.https_addr = addr;
        self
    }

    /// The certificate served to TLS clients whose server name no Route or Ingress claims
    /// (without one, those handshakes fail with `unrecognized_name`): a `kubernetes.io/tls`
    /// Secret, or PEM files (re-read on every reload, and when they change).
    pub fn default_certificate(mut self, source: DefaultCertificate) -> Self {
        self.compile.default_certificate = Some(source);
        self
    }

    /// Where the admin endpoints are served; `None` turns the admin server off.
    pub fn admin_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.admin_addr = addr;
        self
    }

    /// Proxy limits and timeouts.
    pub fn proxy_config(mut self, config: ProxyConfig) -> Self {
        self.proxy = config;
        self
    }

    /// The ingress class whose Routes this gateway serves.
    pub fn ingress_class(mut self, class: impl Into<String>) -> Self {
        self.compile.ingress_class = class.into();
        self
    }

    /// Kubernetes mode: watch the cluster (used when neither `config_path` nor `objects` is
    /// set). Needs the `kubernetes` cargo feature (on by default).
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(mut self, opts: crate::controller::kube::KubeOptions) -> Self {
        self.compile.discovery = true;
        self.kube = Some(opts);
        self
    }

    /// Ingress classes served too, without writing their Ingresses' status
    /// (`--watch-ingress-class`).
    pub fn watch_ingress_classes(mut self, classes: Vec<String>) -> Self {
        self.compile.watch_ingress_classes = classes;
        self
    }

    /// The `spec.controller` of the IngressClasses this gateway serves (Kubernetes mode).
    pub fn controller_name(mut self, name: impl Into<String>) -> Self {
        self.compile.controller_name = name.into();
        self
    }

    /// The DNS server Backends with `spec.dns` ask (UDP, TCP when UDP fails or an answer is
    /// truncated); `None` (the default): the system's configuration (`/etc/resolv.conf`).
    pub fn dns_server(mut self, server: Option<SocketAddr>) -> Self {
        self.dns.server = server;
        self
    }

    /// The L4 ports TCP and UDP Routes may use (`--l4-ports`): a Route's `spec.port` must be one of
    /// them; each is bound only while a Route uses it (default: none).
    pub fn l4_ports(mut self, ports: Vec<crate::model::L4Listener>) -> Self {
        self.l4_ports = ports;
        self
    }

    /// Peers (load balancers in front) whose connections on the HTTP, HTTPS and L4 listeners
    /// must start with a PROXY protocol header, v1 or v2 (`--proxy-protocol-from`); the client
    /// it names is the connection's client (access log, IP lists, rate-limit keys, hashing).
    /// Default: none. Set it after [`GatewayBuilder::proxy_config`], which replaces it.
    pub fn proxy_protocol_from(mut self, peers: Vec<crate::model::Cidr>) -> Self {
        self.proxy.proxy_protocol_from = peers;
        self
    }

    /// How long a burst of changes is gathered into one reload (default 50 ms). The first
    /// change after a quiet period, and a file its writer has closed, are applied at once; a
    /// file still being written waits for its close or for this long with no further write.
    pub fn debounce(mut self, window: Duration) -> Self {
        self.debounce = window;
        self
    }

    /// Whether file changes trigger a reload (default on).
    pub fn watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// The access log (default for the library: off; lines go to stdout).
    pub fn access_log(mut self, config: AccessLogConfig) -> Self {
        self.access_log = config;
        self
    }

    /// Metrics and access log to use instead of new ones (e.g. to send the access log elsewhere
    /// with [`Telemetry::with_output`]).
    pub fn telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Passes every request and response through `middleware` (see [`Middleware`]); without
    /// one, the request path does not look for it.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware = Some(Arc::new(middleware));
        self
    }

    /// Picks the endpoints of Backend `namespace/name` with selectors built by `factory`
    /// (whatever its `loadBalancer` says; rebuilt when its endpoint set changes). See
    /// [`balance::Selector`](crate::proxy::balance::Selector).
    pub fn selector(mut self, namespace: &str, name: &str, factory: impl SelectorFactory) -> Self {
        let id = ObjectRef::new(Kind::Backend, namespace, name);
        self.custom = self.custom.selector(id, factory);
        self
    }

    /// Probes the endpoints of Backend `namespace/name` with `check` instead of the probe of its
    /// `activeHealthCheck` (whose interval, timeout and thresholds still apply; a Backend
    /// without `activeHealthCheck` is not probed).
    pub fn health_check(mut self, namespace: &str, name: &str, check: impl HealthCheck) -> Self {
        let id = ObjectRef::new(Kind::Backend, namespace, name);
        self.custom = self.custom.health_check(id, check);
        self
    }

    /// Binds the listeners, publishes the first table and starts serving.
    pub async fn start(self) -> Result<Gateway, GatewayError> {
        // Files win over objects from code, which win over Kubernetes.
        let source = match (self.config_path, self.objects) {
            (Some(path), _) => Mode::Files(path),
            (None, Some(objects)) => Mode::Code(objects),
            #[cfg(feature = "kubernetes")]
            (None, None) => match self.kube {
                // The client is made before binding, so a missing kubeconfig fails fast.
                Some(opts) => Mode::Kube(crate::controller::kube::client().await?, Box::new(opts)),
                None => return Err(GatewayError::NoConfig),
            },
            #[cfg(not(feature = "kubernetes"))]
            (None, None) => return Err(GatewayError::NoConfig),
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind { addr, source })
        };
        let http = bind(self.http_addr).await?;
        let http_addr = http.local_addr().map_err(|source| GatewayError::Bind {
            addr: self.http_addr,
            source,
        })?;
        let https = match self.https_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
        let admin = match self.admin_addr {
            Some(a) => Some(bind(a).await?),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());

        let telemetry = self
            .telemetry
            .unwrap_or_else(|| Arc::new(Telemetry::new(&self.access_log)));
        let stop = CancellationToken::new();
        let shutting_down = CancellationToken::new();
        let (tables_tx, tables) = watch::channel(None);
        let mut proxy_config = self.proxy;
        proxy_config.http_port.get_or_insert(http_addr.port());
        proxy_config.l4_ports = self.l4_ports.clone();
        let mut compile = self.compile;
        compile.l4_ports = self.l4_ports;
        compile.https = match https_addr {
            Some(a) => crate::controller::compile::HttpsListener::Port(a.port()),
            None => crate::controller::compile::HttpsListener::Off,
        };
        compile.global_rate_limits = proxy_config.redis.is_some();
        let with_redis = proxy_config.redis.is_some();
        if let Some(a) = https_addr {
            proxy_config.https_port.get_or_insert(a.port());
        }
        let proxy = Proxy::extended(
            proxy_config,
            telemetry.clone(),
            self.middleware,
            self.custom,
        )?;
        // Give Redis a moment, so that the first requests find Global limits counting; if it is
        // not there, they follow their failureMode until it is.
        if with_redis && !proxy.redis_ready(REDIS_START_WAIT).await {
            tracing::warn!(
                "Redis is not reachable yet; Global rate limits follow their failureMode until it is"
            );
        }
        if let Some(listener) = admin {
            let state = AdminState {
                tables: tables.clone(),
                telemetry: telemetry.clone(),
                proxy: proxy.clone(),
                shutting_down: shutting_down.clone(),
            };
            tokio::spawn(admin::serve(listener, state, stop.clone()));
        }

        // DNS discovery follows the Backends of every published table, in every mode.
        let dns_statuses = Arc::new(crate::controller::dns::DnsStatuses::default());
        tokio::spawn(crate::controller::dns::run(
            self.dns,
            proxy.discovery(),
            dns_statuses.clone(),
            tables.clone(),
            telemetry.clone(),
            stop.clone(),
        ));
        // JWKS URIs are fetched off the request path, one task per URI the tables name.
        tokio::spawn(proxy.follow_jwks(tables.clone(), stop.clone()));
        let publisher = proxy.clone();
        let publish: reload::Publish = Box::new(move |table: Arc<RoutingTable>| {
            publisher.publish(table.clone());
            tables_tx.send_replace(Some(table));
        });
        let (reload_tx, reload_rx) = mpsc::channel(16);
        // Files the options and objects name are read on every reload; a change to one
        // triggers it.
        let file_watch = self
            .watch
            .then(|| crate::controller::files::FileWatch::new(reload_tx.clone()));
        let mut code = None;
        let watcher = match source {
            #[cfg(feature = "kubernetes")]
            Mode::Kube(client, mut kube) => {
                kube.debounce = self.debounce;
                crate::controller::kube::start(
                    client,
                    *kube,
                    compile,
                    proxy.discovery(),
                    dns_statuses,
                    publish,
                    telemetry.clone(),
                    reload_rx,
                    file_watch,
                    stop.clone(),
                );
                proxy.serve(http);
                if let Some(l) = https {
                    proxy.serve_tls(l);
                }
                None
            }
            Mode::Code(objects) => {
                // Reloaded by `Gateway::apply` (and `reload`), never by files.
                let source = CodeSource::new(objects);
                code = Some(source.clone());
                let mut controller =
                    SourceController::new(source, compile, publish, telemetry.clone());
                if let Some(w) = file_watch {
                    controller = controller.with_file_watch(w);
                }
                controller.reload()?;
                proxy.serve(http);
                if let Some(l) = https {
                    proxy.serve_tls(l);
                }
                tokio::spawn(controller.run(reload_rx, self.debounce));
                None
            }
            Mode::Files(path) => {
                let mut controller = FileController::new(
                    FileSource::new(&path),
                    compile,
                    publish,
                    telemetry.clone(),
                );
                if let Some(w) = file_watch {
                    controller = controller.with_file_watch(w);
                }
                controller.reload()?;
                proxy.serve(http);
                if let Some(l) = https {
                    proxy.serve_tls(l);
                }
                let watcher = if self.watch {
                    Some(reload::watch(&path, reload_tx.clone()).map_err(GatewayError::Watch)?)
                } else {
                    None
                };
                tokio::spawn(controller.run(reload_rx, self.debounce));
                watcher
            }
        };

        Ok(Gateway {
            http_addr,
            https_addr,
            admin_addr,
            proxy,
            telemetry,
            tables,
            reload: reload_tx,
            code,
            stop,
            shutting_down,
            _watcher: watcher,
        })
    }
}

/// A running gateway.
pub struct Gateway {
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    proxy: Proxy,
    tables: watch::Receiver<Option<Arc<RoutingTable>>>,
    telemetry: Arc<Telemetry>,
    reload: mpsc::Sender<Change>,
    code: Option<CodeSource>,
    stop: CancellationToken,
    shutting_down: CancellationToken,
    _watcher: Option<crate::controller::dirwatch::DirWatch>,
}

impl Gateway {
    /// A builder with the defaults of `tidegate run`.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The address user traffic is served on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address HTTPS is served on, if it is.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The admin server's address, if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Asks for a reload of the configuration (what SIGHUP does): file mode reads the files
    /// again; Kubernetes mode recompiles and republishes from what its watches hold.
    pub fn reload(&self) {
        let _ = self.reload.try_send(Change::Complete);
    }

    /// Replaces the objects built in code with `objects` and publishes them (after the
    /// builder's debounce; watch [`Gateway::tables`] for the new version). A bad object is
    /// reported on that object and its last accepted version keeps serving, as with files.
    /// Returns false, changing nothing, when this gateway does not serve objects from code.
    pub fn apply(&self, objects: Objects) -> bool {
        let Some(code) = &self.code else {
            return false;
        };
        code.replace(objects);
        self.reload();
        true
    }

    /// The table being served.
    pub fn table(&self) -> Option<Arc<RoutingTable>> {
        self.tables.borrow().clone()
    }

    /// A receiver that sees every published table.
    pub fn tables(&self) -> watch::Receiver<Option<Arc<RoutingTable>>> {
        self.tables.clone()
    }

    /// Metrics and access log.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The proxy, for its runtime state.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Turns `/readyz` to 503 while traffic is still served: the first step of a shutdown, so
    /// that endpoints and load balancers stop sending new traffic before the listener closes.
    pub fn begin_shutdown(&self) {
        self.shutting_down.cancel();
    }

    /// Stops accepting, drains in-flight requests and tunnels for up to `drain`, and stops.
    /// Returns whether everything finished within the drain period.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.shutting_down.cancel();
        let finished = self.proxy.drain(drain).await;
        self.stop.cancel();
        finished
    }
}
