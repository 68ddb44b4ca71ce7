//! The native HTTP/1.1 upstream client: pooled keep-alive connections per endpoint, driven by
//! the task serving the request (no connection task, no channel between them).
//!
//! A request is written whole (head and, when it is already in memory, body in one write),
//! then the response head is read; the response body is read by [`UpstreamBody`] as the client
//! side consumes it, and the connection goes back to its endpoint's pool the moment the body is
//! complete. A pooled connection that turns out to be closed by the upstream (the keep-alive
//! race) is replaced by a new one and the request re-sent, when the whole request is still in
//! memory and no response byte was received.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::error::{BoxError, ErrorKind, UpstreamError};
use super::codec::{self, BodyDecoder, Chunk, ExtraHeaders, Framing};
use super::fill;
use crate::proxy::upstream::EndpointState;

/// Read buffer of a connection; a response that fits is read in one call.
const READ_BUF: usize = 16 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Bodies up to this size are copied into the head's write; larger frames are written apart.
const COALESCE: usize = 16 * 1024;

/// One upstream connection, boxed once when it is made: a response body holds it and is moved
/// through the request's layers (each move a copy of the body), and the pool moves it in and
/// out, so it is a pointer rather than the ~110 bytes of its state.
pub type Conn = Box<ConnState>;

/// What an upstream connection holds.
pub struct ConnState {
    io: TcpStream,
    read: BytesMut,
    write: BytesMut,
    idle_since: Instant,
}

/// Idle connections of one endpoint, most recently used last. Kept on the endpoint (its
/// [`Attachment`](crate::proxy::upstream::Attachment)), so it goes when the endpoint goes.
#[derive(Default)]
pub struct IdlePool {
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool").finish_non_exhaustive()
    }
}

impl IdlePool {
    /// The pool of `endpoint`.
    pub fn of(endpoint: &EndpointState) -> &IdlePool {
        // Only this type is ever attached to an endpoint.
        endpoint
            .attached
            .get_or_default::<IdlePool>()
            .expect("endpoints carry only the idle pool")
    }

    /// A live idle connection, if one is kept. Connections idle longer than `max_idle` at `now`
    /// and ones the upstream closed (readable while idle) are dropped on the way.
    fn checkout(&self, max_idle: Duration, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if now.saturating_duration_since(conn.idle_since) < max_idle && conn.is_quiet() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Conn, max: usize) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push(conn);
        }
    }

    /// Drops connections idle longer than `max_idle` or closed by the upstream.
    pub fn reap(&self, max_idle: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| c.idle_since.elapsed() < max_idle && c.is_quiet());
    }

    /// How many idle connections are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none are kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ConnState {
    /// Nothing arrived while idle: no EOF, no error, no stray bytes. `try_read` asks the
    /// readiness the reactor already has and reads (a byte, into a probe) only when it says
    /// readable; a connection that had anything to read is not reused, so the byte is not
    /// missed. (`poll_read_ready` with a no-op waker cost ~110 instructions more: it registered
    /// that waker in the socket's slot to say "not yet".)
    fn is_quiet(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        fill::poll_fill(&mut self.io, &mut self.read, READ_BUF, cx)
    }
}

/// Settings a send needs.
#[derive(Clone, Copy, Debug)]
pub struct ClientSettings {
    /// Limit of one TCP connect.
    pub connect_timeout: Duration,
    /// Idle connections older than this are not reused.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle: usize,
}

fn broken(e: impl Into<BoxError>) -> UpstreamError {
    UpstreamError::new(ErrorKind::Broken, e)
}

/// A connect failure names the address (the log line is often all an operator has).
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr}: {source}")]
struct ConnectError {
    addr: Arc<str>,
    source: io::Error,
}

async fn connect(endpoint: &EndpointState, s: &ClientSettings) -> Result<Conn, UpstreamError> {
    let addr = &endpoint.endpoint.address;
    let fail = |source| {
        let addr = addr.clone();
        UpstreamError::new(ErrorKind::Connect, ConnectError { addr, source })
    };
    let io = match tokio::time::timeout(s.connect_timeout, TcpStream::connect(&**addr)).await {
        Ok(r) => r.map_err(fail)?,
        Err(_) => {
            return Err(fail(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            )));
        }
    };
    let _ = io.set_nodelay(true);
    Ok(Box::new(ConnState {
        io,
        read: BytesMut::with_capacity(READ_BUF),
        write: BytesMut::with_capacity(4096),
        idle_since: Instant::now(),
    }))
}

/// What the native client writes besides a request's method, header map and body.
pub struct Head<'a, E> {
    /// The request target (the path and query; the request's URI is not read).
    pub target: &'a str,
    /// Headers written after the map's.
    pub extra: E,
    /// Whether the map holds a `Host`; when it does not, the endpoint's address is sent as one.
    pub has_host: bool,
}

/// Sends `req` to `endpoint` and writes the response into `out` once its head arrived (its
/// body as a `T`), its head written as `head` says; returns it where it was written. `req` is
/// borrowed, not moved through the caller's steps (each would copy it): its header map is
/// taken (and kept for the next head once written) and its body read. The response is
/// written where the caller keeps it for the same reason (see `forward::attempt::run`).
/// `now`: the caller's clock read as it sends (a pooled connection's idle time is counted to it).
///
/// `resend_if_stale`: whether the request may be sent again on a new connection when a pooled
/// one turns out to be closed by the upstream (the request layer decides: RFC 9112 §9.3.1.1
/// allows it for requests that are safe to repeat, as the upstream may have received it
/// before closing). A failure of `body` is the client's ([`ErrorKind::ClientBody`]).
pub async fn send<'o, B, E, T>(
    endpoint: &Arc<EndpointState>,
    s: &ClientSettings,
    req: &mut Request<B>,
    head: Head<'_, E>,
    resend_if_stale: bool,
    now: Instant,
    out: &'o mut Option<Response<T>>,
) -> Result<&'o mut Response<T>, UpstreamError>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
    E: ExtraHeaders,
    T: From<UpstreamBody>,
{
    let head_request = req.method() == Method::HEAD;
    let framing = match req.body().size_hint().exact() {
        Some(0) if req.body().is_end_stream() => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };

    let mut reused = true;
    let pool = IdlePool::of(endpoint);
    let mut conn = match pool.checkout(s.idle_timeout, now) {
        Some(c) => c,
        None => {
            reused = false;
            connect(endpoint, s).await?
        }
    };
    conn.write.clear();
    codec::put_request_head(
        &mut conn.write,
        req.method(),
        head.target,
        req.headers(),
        &head.extra,
        (!head.has_host).then_some(&*endpoint.endpoint.address),
        framing,
    );
    // The head is in `write` (a resend writes it from there): the map can serve the next head.
    codec::give_back_map(std::mem::take(req.headers_mut()));
    let body = req.body_mut();
    // Whatever of the body is ready now rides along with the head.
    let mut body_done = framing == Framing::None;
    while !body_done && conn.write.len() < COALESCE {
        match futures::FutureExt::now_or_never(poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))) {
            Some(Some(Ok(frame))) => put_frame(&mut conn.write, frame, framing),
            Some(Some(Err(e))) => return Err(UpstreamError::new(ErrorKind::ClientBody, e)),
            Some(None) => {
                finish_body(&mut conn.write, framing);
                body_done = true;
            }
            None => break,
        }
    }

    // The whole request is in `write` when the body is done: it can be re-sent on a new
    // connection if a pooled one turns out dead.
    let mut resent = false;
    let head = loop {
        let attempt = async {
            // Writing to a connection the upstream closed fails (EPIPE/ECONNRESET): stale.
            conn.io
                .write_all(&conn.write)
                .await
                .map_err(|e| Failure::Stale(broken(e)))?;
            if !body_done
                && let Some(early) =
                    stream_body(&mut conn, &mut *body, framing, head_request).await?
            {
                return Ok(early);
            }
            read_head(&mut conn, head_request).await
        };
        match attempt.await {
            Ok(head) => break head,
            Err(Failure::Stale(_)) if reused && body_done && !resent && resend_if_stale => {
                resent = true;
                reused = false;
                let request = std::mem::take(&mut conn.write);
                conn = connect(endpoint, s).await?;
                conn.write = request;
            }
            Err(Failure::Stale(e) | Failure::Other(e)) => return Err(e),
        }
    };

    let mut body = UpstreamBody::new(
        conn,
        head.framing,
        head.reusable,
        endpoint.clone(),
        s.max_idle,
    );
    body.raw = head.raw;
    let resp = out.insert(Response::new(T::from(body)));
    *resp.status_mut() = head.status;
    codec::put_map(resp.headers_mut(), head.headers);
    Ok(resp)
}

/// A send failure, and whether it looks like a pooled connection the upstream had closed.
enum Failure {
    Stale(UpstreamError),
    Other(UpstreamError),
}

fn put_frame(out: &mut BytesMut, frame: Frame<Bytes>, framing: Framing) {
    if let Ok(data) = frame.into_data() {
        match framing {
            Framing::Chunked => codec::put_chunk(out, &data),
            _ => out.extend_from_slice(&data),
        }
    }
}

fn finish_body(out: &mut BytesMut, framing: Framing) {
    if framing == Framing::Chunked {
        out.extend_from_slice(codec::LAST_CHUNK);
    }
}

/// Streams the rest of the body. An upstream may answer early and close (413 to a large
/// upload): when a write fails, a response it already sent is still read and returned.
async fn stream_body<B>(
    conn: &mut Conn,
    body: &mut B,
    framing: Framing,
    head_request: bool,
) -> Result<Option<codec::ResponseHead>, Failure>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    loop {
        conn.write.clear();
        let last = match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                put_frame(&mut conn.write, frame, framing);
                false
            }
            Some(Err(e)) => {
                return Err(Failure::Other(UpstreamError::new(ErrorKind::ClientBody, e)));
            }
            None => {
                finish_body(&mut conn.write, framing);
                true
            }
        };
        if let Err(e) = conn.io.write_all(&conn.write).await {
            return match read_head(conn, head_request).await {
                Ok(mut head) => {
                    head.reusable = false;
                    Ok(Some(head))
                }
                Err(_) => Err(Failure::Other(broken(e))),
            };
        }
        if last {
            return Ok(None);
        }
    }
}

async fn read_head(conn: &mut Conn, head_request: bool) -> Result<codec::ResponseHead, Failure> {
    conn.read.clear();
    loop {
        let n = poll_fn(|cx| conn.poll_fill(cx)).await;
        match n {
            Ok(0) if conn.read.is_empty() => {
                return Err(Failure::Stale(broken("upstream closed the connection")));
            }
            Ok(0) => {
                return Err(Failure::Other(broken(
                    "upstream closed the connection in the response head",
                )));
            }
            Ok(_) => {}
            Err(e) if conn.read.is_empty() => return Err(Failure::Stale(broken(e))),
            Err(e) => return Err(Failure::Other(broken(e))),
        }
        match codec::parse_response(&mut conn.read, head_request) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) if conn.read.len() > MAX_HEAD => {
                return Err(Failure::Other(broken("upstream response head too large")));
            }
            Ok(None) => {}
            Err(why) => return Err(Failure::Other(broken(why))),
        }
    }
}

/// A response body read from an upstream connection, which returns to its pool when the body
/// is complete (and is closed if the body is dropped before that).
pub struct UpstreamBody {
    conn: Option<Conn>,
    /// The response's header lines, when kept raw (the response's map is empty then).
    raw: Option<codec::RawHeaders>,
    decode: BodyDecoder,
    reusable: bool,
    endpoint: Arc<EndpointState>,
    max_idle: usize,
}

impl UpstreamBody {
    /// The response's header lines, when they were kept raw.
    pub fn raw_headers(&self) -> Option<&codec::RawHeaders> {
        self.raw.as_ref()
    }

    /// Takes the raw header lines (to put them in the response's map).
    pub fn take_raw_headers(&mut self) -> Option<codec::RawHeaders> {
        self.raw.take()
    }

    fn new(
        conn: Conn,
        framing: Framing,
        reusable: bool,
        endpoint: Arc<EndpointState>,
        max_idle: usize,
    ) -> Self {
        let mut body = Self {
            conn: Some(conn),
            raw: None,
            decode: BodyDecoder::new(framing),
            reusable,
            endpoint,
            max_idle,
        };
        if body.decode.is_done() {
            body.release();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool if it can carry more.
    fn release(&mut self) {
        self.decode = BodyDecoder::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.read.is_empty()
        {
            IdlePool::of(&self.endpoint).checkin(conn, self.max_idle);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decode.decode(&mut conn.read) {
                Ok(Some(Chunk::Data(data))) => {
                    if this.decode.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(Chunk::End)) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.decode.is_close_delimited() => {
                    this.reusable = false;
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(
                        Err("upstream closed the connection mid-body".into()),
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.decode
            .remaining()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let conn = Box::new(ConnState {
            io: client.unwrap(),
            read: BytesMut::new(),
            write: BytesMut::new(),
            idle_since: Instant::now(),
        });
        (conn, accepted.unwrap().0)
    }

    /// A pooled connection is handed out again only while the upstream keeps it open and quiet.
    #[tokio::test]
    async fn the_pool_drops_connections_the_upstream_closed_or_that_expired() {
        let pool = IdlePool::default();
        let (conn, peer) = pair().await;
        pool.checkin(conn, 8);
        let conn = pool
            .checkout(Duration::from_secs(60), Instant::now())
            .expect("a live connection");
        pool.checkin(conn, 8);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.checkout(Duration::from_secs(60), Instant::now())
                .is_none(),
            "closed by the upstream"
        );

        // Bytes nobody asked for (a late or broken response) make it unusable too.
        let (conn, mut peer) = pair().await;
        pool.checkin(conn, 8);
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            pool.checkout(Duration::from_secs(60), Instant::now())
                .is_none(),
            "stray bytes"
        );

        let (conn, _peer) = pair().await;
        pool.checkin(conn, 8);
        tokio::time::sleep(Duration::from_millis(20)).await;
        pool.reap(Duration::from_millis(10));
        assert!(pool.is_empty(), "expired");

        let (a, _pa) = pair().await;
        let (b, _pb) = pair().await;
        pool.checkin(a, 1);
        pool.checkin(b, 1);
        assert_eq!(pool.len(), 1, "at most max idle");
    }
}
