//! UDP Routes: a socket per L4 port of `--l4-ports PORT/udp`, bound while a UDP Route names it,
//! and sessions keyed by the client's address and port.
//!
//! A session has one connected socket to the endpoint it was given when the client's first
//! datagram came, so the endpoint's replies (and the kernel's "port unreachable") come back on
//! it alone. It ends after the Route's idle timeout with no datagram either way, when its
//! endpoint refuses datagrams or (with `replyTimeout`) leaves one unanswered, when its endpoint
//! leaves its Backend or stops taking traffic (ejected, failing its probes), when its Route goes
//! away, or at shutdown.
//!
//! The path of a datagram allocates nothing: the listener reads into one buffer of its own, a
//! session's replies are read into a buffer per worker thread, and the counters a session
//! increments are looked up once, when it starts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proxy_protocol;
use crate::model::{L4Listener, L4Protocol, L4Route, LoadBalancing, ObjectRef, UdpSessions};
use crate::proxy::upstream::balance::{PickContext, stable_hash};
use crate::proxy::upstream::{BackendState, EndpointState, InFlight, Router};
use crate::telemetry::metrics::{
    BackendLabels, L4BytesLabels, L4ConnectionLabels, L4DropLabels, Metrics, RouteLabels,
};

/// The receive buffers' size: more than the largest UDP payload, so that a datagram over the
/// limit is seen whole (and dropped), never cut short.
const BUFFER: usize = UdpSessions::MAX_DATAGRAM + 1;
/// Room kept before each datagram read for a PROXY protocol v2 header (IPv6: 16 + 36 bytes),
/// so a Backend that asks for one gets it without the payload being copied.
const HEADER_ROOM: usize = 52;
/// Most endpoints one new session tries before its datagram is dropped.
const CONNECT_ATTEMPTS: usize = 3;
/// While the proxy drains, a session ends once it has been quiet this long.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

thread_local! {
    /// Where sessions read their endpoint's replies: one buffer per worker thread, borrowed
    /// only between a readiness event and the send to the client (no `.await` in between).
    static REPLY: RefCell<Box<[u8]>> = RefCell::new(vec![0; BUFFER].into_boxed_slice());
}

/// The metrics UDP sessions record.
#[derive(Clone)]
pub struct UdpMetrics {
    sessions: Family<L4ConnectionLabels, Counter>,
    open: Family<RouteLabels, Gauge>,
    datagrams: Family<L4BytesLabels, Counter>,
    bytes: Family<L4BytesLabels, Counter>,
    dropped: Family<L4DropLabels, Counter>,
    connect_errors: Family<BackendLabels, Counter>,
}

impl UdpMetrics {
    /// The UDP families of `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            sessions: metrics.l4_sessions.clone(),
            open: metrics.l4_open_sessions.clone(),
            datagrams: metrics.l4_datagrams.clone(),
            bytes: metrics.l4_bytes.clone(),
            dropped: metrics.l4_dropped_datagrams.clone(),
            connect_errors: metrics.upstream_connect_errors.clone(),
        }
    }

    fn session(&self, route: &Arc<str>, backend: &Arc<str>, result: &'static str) {
        self.sessions
            .get_or_create(&L4ConnectionLabels {
                route: route.clone(),
                backend: backend.clone(),
                result,
            })
            .inc();
    }

    fn drop(&self, route: &Arc<str>, reason: &'static str) {
        self.dropped
            .get_or_create(&L4DropLabels {
                route: route.clone(),
                reason,
            })
            .inc();
    }

    /// The datagram and byte counters of one direction.
    fn direction(
        &self,
        route: &Arc<str>,
        backend: &Arc<str>,
        direction: &'static str,
    ) -> (Counter, Counter) {
        let labels = L4BytesLabels {
            route: route.clone(),
            backend: backend.clone(),
            direction,
        };
        (
            self.datagrams.get_or_create(&labels).clone(),
            self.bytes.get_or_create(&labels).clone(),
        )
    }
}

/// A bound UDP port and its sessions.
struct Listener {
    socket: Arc<UdpSocket>,
    port: u16,
    /// Sessions by client address.
    sessions: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    /// Cancelled when no Route uses the port any more: the listener and its sessions end.
    stop: CancellationToken,
    /// Times of the sessions' activity are milliseconds since this.
    epoch: Instant,
}

impl Listener {
    fn sessions(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        // At least 1: 0 means "never" in `Session::awaiting`.
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }
}

/// One client's session.
struct Session {
    client: SocketAddr,
    upstream: UdpSocket,
    endpoint: Arc<EndpointState>,
    /// The last datagram either way (ms since the listener's epoch).
    last: AtomicU64,
    /// With a reply timeout: when the oldest unanswered datagram went out (0: none).
    awaiting: AtomicU64,
    /// Ends the session early (its endpoint refused a datagram).
    end: CancellationToken,
    /// (datagrams, bytes) to the backend and to the client.
    to_backend: (Counter, Counter),
    to_client: (Counter, Counter),
    /// The session counts as in flight to its endpoint (`/backends`, LeastRequest).
    _in_flight: InFlight,
    /// The PROXY protocol v2 header each datagram to the endpoint starts with, when its Backend
    /// asks for one (`spec.proxyProtocol: V2`).
    header: Option<Box<[u8]>>,
}

/// The UDP side of the L4 proxy.
pub struct UdpProxy {
    ports: Vec<L4Listener>,
    router: ArcSwap<Router>,
    listening: Mutex<HashMap<L4Listener, Arc<Listener>>>,
    tracker: TaskTracker,
    /// Cancelled when the proxy drains: listeners stop reading, quiet sessions end.
    draining: CancellationToken,
    /// Cancelled at the end of the drain period: every session ends.
    hard_stop: CancellationToken,
    /// Position in the weighted schedules (with one backendRef, always that one).
    split: AtomicUsize,
    metrics: UdpMetrics,
}

impl UdpProxy {
    /// A UDP proxy that may open the `/udp` entries of `ports`, starting with `router`.
    pub fn new(
        ports: &[L4Listener],
        router: Arc<Router>,
        hard_stop: CancellationToken,
        metrics: UdpMetrics,
    ) -> Self {
        Self {
            ports: ports
                .iter()
                .filter(|p| p.protocol == L4Protocol::Udp)
                .copied()
                .collect(),
            router: ArcSwap::new(router),
            listening: Mutex::default(),
            tracker: TaskTracker::new(),
            draining: CancellationToken::new(),
            hard_stop,
            split: AtomicUsize::new(0),
            metrics,
        }
    }

    fn listening(&self) -> MutexGuard<'_, HashMap<L4Listener, Arc<Listener>>> {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The UDP ports bound now.
    pub fn bound(&self) -> Vec<L4Listener> {
        self.listening().keys().copied().collect()
    }

    /// Serves from `router` from now on: binds the UDP ports its Routes name that are not
    /// bound yet, and closes the ones no Route names any more (with their sessions). Other
    /// ports are not touched.
    pub fn publish(self: &Arc<Self>, router: Arc<Router>) {
        let wanted: Vec<L4Listener> = self
            .ports
            .iter()
            .filter(|p| router.table.l4_route(p.protocol, p.addr.port()).is_some())
            .copied()
            .collect();
        self.router.store(router);
        if self.draining.is_cancelled() {
            return;
        }
        let mut listening = self.listening();
        super::l4::reconcile(
            "UDP",
            &mut listening,
            wanted,
            |l| l.stop.cancel(),
            |port| {
                let listener = Arc::new(Listener {
                    socket: Arc::new(bind(port.addr)?),
                    port: port.addr.port(),
                    sessions: Mutex::default(),
                    stop: CancellationToken::new(),
                    epoch: Instant::now(),
                });
                self.tracker
                    .spawn(self.clone().receive_loop(listener.clone()));
                Ok(listener)
            },
        );
    }

    /// Reads the clients' datagrams and passes each to its session (started on the first).
    async fn receive_loop(self: Arc<Self>, listener: Arc<Listener>) {
        let mut buf = vec![0u8; HEADER_ROOM + BUFFER].into_boxed_slice();
        loop {
            let (n, client) = tokio::select! {
                () = listener.stop.cancelled() => return,
                () = self.draining.cancelled() => return,
                r = listener.socket.recv_from(&mut buf[HEADER_ROOM..]) => match r {
                    Ok(r) => r,
                    // An ICMP error for an earlier reply to a client, and the like.
                    Err(e) => {
                        tracing::debug!(port = listener.port, error = %e, "UDP receive failed");
                        continue;
                    }
                },
            };
            self.datagram(&listener, client, &mut buf[..HEADER_ROOM + n])
                .await;
        }
    }

    /// One datagram from `client`.
    /// `buf` is the datagram after [`HEADER_ROOM`] bytes the PROXY protocol header may take.
    async fn datagram(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        client: SocketAddr,
        buf: &mut [u8],
    ) {
        let data = &buf[HEADER_ROOM..];
        let router = self.router.load();
        let Some(route) = router.table.l4_route(L4Protocol::Udp, listener.port) else {
            return;
        };
        let Some(settings) = route.udp else { return };
        if data.len() > settings.max_datagram_size {
            self.metrics.drop(&route.label, "too_large");
            return;
        }
        let found = listener.sessions().get(&client).cloned();
        let session = match found {
            Some(s) => s,
            None => {
                if settings
                    .max_sessions
                    .is_some_and(|max| listener.sessions().len() >= max as usize)
                {
                    self.metrics.drop(&route.label, "max_sessions");
                    return;
                }
                match self.start(listener, &router, route, client).await {
                    Some(s) => s,
                    None => {
                        self.metrics.drop(&route.label, "no_backend");
                        return;
                    }
                }
            }
        };
        let now = listener.now_ms();
        session.last.store(now, Ordering::Relaxed);
        let payload = data.len();
        let out: &[u8] = match &session.header {
            None => &buf[HEADER_ROOM..],
            Some(h) => {
                let start = HEADER_ROOM - h.len();
                buf[start..HEADER_ROOM].copy_from_slice(h);
                &buf[start..]
            }
        };
        // A new socket's readiness is not known until the reactor has seen it: then wait.
        let sent = match session.upstream.try_send(out) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => session.upstream.send(out).await,
            r => r,
        };
        match sent {
            Ok(_) => {
                session.to_backend.0.inc();
                session.to_backend.1.inc_by(payload as u64);
                if settings.reply_timeout.is_some() {
                    let _ = session.awaiting.compare_exchange(
                        0,
                        now,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            Err(e) => {
                self.metrics.drop(&route.label, "send_failed");
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    session.end.cancel();
                }
            }
        }
    }

    /// Starts the session of `client`: picks a backend (by the client's address with several
    /// backendRefs, so a client keeps its backend) and an endpoint (the Backend's balancer;
    /// ConsistentHash and IPHash hash the client's IP), connects a socket to it, and spawns the
    /// task that passes its replies back.
    async fn start(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        router: &Arc<Router>,
        route: &L4Route,
        client: SocketAddr,
    ) -> Option<Arc<Session>> {
        let none: Arc<str> = Arc::from("");
        let ip_hash = match client.ip().to_canonical() {
            IpAddr::V4(a) => stable_hash(&a.octets()),
            IpAddr::V6(a) => stable_hash(&a.octets()),
        };
        let n = match route.backends.len() {
            1 => self.split.fetch_add(1, Ordering::Relaxed),
            _ => ip_hash as usize,
        };
        let picked =
            crate::model::pick(&route.backends, &route.schedule, n, &http::HeaderMap::new());
        let Ok(picked) = picked else {
            self.metrics.session(&route.label, &none, "no_backend");
            return None;
        };
        let backend = router.backends[picked.backend].clone();
        let label = router.table.backends[picked.backend].label.clone();
        let hash = match backend.load_balancing() {
            LoadBalancing::IpHash | LoadBalancing::ConsistentHash(_) => Some(ip_hash),
            _ => None,
        };
        let ctx = PickContext {
            client: client.ip(),
            hash,
        };
        let mut connected = None;
        for _ in 0..CONNECT_ATTEMPTS {
            let Ok(endpoint) = backend.pick(&ctx) else {
                break;
            };
            match connect(&endpoint.endpoint.address).await {
                Ok(socket) => {
                    connected = Some((socket, endpoint));
                    break;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.endpoint.address, error = %e, "UDP connect failed");
                    self.metrics
                        .connect_errors
                        .get_or_create(&BackendLabels {
                            backend: label.clone(),
                        })
                        .inc();
                    backend.record(&endpoint, false);
                }
            }
        }
        let Some((upstream, endpoint)) = connected else {
            self.metrics.session(&route.label, &label, "connect_failed");
            return None;
        };
        self.metrics.session(&route.label, &label, "forwarded");
        let header = router.table.backends[picked.backend]
            .proxy_protocol
            .map(|_| {
                let gateway = listener
                    .socket
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], listener.port)));
                proxy_protocol::encode_v2(client, gateway, proxy_protocol::Transport::Datagram)
                    .into_boxed_slice()
            });
        let session = Arc::new(Session {
            client,
            upstream,
            endpoint: endpoint.clone(),
            last: AtomicU64::new(listener.now_ms()),
            awaiting: AtomicU64::new(0),
            end: CancellationToken::new(),
            _in_flight: endpoint.begin(),
            header,
            to_backend: self.metrics.direction(&route.label, &label, "to_backend"),
            to_client: self.metrics.direction(&route.label, &label, "to_client"),
        });
        listener.sessions().insert(client, session.clone());
        let gauge = self
            .metrics
            .open
            .get_or_create(&RouteLabels {
                route: route.label.clone(),
            })
            .clone();
        gauge.inc();
        let run = SessionRun {
            proxy: self.clone(),
            listener: listener.clone(),
            session: session.clone(),
            route: route.route.clone(),
            route_label: route.label.clone(),
            backend,
            label,
            gauge,
        };
        self.tracker.spawn(run.run());
        Some(session)
    }

    /// Stops reading on every UDP listener; sessions end once quiet, or at the end of the drain
    /// period.
    pub fn drain(&self) {
        self.draining.cancel();
        self.listening().clear();
        self.tracker.close();
    }

    /// Waits for every session to end (after [`UdpProxy::drain`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A socket connected to `address` (`ip:port`, or `host:port` resolved now).
async fn connect(address: &str) -> io::Result<UdpSocket> {
    let target = match address.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(address)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?,
    };
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// No datagram either way for the idle timeout.
    Idle,
    /// The endpoint refused a datagram (ICMP port unreachable) or a read failed.
    Refused,
    /// A datagram went unanswered for the reply timeout.
    NoReply,
    /// Its endpoint left its Backend or takes no traffic now, or its Route went away.
    Unwanted,
    /// The proxy drains or stopped.
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Idle => "idle",
            End::Refused => "refused",
            End::NoReply => "no_reply",
            End::Unwanted => "unwanted",
            End::Shutdown => "shutdown",
        }
    }
}

/// A session's task: passes its endpoint's replies to the client and ends it.
struct SessionRun {
    proxy: Arc<UdpProxy>,
    listener: Arc<Listener>,
    session: Arc<Session>,
    route: ObjectRef,
    route_label: Arc<str>,
    backend: Arc<BackendState>,
    label: Arc<str>,
    gauge: Gauge,
}

impl SessionRun {
    async fn run(self) {
        let end = self.replies().await;
        if matches!(end, End::Refused | End::NoReply) {
            self.backend.record(&self.session.endpoint, false);
        }
        {
            let mut sessions = self.listener.sessions();
            if sessions
                .get(&self.session.client)
                .is_some_and(|s| Arc::ptr_eq(s, &self.session))
            {
                sessions.remove(&self.session.client);
            }
        }
        self.gauge.dec();
        tracing::debug!(route = %self.route_label, backend = %self.label, client = %self.session.client, end = end.as_str(), "UDP session ended");
    }

    /// The Route's settings now (they may change while the session lives).
    fn settings(&self) -> Option<(Duration, UdpSessions)> {
        let router = self.proxy.router.load();
        let route = router.table.l4.iter().find(|r| r.route == self.route)?;
        Some((route.idle_timeout, route.udp?))
    }

    /// Whether the session may go on: its endpoint is still in its Backend, and takes traffic
    /// (or no endpoint of the Backend does: moving would not help).
    fn wanted(&self) -> bool {
        let address = &*self.session.endpoint.endpoint.address;
        let now = self.backend.clock().now_ms();
        self.backend.has_endpoint(address)
            && (self.session.endpoint.available(now) || self.backend.counts().0 == 0)
    }

    async fn replies(&self) -> End {
        let s = &*self.session;
        let Some((idle, settings)) = self.settings() else {
            return End::Unwanted;
        };
        let tick = (idle / 4)
            .min(settings.reply_timeout.unwrap_or(idle) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + tick, tick);
        let mut max_size = settings.max_datagram_size;
        let mut held = Vec::new();
        loop {
            tokio::select! {
                // The kernel's "port unreachable" is an error on the socket, not a readable event.
                r = s.upstream.ready(Interest::READABLE | Interest::ERROR) => {
                    let Ok(ready) = r else { return End::Refused };
                    if ready.is_error() {
                        if !matches!(s.upstream.take_error(), Ok(None)) {
                            return End::Refused;
                        }
                        let _ = s.upstream.try_io(Interest::ERROR, || {
                            Err::<(), _>(io::ErrorKind::WouldBlock.into())
                        });
                    }
                    if ready.is_readable()
                        && let Err(end) = self.pass_replies(max_size, &mut held).await
                    {
                        return end;
                    }
                }
                _ = ticks.tick() => {
                    let Some((idle, settings)) = self.settings() else {
                        return End::Unwanted;
                    };
                    max_size = settings.max_datagram_size;
                    let now = self.listener.now_ms();
                    let quiet = Duration::from_millis(now.saturating_sub(s.last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        return End::Idle;
                    }
                    let awaiting = s.awaiting.load(Ordering::Relaxed);
                    if let Some(limit) = settings.reply_timeout
                        && awaiting != 0
                        && Duration::from_millis(now.saturating_sub(awaiting)) >= limit
                    {
                        return End::NoReply;
                    }
                    if !self.wanted() {
                        return End::Unwanted;
                    }
                    if self.proxy.draining.is_cancelled() && quiet >= DRAIN_QUIET {
                        return End::Shutdown;
                    }
                }
                () = s.end.cancelled() => return End::Refused,
                () = self.listener.stop.cancelled() => return End::Unwanted,
                () = self.proxy.hard_stop.cancelled() => return End::Shutdown,
            }
        }
    }

    /// Passes every reply waiting on the session's socket to the client; an error ends the
    /// session. A reply the listener's socket cannot take now is copied to `held` (a buffer of
    /// the session's, kept for the next time) and sent once it can.
    async fn pass_replies(&self, max_size: usize, held: &mut Vec<u8>) -> Result<(), End> {
        loop {
            match self.pass_ready_replies(max_size, held) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(end) => return Err(end),
            }
            // `held` has a reply the client's socket was not ready for.
            match self
                .listener
                .socket
                .send_to(held, self.session.client)
                .await
            {
                Ok(_) => self.count_reply(held.len()),
                Err(_) => self.proxy.metrics.drop(&self.route_label, "send_failed"),
            }
        }
    }

    fn count_reply(&self, n: usize) {
        self.session.to_client.0.inc();
        self.session.to_client.1.inc_by(n as u64);
    }

    /// The synchronous part of [`SessionRun::pass_replies`]: `Ok(true)` when a reply waits in
    /// `held`.
    fn pass_ready_replies(&self, max_size: usize, held: &mut Vec<u8>) -> Result<bool, End> {
        let s = &*self.session;
        REPLY.with(|buf| {
            let mut buf = buf.borrow_mut();
            loop {
                let n = match s.upstream.try_recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(_) => return Err(End::Refused),
                };
                let now = self.listener.now_ms();
                s.last.store(now, Ordering::Relaxed);
                if s.awaiting.swap(0, Ordering::Relaxed) != 0 {
                    self.backend.record(&s.endpoint, true);
                }
                if n > max_size {
                    self.proxy.metrics.drop(&self.route_label, "too_large");
                    continue;
                }
                match self.listener.socket.try_send_to(&buf[..n], s.client) {
                    Ok(_) => self.count_reply(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        held.clear();
                        held.extend_from_slice(&buf[..n]);
                        return Ok(true);
                    }
                    Err(_) => self.proxy.metrics.drop(&self.route_label, "send_failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Endpoint, Kind, RoutingTable, UpstreamProtocol, WeightedBackend};
    use crate::proxy::upstream::{Registry, UpstreamSettings};

    const IDLE: Duration = Duration::from_secs(60);

    impl UdpProxy {
        /// Sessions open now.
        fn open_sessions(&self) -> usize {
            self.listening().values().map(|l| l.sessions().len()).sum()
        }
    }

    fn table(port: u16, endpoint: SocketAddr, reply_timeout: Option<Duration>) -> RoutingTable {
        let backend = Backend::new(
            ObjectRef::new(Kind::Backend, "default", "b"),
            UpstreamProtocol::Udp,
            vec![Endpoint::new(&endpoint.to_string())],
        );
        let route = L4Route {
            route: ObjectRef::new(Kind::Route, "default", "r"),
            label: "default/r".into(),
            protocol: L4Protocol::Udp,
            port,
            hostnames: Vec::new(),
            backends: Vec::new(),
            schedule: Arc::from([]),
            idle_timeout: IDLE,
            max_connections: None,
            drain_timeout: Duration::from_secs(30),
            udp: Some(UdpSessions {
                max_sessions: None,
                max_datagram_size: UdpSessions::MAX_DATAGRAM,
                reply_timeout,
            }),
            created: None,
        }
        .with_backends(vec![WeightedBackend {
            backend: Some(0),
            name: "default/b".into(),
            weight: 1,
            canaries: Vec::new(),
            filters: Default::default(),
        }]);
        RoutingTable::new(Vec::new(), vec![backend], Vec::new()).with_l4(vec![route])
    }

    /// A UDP proxy serving one Route on a free loopback port to `endpoint`, and that port.
    fn proxy(
        endpoint: SocketAddr,
        reply_timeout: Option<Duration>,
    ) -> (Arc<UdpProxy>, Arc<Router>, u16) {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let registry = Registry::new(UpstreamSettings::default());
        let router = Arc::new(Router::link(
            Arc::new(table(port, endpoint, reply_timeout)),
            &registry,
        ));
        let listener: L4Listener = format!("127.0.0.1:{port}/udp").parse().unwrap();
        let proxy = Arc::new(UdpProxy::new(
            &[listener],
            router.clone(),
            CancellationToken::new(),
            UdpMetrics::new(&Metrics::default()),
        ));
        proxy.publish(router.clone());
        (proxy, router, port)
    }

    /// A socket that answers every datagram (`echo`) or none.
    async fn backend(echo: bool) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if echo {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
            }
        });
        addr
    }

    async fn send(port: u16) -> UdpSocket {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"ping", ("127.0.0.1", port)).await.unwrap();
        client
    }

    fn failures(router: &Router) -> u32 {
        router.backends[0].endpoint_states()[0].consecutive_failures()
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_session_ends_after_the_idle_timeout() {
        let (proxy, _router, port) = proxy(backend(true).await, None);
        let client = send(port).await;
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(proxy.open_sessions(), 1);
        tokio::time::sleep(IDLE - Duration::from_secs(2)).await;
        assert_eq!(proxy.open_sessions(), 1);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(proxy.open_sessions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_datagram_keeps_the_session_alive() {
        let (proxy, _router, port) = proxy(backend(true).await, None);
        let client = send(port).await;
        let mut buf = [0u8; 16];
        for _ in 0..3 {
            client.recv_from(&mut buf).await.unwrap();
            tokio::time::sleep(IDLE / 2).await;
            client.send_to(b"ping", ("127.0.0.1", port)).await.unwrap();
        }
        client.recv_from(&mut buf).await.unwrap();
        assert_eq!(proxy.open_sessions(), 1);
    }

    #[tokio::test]
    async fn an_endpoint_that_refuses_ends_the_session_with_a_failure() {
        // Nothing listens there: the kernel answers "port unreachable".
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (proxy, router, port) = proxy(closed, None);
        let _client = send(port).await;
        for _ in 0..200 {
            if failures(&router) == 1 && proxy.open_sessions() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "failures {}, sessions {}",
            failures(&router),
            proxy.open_sessions()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_datagram_ends_the_session_after_the_reply_timeout() {
        let (proxy, router, port) = proxy(backend(false).await, Some(Duration::from_secs(2)));
        let _client = send(port).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(proxy.open_sessions(), 1);
        assert_eq!(failures(&router), 0);
        // Noticed within a tick (a quarter of the reply timeout).
        tokio::time::sleep(Duration::from_secs(1) + Duration::from_millis(100)).await;
        assert_eq!(proxy.open_sessions(), 0);
        assert_eq!(failures(&router), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_reply_timeout_an_unanswered_datagram_is_no_failure() {
        let (proxy, router, port) = proxy(backend(false).await, None);
        let _client = send(port).await;
        tokio::time::sleep(IDLE / 2).await;
        assert_eq!(proxy.open_sessions(), 1);
        assert_eq!(failures(&router), 0);
    }
}
