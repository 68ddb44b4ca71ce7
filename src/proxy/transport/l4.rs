//! TCP Routes: listeners opened and closed as Routes come and go, and connections copied
//! byte for byte to a backend endpoint.
//!
//! Each L4 port of `--l4-ports` is bound only while a TCP Route names it; other listeners are
//! never touched. A connection reads the router current when it arrives and keeps its backend
//! and endpoint for its whole life. It ends when both sides have closed (a half-close is passed
//! on: the other direction keeps flowing), on an error, after the Route's idle timeout, at the
//! end of the Route's drain timeout once its endpoint (or its Route) is gone, or when the
//! proxy's drain period ends.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proxy_protocol::{self, Origin, ProxyProtocolFrom};
use crate::model::{
    L4Listener, L4Protocol, L4Route, LoadBalancing, ObjectRef, ProxyProtocolVersion,
};
use crate::proxy::upstream::balance::{PickContext, stable_hash};
use crate::proxy::upstream::{BackendState, EndpointState, Router};
use crate::telemetry::metrics::{
    BackendLabels, L4BytesLabels, L4ConnectionLabels, Metrics, RouteLabels,
};

/// Bytes read at once per direction.
const BUFFER: usize = 16 * 1024;
/// Most endpoints one connection tries before it gives up.
const CONNECT_ATTEMPTS: usize = 3;

/// The metrics L4 connections record.
#[derive(Clone)]
pub struct L4Metrics {
    connections: Family<L4ConnectionLabels, Counter>,
    open: Family<RouteLabels, Gauge>,
    bytes: Family<L4BytesLabels, Counter>,
    connect_errors: Family<BackendLabels, Counter>,
    udp: super::udp::UdpMetrics,
}

impl L4Metrics {
    /// The L4 families of `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            udp: super::udp::UdpMetrics::new(metrics),
            connections: metrics.l4_connections.clone(),
            open: metrics.l4_open_connections.clone(),
            bytes: metrics.l4_bytes.clone(),
            connect_errors: metrics.upstream_connect_errors.clone(),
        }
    }

    fn count(&self, route: &Arc<str>, backend: &Arc<str>, result: &'static str) {
        self.connections
            .get_or_create(&L4ConnectionLabels {
                route: route.clone(),
                backend: backend.clone(),
                result,
            })
            .inc();
    }
}

/// A route's live state, kept across reloads while the Route exists.
#[derive(Default)]
struct RouteState {
    /// Connections open now.
    open: AtomicU32,
    /// Position in the weighted schedule.
    split: AtomicUsize,
}

/// A bound L4 port.
struct Listening {
    stop: CancellationToken,
}

/// The L4 side of a proxy.
pub struct L4Proxy {
    ports: Vec<L4Listener>,
    router: ArcSwap<Router>,
    listening: Mutex<HashMap<L4Listener, Listening>>,
    routes: Mutex<HashMap<ObjectRef, Arc<RouteState>>>,
    tracker: TaskTracker,
    /// Cancelled when the proxy drains: every listener stops accepting.
    draining: CancellationToken,
    /// Cancelled at the end of the drain period: every connection closes.
    hard_stop: CancellationToken,
    default_connect_timeout: Duration,
    metrics: L4Metrics,
    /// UDP Routes' listeners and sessions.
    udp: Arc<super::udp::UdpProxy>,
    proxy_protocol: ProxyProtocolFrom,
}

impl L4Proxy {
    /// An L4 proxy that may open `ports`, starting with `router`.
    pub fn new(
        ports: Vec<L4Listener>,
        router: Arc<Router>,
        default_connect_timeout: Duration,
        hard_stop: CancellationToken,
        metrics: L4Metrics,
        proxy_protocol: ProxyProtocolFrom,
    ) -> Self {
        let udp = super::udp::UdpProxy::new(
            &ports,
            router.clone(),
            hard_stop.clone(),
            metrics.udp.clone(),
        );
        Self {
            udp: Arc::new(udp),
            ports,
            router: ArcSwap::new(router),
            listening: Mutex::default(),
            routes: Mutex::default(),
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            hard_stop,
            default_connect_timeout,
            metrics,
            proxy_protocol,
        }
    }

    /// The ports bound now.
    pub fn bound(&self) -> Vec<L4Listener> {
        let mut v: Vec<_> = self.lock_listening().keys().copied().collect();
        v.extend(self.udp.bound());
        v.sort();
        v
    }

    fn lock_listening(&self) -> std::sync::MutexGuard<'_, HashMap<L4Listener, Listening>> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves from `router` from now on: binds the ports its TCP Routes name that are not bound
    /// yet, and closes the listeners no Route names any more (their connections go on); UDP
    /// ports likewise (their sessions end).
    pub fn publish(self: &Arc<Self>, router: Arc<Router>) {
        self.udp.publish(router.clone());
        let wanted: Vec<L4Listener> = self
            .ports
            .iter()
            .filter(|p| p.protocol == L4Protocol::Tcp)
            .filter(|p| router.table.l4_route(p.protocol, p.addr.port()).is_some())
            .copied()
            .collect();
        {
            let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
            routes.retain(|id, _| router.table.l4.iter().any(|r| &r.route == id));
            for r in &router.table.l4 {
                routes.entry(r.route.clone()).or_default();
            }
        }
        self.router.store(router);
        if self.draining.is_cancelled() {
            return;
        }
        let mut listening = self.lock_listening();
        reconcile(
            "TCP",
            &mut listening,
            wanted,
            |l| l.stop.cancel(),
            |port| {
                let listener = bind(port.addr)?;
                let stop = self.draining.child_token();
                self.tracker.spawn(self.clone().accept_loop(
                    listener,
                    port.addr.port(),
                    stop.clone(),
                ));
                Ok(Listening { stop })
            },
        );
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        port: u16,
        stop: CancellationToken,
    ) {
        loop {
            let (mut stream, peer) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, do not spin.
                        tracing::warn!(port, error = %e, "L4 accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let router = self.router.load_full();
            let Some(index) = router
                .table
                .l4
                .iter()
                .position(|r| r.protocol == L4Protocol::Tcp && r.port == port)
            else {
                continue;
            };
            let me = self.clone();
            self.tracker.spawn(async move {
                let origin = me.proxy_protocol.accept(&mut stream, peer, "l4").await;
                if let Some(origin) = origin {
                    me.serve(stream, origin, &router, index, &[]).await;
                }
            });
        }
    }

    /// A TLS connection whose ClientHello (`hello`, already read) names `name`, which a TLS
    /// passthrough Route takes: served like a TCP Route's connection, `hello` sent first.
    pub async fn passthrough(&self, client: TcpStream, origin: Origin, hello: Vec<u8>, name: &str) {
        let router = self.router.load_full();
        let Some(index) = router
            .table
            .passthrough(name)
            .and_then(|r| router.table.l4.iter().position(|x| x.route == r.route))
        else {
            return;
        };
        self.serve(client, origin, &router, index, &hello).await;
    }

    /// One connection of Route `router.table.l4[index]`: the Route's connection limit, then
    /// [`L4Proxy::connection`].
    async fn serve(
        &self,
        client: TcpStream,
        origin: Origin,
        router: &Router,
        index: usize,
        hello: &[u8],
    ) {
        let route = &router.table.l4[index];
        let state = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&route.route)
            .cloned()
            .unwrap_or_default();
        let open = state.open.fetch_add(1, Ordering::AcqRel);
        if route.max_connections.is_some_and(|max| open >= max) {
            state.open.fetch_sub(1, Ordering::AcqRel);
            self.metrics.count(&route.label, &Arc::from(""), "limited");
            return;
        }
        let gauge = self
            .metrics
            .open
            .get_or_create(&RouteLabels {
                route: route.label.clone(),
            })
            .clone();
        gauge.inc();
        self.connection(client, origin, router, route, &state, hello)
            .await;
        gauge.dec();
        state.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// One client connection, from the pick of a backend to the close of both sides.
    async fn connection(
        &self,
        client: TcpStream,
        origin: Origin,
        router: &Router,
        route: &L4Route,
        state: &RouteState,
        hello: &[u8],
    ) {
        let peer = origin.client;
        let none: Arc<str> = Arc::from("");
        let n = state.split.fetch_add(1, Ordering::Relaxed);
        let picked =
            crate::model::pick(&route.backends, &route.schedule, n, &http::HeaderMap::new());
        let Ok(picked) = picked else {
            self.metrics.count(&route.label, &none, "no_backend");
            return;
        };
        let backend = &router.backends[picked.backend];
        let label = router.table.backends[picked.backend].label.clone();
        let Some((mut upstream, endpoint)) = self.connect(backend, &label, peer.ip()).await else {
            self.metrics.count(&route.label, &label, "connect_failed");
            return;
        };
        self.metrics.count(&route.label, &label, "forwarded");
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let in_flight = endpoint.begin();
        let bytes = |direction| {
            self.metrics
                .bytes
                .get_or_create(&L4BytesLabels {
                    route: route.label.clone(),
                    backend: label.clone(),
                    direction,
                })
                .clone()
        };
        let [to_backend, to_client] = [bytes("to_backend"), bytes("to_client")];
        if let Some(version) = router.table.backends[picked.backend].proxy_protocol {
            let destination = origin
                .destination
                .or_else(|| client.local_addr().ok())
                .unwrap_or(peer);
            let header = match version {
                ProxyProtocolVersion::V1 => proxy_protocol::encode_v1(peer, destination),
                ProxyProtocolVersion::V2 => {
                    proxy_protocol::encode_v2(peer, destination, proxy_protocol::Transport::Stream)
                }
            };
            if upstream.write_all(&header).await.is_err() {
                return;
            }
        }
        if !hello.is_empty() {
            if upstream.write_all(hello).await.is_err() {
                return;
            }
            to_backend.inc_by(hello.len() as u64);
        }
        let watch = Watch {
            route,
            backend,
            address: &endpoint.endpoint.address,
            current: &self.router,
        };
        let end = pipe(
            client,
            upstream,
            [to_backend, to_client],
            &watch,
            &self.hard_stop,
        )
        .await;
        drop(in_flight);
        tracing::debug!(route = %route.label, backend = %label, client = %peer, end = end.as_str(), "L4 connection closed");
    }

    /// Connects to an endpoint of `backend` (another one when a connect fails, up to
    /// [`CONNECT_ATTEMPTS`]); failures count towards passive health.
    async fn connect(
        &self,
        backend: &BackendState,
        label: &Arc<str>,
        client: IpAddr,
    ) -> Option<(TcpStream, Arc<EndpointState>)> {
        let hash = match backend.load_balancing() {
            LoadBalancing::IpHash | LoadBalancing::ConsistentHash(_) => {
                Some(match client.to_canonical() {
                    IpAddr::V4(a) => stable_hash(&a.octets()),
                    IpAddr::V6(a) => stable_hash(&a.octets()),
                })
            }
            _ => None,
        };
        let ctx = PickContext { client, hash };
        let timeout = backend.connect_timeout(self.default_connect_timeout);
        for _ in 0..CONNECT_ATTEMPTS {
            let endpoint = backend.pick(&ctx).ok()?;
            let address = &*endpoint.endpoint.address;
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    backend.record(&endpoint, true);
                    return Some((stream, endpoint));
                }
                Ok(Err(e)) => tracing::debug!(endpoint = address, error = %e, "L4 connect failed"),
                Err(_) => tracing::debug!(endpoint = address, "L4 connect timed out"),
            }
            self.metrics
                .connect_errors
                .get_or_create(&BackendLabels {
                    backend: label.clone(),
                })
                .inc();
            backend.record(&endpoint, false);
        }
        None
    }

    /// Stops accepting on every L4 listener; connections go on until [`L4Proxy::wait`].
    pub fn drain(&self) {
        self.udp.drain();
        self.draining.cancel();
        self.lock_listening().clear();
        self.tracker.close();
    }

    /// Waits for every connection to close (after [`L4Proxy::drain`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
        self.udp.wait().await;
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// What a connection checks while it is open: whether its endpoint and Route still exist.
struct Watch<'a> {
    route: &'a L4Route,
    backend: &'a BackendState,
    address: &'a str,
    current: &'a ArcSwap<Router>,
}

impl Watch<'_> {
    /// Whether the connection's Route still serves its port and its endpoint is still in its
    /// backend.
    fn still_wanted(&self) -> bool {
        let router = self.current.load();
        router.table.l4.iter().any(|r| r.route == self.route.route)
            && self.backend.has_endpoint(self.address)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides closed.
    Closed,
    /// A read or write failed (a reset).
    Error,
    /// No bytes for the idle timeout.
    Idle,
    /// Its endpoint or Route went away and the drain timeout passed.
    Drained,
    /// The proxy's drain period ended.
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Error => "error",
            End::Idle => "idle",
            End::Drained => "drained",
            End::Shutdown => "shutdown",
        }
    }
}

/// Copies both ways until both sides closed or something ends the connection.
async fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    [to_backend, to_client]: [Counter; 2],
    watch: &Watch<'_>,
    hard_stop: &CancellationToken,
) -> End {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = copy_half(cr, uw, &to_backend, &activity, start);
    let down = copy_half(ur, cw, &to_client, &activity, start);
    tokio::pin!(up, down);
    let idle = watch.route.idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval_at(start + tick, tick);
    let (mut up_done, mut down_done) = (false, false);
    let mut unwanted_since: Option<Instant> = None;
    loop {
        if up_done && down_done {
            return End::Closed;
        }
        tokio::select! {
            r = &mut up, if !up_done => {
                if r.is_err() { return End::Error; }
                up_done = true;
            }
            r = &mut down, if !down_done => {
                if r.is_err() { return End::Error; }
                down_done = true;
            }
            now = ticks.tick() => {
                let last = start + Duration::from_millis(activity.load(Ordering::Relaxed));
                if now.duration_since(last) >= idle {
                    return End::Idle;
                }
                if watch.still_wanted() {
                    unwanted_since = None;
                } else {
                    let since = *unwanted_since.get_or_insert(now);
                    if now.duration_since(since) >= watch.route.drain_timeout {
                        return End::Drained;
                    }
                }
            }
            () = hard_stop.cancelled() => return End::Shutdown,
        }
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to`'s write side (the half-close
/// passes on).
async fn copy_half(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    bytes: &Counter,
    activity: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        bytes.inc_by(n as u64);
        activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Brings `listening` to `wanted` (the `protocol` listeners the Routes name): stops (`stop`) and
/// forgets those no Route names any more, and opens (`open`) those not open yet. Listeners in
/// both are not touched. A listener that cannot be opened is logged and tried again on the
/// next publish.
pub(super) fn reconcile<L>(
    protocol: &str,
    listening: &mut HashMap<L4Listener, L>,
    wanted: Vec<L4Listener>,
    stop: impl Fn(&L),
    mut open: impl FnMut(L4Listener) -> std::io::Result<L>,
) {
    listening.retain(|port, l| {
        let keep = wanted.contains(port);
        if !keep {
            tracing::info!(listener = %port, protocol, "L4 listener closed: no Route uses it");
            stop(l);
        }
        keep
    });
    for port in wanted {
        if listening.contains_key(&port) {
            continue;
        }
        match open(port) {
            Ok(l) => {
                tracing::info!(listener = %port, protocol, "L4 listener open");
                listening.insert(port, l);
            }
            Err(e) => {
                tracing::error!(listener = %port, protocol, error = %e, "cannot open the L4 listener")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Endpoint, Kind, RoutingTable, UpstreamProtocol, WeightedBackend};
    use crate::proxy::upstream::{Registry, UpstreamSettings};

    const IDLE: Duration = Duration::from_secs(60);
    const DRAIN: Duration = Duration::from_secs(10);

    fn table(with_route: bool, endpoint: &str) -> RoutingTable {
        let backend = Backend::new(
            ObjectRef::new(Kind::Backend, "default", "b"),
            UpstreamProtocol::Tcp,
            vec![Endpoint::new(endpoint)],
        );
        let route = L4Route {
            route: ObjectRef::new(Kind::Route, "default", "r"),
            label: "default/r".into(),
            protocol: L4Protocol::Tcp,
            port: 7000,
            hostnames: Vec::new(),
            backends: Vec::new(),
            schedule: Arc::from([]),
            idle_timeout: IDLE,
            max_connections: None,
            drain_timeout: DRAIN,
            udp: None,
            created: None,
        }
        .with_backends(vec![WeightedBackend {
            backend: Some(0),
            name: "default/b".into(),
            weight: 1,
            canaries: Vec::new(),
            filters: Default::default(),
        }]);
        let l4 = if with_route { vec![route] } else { Vec::new() };
        RoutingTable::new(Vec::new(), vec![backend], Vec::new()).with_l4(l4)
    }

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    struct Fixture {
        registry: Registry,
        current: ArcSwap<Router>,
        router: Arc<Router>,
    }

    impl Fixture {
        fn new() -> Self {
            let registry = Registry::new(UpstreamSettings::default());
            let router = Arc::new(Router::link(
                Arc::new(table(true, "127.0.0.1:1")),
                &registry,
            ));
            Self {
                current: ArcSwap::new(router.clone()),
                router,
                registry,
            }
        }

        fn watch(&self) -> Watch<'_> {
            Watch {
                route: &self.router.table.l4[0],
                backend: &self.router.backends[0],
                address: "127.0.0.1:1",
                current: &self.current,
            }
        }

        /// Publishes a table without the Route, or with the Route and another endpoint.
        fn publish(&self, with_route: bool, endpoint: &str) {
            let router = Router::link(Arc::new(table(with_route, endpoint)), &self.registry);
            self.current.store(Arc::new(router));
        }
    }

    /// The connection's ends as the client and the backend see them, and the pipe between.
    async fn piped(
        f: &Fixture,
        stop: &CancellationToken,
        during: impl std::future::Future<Output = ()>,
    ) -> (End, Duration) {
        let start = Instant::now();
        let watch = f.watch();
        let (client, server_side) = pair().await;
        let (upstream, backend) = pair().await;
        let counters: [Counter; 2] = [Counter::default(), Counter::default()];
        let pipe = pipe(server_side, upstream, counters, &watch, stop);
        // Both outer ends stay open (and silent) while the pipe runs.
        let (end, ()) = tokio::join!(pipe, during);
        drop((client, backend));
        (end, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_ends_after_the_idle_timeout() {
        let f = Fixture::new();
        let (end, took) = piped(&f, &CancellationToken::new(), async {}).await;
        assert_eq!(end, End::Idle);
        assert!(
            took >= IDLE && took < IDLE + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_endpoint_drains_for_the_drain_timeout() {
        let f = Fixture::new();
        f.publish(true, "127.0.0.1:2");
        let (end, took) = piped(&f, &CancellationToken::new(), async {}).await;
        assert_eq!(end, End::Drained);
        // Noticed within one tick (1 s for a 60 s idle timeout), then the drain timeout.
        assert!(
            took >= DRAIN && took <= DRAIN + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_route_drains_and_a_returning_one_stops_the_drain() {
        let f = Fixture::new();
        f.publish(false, "127.0.0.1:1");
        let (end, took) = piped(&f, &CancellationToken::new(), async {}).await;
        assert_eq!(end, End::Drained);
        assert!(took >= DRAIN, "{took:?}");

        let f = Fixture::new();
        f.publish(false, "127.0.0.1:1");
        let (end, took) = piped(&f, &CancellationToken::new(), async {
            tokio::time::sleep(DRAIN / 2).await;
            f.publish(true, "127.0.0.1:1");
        })
        .await;
        // Back before the drain ended: the connection lives on until it is idle.
        assert_eq!(end, End::Idle);
        assert!(took >= IDLE, "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_proxy_drain_period_closes_the_connection() {
        let f = Fixture::new();
        let stop = CancellationToken::new();
        let (end, took) = piped(&f, &stop, async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.cancel();
        })
        .await;
        assert_eq!(end, End::Shutdown);
        assert_eq!(took.as_secs(), 3);
    }
}
