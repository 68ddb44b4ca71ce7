//! Listeners and connections: HTTP/1.1 and h2c on one port, HTTPS (HTTP/1.1 and HTTP/2 by
//! ALPN) on another, idle timeouts, graceful drain.
//!
//! The transport moves requests and responses; what a request means is the [`Handler`]'s
//! business (the request layer implements it). Each connection is served by the native
//! HTTP/1.1 codec or by hyper, and by hyper from the moment the codec hands it over.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::ClientBody;
use super::conn::{Activity, ClientIdentity, ConnCtx, ConnLimits};
use super::error::BoxError;
use super::h1::{self, RawHeaders};
use super::idle::IdleSet;
use super::proxy_protocol::{Origin, ProxyProtocolFrom};
use super::recycle::Slot;
use super::tls::{self, TlsAcceptor};
use crate::telemetry::metrics::HandshakeLabels;

/// What the HTTPS listener needs besides the plain one.
pub struct TlsListener {
    /// Certificates and handshakes.
    pub acceptor: Arc<TlsAcceptor>,
    /// Where TLS passthrough connections go.
    pub l4: Option<Arc<super::L4Proxy>>,
    /// `tidegate_tls_handshakes_total`.
    pub handshakes: prometheus_client::metrics::family::Family<
        HandshakeLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

// HTTP/2 limits per client connection, set here rather than left to hyper's defaults so that
// they are ours to document (README, "Limits") and do not move with a hyper upgrade.
// tests/abuse.rs floods each one through the real binary.

/// Streams open at once; beyond it a new stream is refused (RST_STREAM REFUSED_STREAM).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 200;
/// Streams the client may reset before the server has accepted them (HTTP/2 rapid reset,
/// CVE-2023-44487); one more and the connection is closed (GOAWAY ENHANCE_YOUR_CALM).
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams the server may reset for protocol errors on one connection before closing it.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;
/// Response bytes buffered per stream for a client that does not read.
pub const H2_MAX_SEND_BUF: usize = 400 * 1024;

/// What serves requests. The transport calls it for every request, whichever codec read it.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error = BoxError> + Send + Unpin + 'static;

    /// Serves one request; never fails (errors are answers too).
    fn handle(
        self: Arc<Self>,
        conn: Arc<ConnCtx>,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;

    /// Serves one request the native HTTP/1.1 server read, its body cut by `stall` (the body
    /// read timeout) as [`ClientBody::native`] does. A handler that makes the request from
    /// `head` in its own future ([`h1::NativeHead::into_request`]) spares the copies of a
    /// request made before and moved into it.
    fn handle_native(
        self: Arc<Self>,
        conn: Arc<ConnCtx>,
        head: h1::NativeHead,
        stall: Option<Duration>,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static {
        let req = head.into_request(|b| ClientBody::native(b, stall));
        self.handle(conn, req)
    }

    /// Header lines the response carries beside its map, as an upstream wrote them (the
    /// native server writes them after the map's headers).
    fn raw_headers(body: &Self::Body) -> Option<&RawHeaders> {
        let _ = body;
        None
    }

    /// A header the response carries beside its map (none of its map's or raw lines' names),
    /// written after the map's headers.
    fn extra_header(body: &Self::Body) -> Option<(&HeaderName, &[u8])> {
        let _ = body;
        None
    }

    /// Puts the raw header lines and the extra header, if any, into the response's map: for
    /// a writer that knows only the map (hyper).
    fn headers_into_map(resp: &mut Response<Self::Body>) {
        let _ = resp;
    }
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

/// Serves client connections with one handler, and drains them on shutdown.
pub struct Server<H> {
    handler: Arc<H>,
    hyper: auto::Builder<TokioExecutor>,
    limits: ConnLimits,
    codec: Http1Codec,
    /// Peers that must start with a PROXY protocol header.
    proxy_protocol: ProxyProtocolFrom,
    /// Cancelled when the gateway stops accepting: connections finish what is in flight.
    draining: CancellationToken,
    /// The idle and header timers and the drain signal of native HTTP/1.1 connections.
    idle: IdleSet,
    connections: TaskTracker,
    /// The activity of every native HTTP/1.1 connection, which counts nothing: one for all
    /// rather than 64 bytes more per connection.
    untracked: Arc<Activity>,
}

impl<H: Handler> Server<H> {
    /// A server for `handler`.
    pub fn new(handler: Arc<H>, limits: ConnLimits, codec: Http1Codec) -> Self {
        let mut hyper = auto::Builder::new(TokioExecutor::new());
        hyper
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        hyper
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
            .max_send_buf_size(H2_MAX_SEND_BUF);
        Self {
            handler,
            hyper,
            limits,
            codec,
            proxy_protocol: ProxyProtocolFrom::default(),
            draining: CancellationToken::new(),
            idle: IdleSet::new(),
            connections: TaskTracker::new(),
            untracked: Arc::new(Activity::untracked()),
        }
    }

    /// Requires a PROXY protocol header from the peers of `proxy_protocol` (read before TLS).
    pub fn with_proxy_protocol(mut self, proxy_protocol: ProxyProtocolFrom) -> Self {
        self.proxy_protocol = proxy_protocol;
        self
    }

    /// Accepts connections until [`Server::drain`]; `open` counts the open ones. With `tls`,
    /// every connection starts with a TLS handshake (the HTTPS listener).
    pub async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        open: Gauge,
        tls: Option<Arc<TlsListener>>,
    ) {
        loop {
            let accepted = tokio::select! {
                () = self.draining.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    open.inc();
                    let counted = Open(open.clone());
                    // Spawned as they are: an `async move` around them held the connection's
                    // future twice (its captured copy and the one it awaited), a 2,688-byte task
                    // for a 1,312-byte future. A plain connection the native server serves from
                    // its first byte gets a future sized for that alone.
                    if tls.is_none()
                        && self.codec == Http1Codec::Native
                        && !self.proxy_protocol.expects_header(peer)
                    {
                        let connection = self.clone().serve_native(stream, peer, counted);
                        self.connections.spawn(connection);
                    } else {
                        let connection =
                            self.clone()
                                .serve_connection(stream, peer, tls.clone(), counted);
                        self.connections.spawn(connection);
                    }
                }
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One accepted connection, from its PROXY protocol header (when required) to its end,
    /// but for plain ones the native server serves (see [`Server::serve_native`]). The rare
    /// steps with large state (reading a PROXY header, a TLS handshake) are boxed.
    #[allow(clippy::manual_async_fn)] // see `h1::serve`
    fn serve_connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<TlsListener>>,
        open: Open,
    ) -> impl Future<Output = ()> {
        async move {
            let (stream, origin) = if self.proxy_protocol.expects_header(peer) {
                // The stream is moved in and out rather than borrowed: a local borrowed across an
                // await stays in the future for good, 40 bytes more per connection.
                let proxy_protocol = &self.proxy_protocol;
                let listener = if tls.is_some() { "https" } else { "http" };
                Box::pin(async move {
                    let mut stream = stream;
                    let origin = proxy_protocol.accept(&mut stream, peer, listener).await;
                    (stream, origin)
                })
                .await
            } else {
                (stream, Some(Origin::direct(peer)))
            };
            match (origin, tls) {
                (None, _) => {}
                (Some(origin), Some(tls)) => Box::pin(self.serve_tls(stream, origin, &tls)).await,
                (Some(origin), None) if self.codec == Http1Codec::Native => {
                    // On a task of its own, sized for what it holds from now on (not for this
                    // one's PROXY header read and TLS handshake).
                    let connection = self.clone().serve_native(stream, origin.client, open);
                    self.connections.spawn(connection);
                }
                (Some(origin), None) => {
                    let _ = stream.set_nodelay(true);
                    Box::pin(self.serve_hyper(stream, hyper_ctx(origin.client))).await;
                }
            }
        }
    }

    /// A plain connection served by the native HTTP/1.1 server (and by hyper if it hands the
    /// connection over). This future is what an open plain connection's task holds, idle or
    /// not: a test keeps it small.
    fn serve_native(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        open: Open,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (ctx, wr) = h1::accept(stream, peer, self.untracked.clone());
        h1::serve(ctx, wr, self, open)
    }

    /// The size of [`Server::serve_native`]'s future for handler `H` (what an idle plain-HTTP
    /// connection's task carries besides tokio's own bookkeeping).
    #[cfg(test)]
    pub(crate) fn connection_state_bytes() -> usize {
        fn output_size<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
            size_of::<R>()
        }
        output_size(
            Self::serve_native as fn(Arc<Self>, tokio::net::TcpStream, SocketAddr, Open) -> _,
        )
    }

    /// A TLS handshake (within the header read timeout), then hyper for HTTP/2 (ALPN `h2`)
    /// and HTTP/1.1 alike.
    async fn serve_tls(&self, stream: tokio::net::TcpStream, origin: Origin, tls: &TlsListener) {
        let peer = origin.client;
        let _ = stream.set_nodelay(true);
        let handshake =
            tokio::time::timeout(self.limits.header_read_timeout, tls.acceptor.accept(stream))
                .await;
        let (labels, stream) = match handshake {
            Ok(Ok(tls::Handshake::Terminated(s, identity))) => (
                HandshakeLabels {
                    result: "success",
                    version: tls::version_label(&s),
                },
                Some((s, identity)),
            ),
            Ok(Ok(tls::Handshake::Passthrough {
                stream,
                hello,
                name,
            })) => {
                let labels = HandshakeLabels {
                    result: "passthrough",
                    version: "",
                };
                tls.handshakes.get_or_create(&labels).inc();
                if let Some(l4) = &tls.l4 {
                    l4.passthrough(stream, origin, hello, &name).await;
                }
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                let labels = HandshakeLabels {
                    result: e.result(),
                    version: "",
                };
                (labels, None)
            }
            Err(_) => {
                let labels = HandshakeLabels {
                    result: "aborted",
                    version: "",
                };
                (labels, None)
            }
        };
        tls.handshakes.get_or_create(&labels).inc();
        if let Some((stream, identity)) = stream {
            let ctx = conn_ctx(peer, "https", identity, Arc::new(Activity::new()));
            Box::pin(self.serve_hyper(stream, ctx)).await;
        }
    }

    /// Serves a connection with hyper (HTTP/2, and HTTP/1.1 when the native codec hands over).
    async fn serve_hyper<I>(&self, stream: I, ctx: Arc<ConnCtx>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let peer = ctx.peer;
        let activity = ctx.activity.clone();
        let handler = self.handler.clone();
        let stall = self.limits.body_read_timeout;
        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
            // In a block of its own: the request's future is ~10 KiB, and unboxed hyper and
            // tokio moved it with each HTTP/2 stream (into the stream's future, its task's
            // cell, out of it when done): ~80 KB copied per h2c request (callgrind,
            // `LOAD=h2c bench/callgrind.sh`). A block the thread keeps, not a `Box`: a block
            // that size took glibc's slow path on every request (+270 instructions per HTTP/1.1
            // request that hyper serves, which it did not copy).
            let slot = Slot::new();
            let resp = slot.write(
                handler
                    .clone()
                    .handle(ctx.clone(), req.map(|b| ClientBody::hyper(b, stall))),
            );
            async move {
                let mut resp = resp.await;
                H::headers_into_map(&mut resp);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = self
            .hyper
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(conn);

        let idle = self.limits.idle_timeout;
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                () = self.draining.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = &mut timer, if !closing => {
                    match activity.idle_deadline(idle) {
                        Some(deadline) if deadline <= Instant::now() => {
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        Some(deadline) => timer.as_mut().reset(deadline),
                        None => timer.as_mut().reset(Instant::now() + idle),
                    }
                }
            }
        }
    }

    /// Stops accepting and asks open connections to finish what is in flight.
    pub fn drain(&self) {
        self.draining.cancel();
        self.idle.drain();
        self.connections.close();
    }

    /// Waits for every connection to close (after [`Server::drain`]).
    pub async fn wait(&self) {
        self.connections.wait().await;
    }
}

impl<H: Handler> h1::Listener for Server<H> {
    type Body = H::Body;

    fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    fn idle(&self) -> &IdleSet {
        &self.idle
    }

    fn call(
        &self,
        ctx: &Arc<ConnCtx>,
        head: h1::NativeHead,
    ) -> impl Future<Output = Response<H::Body>> + Send {
        let stall = self.limits.body_read_timeout;
        self.handler.clone().handle_native(ctx.clone(), head, stall)
    }

    fn raw_headers(body: &H::Body) -> Option<&RawHeaders> {
        H::raw_headers(body)
    }

    fn extra_header(body: &H::Body) -> Option<(&HeaderName, &[u8])> {
        H::extra_header(body)
    }

    fn hand_over(
        &self,
        io: h1::Rewind<tokio::net::TcpStream>,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send {
        self.serve_hyper(io, hyper_ctx(peer))
    }
}

/// An open connection, counted in the listener's open connections gauge until it drops (with
/// the connection's task, however that ends).
struct Open(Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn conn_ctx(
    peer: SocketAddr,
    scheme: &'static str,
    client_cert: Option<Arc<ClientIdentity>>,
    activity: Arc<Activity>,
) -> Arc<ConnCtx> {
    Arc::new(ConnCtx {
        peer,
        scheme,
        activity,
        client_cert,
        native: None,
    })
}

/// A plain connection served by hyper, which counts its busy/idle time.
fn hyper_ctx(peer: SocketAddr) -> Arc<ConnCtx> {
    conn_ctx(peer, "http", None, Arc::new(Activity::new()))
}
