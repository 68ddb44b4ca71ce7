//! The native HTTP/1.1 connection: reads request heads, hands each request to the service the
//! listener gives it, and writes the response, all in the connection's own task.
//!
//! The service is the same handler hyper's connections use, so routing, filters, retries,
//! limits, metrics and the access log behave identically; only the framing differs. A
//! connection whose next request the codec leaves to hyper (see [`codec`]) is handed back
//! whole, with the bytes already read, and hyper serves it from there on.

use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use super::super::conn::{Activity, ConnCtx, ConnLimits};
use super::super::error::BoxError;
use super::super::idle::{IdleSet, Slot as IdleSlot};
use super::codec::{
    self, BodyDecoder, Chunk, Framing, Parsed, RawHeaders, Reject, ResponseFraming,
};
use super::fill;
use super::rewind::Rewind;
use crate::proxy::transport::recycle::{Recycled, Slot};

/// Initial read buffer of a client connection.
const READ_BUF: usize = 8 * 1024;
/// Response bytes gathered before a write; larger body frames are written on their own.
const COALESCE: usize = 64 * 1024;
/// The HTTP/2 connection preface: such a connection goes to hyper.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The read side of a client connection, kept in its [`ConnCtx`] (one allocation for what the
/// connection shares with its requests) and shared with the request body while one is read.
pub struct ClientReader(Mutex<Reader>);

struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    /// The current request's body.
    body: BodyDecoder,
}

impl Reader {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // Released while idle: take memory only once there is something to read.
            ready!(self.io.as_ref().poll_read_ready(cx))?;
            self.buf = fill::take_buffer(READ_BUF);
        }
        fill::poll_fill(&mut self.io, &mut self.buf, READ_BUF, cx)
    }
}

/// The context of a plain connection the native server is to serve, holding its read side, and
/// its write side.
pub fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Arc<Activity>,
) -> (Arc<ConnCtx>, OwnedWriteHalf) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let reader = Reader {
        io: rd,
        buf: BytesMut::new(),
        body: BodyDecoder::Done,
    };
    let ctx = ConnCtx {
        peer,
        scheme: "http",
        activity,
        client_cert: None,
        native: Some(ClientReader(Mutex::new(reader))),
    };
    (Arc::new(ctx), wr)
}

/// The reader of a connection made by [`accept`].
fn lock(ctx: &ConnCtx) -> MutexGuard<'_, Reader> {
    match &ctx.native {
        Some(r) => r.0.lock().unwrap_or_else(|e| e.into_inner()),
        None => unreachable!("the native server serves only connections it accepted"),
    }
}

/// A request body read by the native codec from the client connection.
pub struct NativeBody {
    conn: Arc<ConnCtx>,
    /// Bytes left when the length is known (kept here so `size_hint` needs no lock).
    hint: Option<u64>,
    done: bool,
}

impl Body for NativeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut r = lock(&this.conn);
        loop {
            let r = &mut *r;
            match r.body.decode(&mut r.buf) {
                Ok(Some(Chunk::Data(data))) => {
                    this.hint = r.body.remaining();
                    this.done = r.body.is_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Some(Chunk::End)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            match ready!(r.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(
                        "the client closed the connection mid-body".into()
                    )));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match (self.done, self.hint) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(n)) => SizeHint::with_exact(n),
            (false, None) => SizeHint::default(),
        }
    }
}

/// The `Date` header value, formatted once per second per thread.
fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    use std::time::SystemTime;
    thread_local! {
        static CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let (at, value) = c.get();
        if at == secs {
            return value;
        }
        // Written in place: `fmt_http_date` would allocate a `String` each second.
        let mut value = [0u8; 29];
        let _ = write!(&mut value[..], "{}", httpdate::HttpDate::from(now));
        c.set((secs, value));
        value
    })
}

/// Waiting for a connection's next request head: its idle or header deadline on the
/// listener's timer, and the drain.
struct HeadWait<'a> {
    slot: IdleSlot<'a>,
    /// When the wait ends: the idle timeout from the last response, or once a head has
    /// started, the header read timeout from its first bytes.
    deadline: Instant,
    /// Bytes of the next head have arrived.
    head_started: bool,
}

impl<'a> HeadWait<'a> {
    fn new(set: &'a IdleSet, idle_timeout: std::time::Duration) -> Self {
        Self {
            slot: IdleSlot::new(set),
            deadline: Instant::now() + idle_timeout,
            head_started: false,
        }
    }

    /// A response was written: the next head is waited for from now.
    fn idle(&mut self, idle_timeout: std::time::Duration) {
        self.deadline = Instant::now() + idle_timeout;
        self.head_started = false;
    }

    /// The first bytes of a head arrived: it must be whole within `timeout`.
    fn started(&mut self, timeout: std::time::Duration) {
        if !self.head_started {
            self.head_started = true;
            self.deadline = Instant::now() + timeout;
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, ctx: &ConnCtx) -> Poll<Wait> {
        if let Poll::Ready(r) = lock(ctx).poll_fill(cx) {
            return Poll::Ready(Wait::Read(r));
        }
        // The slot first: it registers the task the drain wakes.
        let expired = self.slot.poll_expired(cx, self.deadline).is_ready();
        // A connection between requests closes on a drain; one mid-head gets its answer.
        if !self.head_started && self.slot.set().is_draining() {
            return Poll::Ready(Wait::Drained);
        }
        if expired {
            return Poll::Ready(Wait::Expired);
        }
        Poll::Pending
    }
}

/// What the bytes read so far on a connection say (`first`: no request was served on it yet).
fn next_step(ctx: &ConnCtx, first: bool, max_header_bytes: usize) -> Step {
    let mut r = lock(ctx);
    if r.buf.is_empty() {
        return Step::Read;
    }
    if first && H2_PREFACE.starts_with(&r.buf[..r.buf.len().min(H2_PREFACE.len())]) {
        return if r.buf.len() >= H2_PREFACE.len() {
            Step::Handoff
        } else {
            Step::Started
        };
    }
    let buffered = r.buf.len();
    match codec::parse_request(&mut r.buf) {
        Ok(Parsed::Done(_)) if buffered - r.buf.len() > max_header_bytes => {
            Step::Reject(Reject::TooLarge)
        }
        Ok(Parsed::Done(head)) => Step::Head(head),
        Ok(Parsed::Partial) if r.buf.len() > max_header_bytes => Step::Reject(Reject::TooLarge),
        Ok(Parsed::Partial) => Step::Started,
        Ok(Parsed::Handoff) => Step::Handoff,
        Err(why) => Step::Reject(why),
    }
}

/// How a connection ends while it reads a head (awaited once the step that said so is gone,
/// so that the connection's future does not hold both).
enum End<R> {
    /// To hyper: HTTP/2, an upgrade, what the native server does not serve.
    HandOver,
    /// With an error response.
    Reject(R),
}

/// What the head reader does next.
enum Step {
    Read,
    Started,
    Head(Recycled<codec::RequestHead>),
    Handoff,
    Reject(Reject),
}

/// Why a connection stopped waiting for bytes.
enum Wait {
    Read(io::Result<usize>),
    Drained,
    Expired,
}

/// What the native server needs from the listener whose connections it serves.
pub trait Listener: Send + Sync + 'static {
    /// The response body.
    type Body: Body<Data = Bytes, Error = BoxError> + Unpin + Send;
    /// Limits of every connection.
    fn limits(&self) -> &ConnLimits;
    /// The timer and drain signal of every connection.
    fn idle(&self) -> &IdleSet;
    /// Serves one request.
    fn call(
        &self,
        ctx: &Arc<ConnCtx>,
        head: NativeHead,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
    /// Header lines a response carries beside its map, written after the map's headers.
    fn raw_headers(body: &Self::Body) -> Option<&RawHeaders> {
        let _ = body;
        None
    }
    /// A header a response carries beside its map (none of its map's or lines' names),
    /// written after the map's headers.
    fn extra_header(body: &Self::Body) -> Option<(&HeaderName, &[u8])> {
        let _ = body;
        None
    }
    /// Serves the rest of a connection the native server does not (HTTP/2, HTTP/1.0,
    /// upgrades, `Expect`): the bytes already read are put back in front.
    fn hand_over(&self, io: Rewind<TcpStream>, peer: SocketAddr)
    -> impl Future<Output = ()> + Send;
}

/// Serves one client connection (made by [`accept`]) for `listener` until it closes, fails,
/// idles out or the gateway drains, or hands it over; `keep` is dropped when it ends.
///
/// This future is what an open connection's task holds, idle or not, so it is the task's
/// future as it is (no wrapper keeping a second copy of what it holds), and it is not an async
/// fn, which would keep a second copy of its arguments.
#[allow(clippy::manual_async_fn)]
pub fn serve<L: Listener, K: Send + 'static>(
    ctx: Arc<ConnCtx>,
    mut wr: OwnedWriteHalf,
    listener: Arc<L>,
    keep: K,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        // Dropped with the future. Only mentioned here: moved into a local, it would be held
        // twice (an async block keeps what it captured and its locals apart).
        let _ = &keep;
        // The idle and header timeouts and the drain come from the listener's one timer (see
        // [`IdleSet`]): keep-alive requests do not touch it.
        let mut wait = HeadWait::new(listener.idle(), listener.limits().idle_timeout);
        let mut first = true;

        loop {
            // Read one request head.
            let head = loop {
                // Matched in the `let`, so that the step is not kept across the awaits below.
                let end = match next_step(&ctx, first, listener.limits().max_header_bytes) {
                    Step::Head(head) => break head,
                    Step::Handoff => Some(End::HandOver),
                    Step::Reject(why) => {
                        tracing::debug!(peer = %ctx.peer, error = %why, "request refused");
                        // Boxed: its strings would otherwise be part of every connection's state.
                        Some(End::Reject(Box::pin(reject(&mut wr, why))))
                    }
                    Step::Started => {
                        wait.started(listener.limits().header_read_timeout);
                        None
                    }
                    Step::Read => None,
                };
                if matches!(end, Some(End::HandOver)) {
                    drop((end, wait));
                    // Boxed: hyper's connection state is large, and most connections never get
                    // here. The box is made before the await, so that the connection's future
                    // does not keep the stream it hands over beside it.
                    let hand_over =
                        handoff(ctx, wr).map(|(io, peer)| Box::pin(listener.hand_over(io, peer)));
                    if let Some(hand_over) = hand_over {
                        hand_over.await;
                    }
                    return;
                }
                if let Some(End::Reject(rejected)) = end {
                    rejected.await;
                    return;
                }
                // Only `wait` and `ctx` are borrowed while a connection waits: what it holds
                // then is what every idle connection costs.
                match poll_fn(|cx| wait.poll(cx, &ctx)).await {
                    Wait::Read(Ok(0) | Err(_)) | Wait::Drained => return,
                    Wait::Read(Ok(_)) => {}
                    Wait::Expired => {
                        if wait.head_started {
                            tracing::debug!(peer = %ctx.peer, "request head not received in time");
                        }
                        return;
                    }
                }
            };
            first = false;

            // Serve it: the handler's future and the response's writing, in one box per request,
            // so that an idle connection's future holds only what waiting for the next head needs.
            // Built in a plain function: the request is made there, and what is made (and borrowed)
            // in an async fn may be kept in its future across the awaits that follow.
            let keep_alive = exchange(head, &ctx, &mut wr, &*listener).await;
            if !keep_alive {
                return;
            }
            wait.idle(listener.limits().idle_timeout);
            // An idle keep-alive connection holds no buffers (10k idle connections would otherwise
            // pin ~16 KiB each); the thread keeps some for the next requests (the write buffer was
            // given back by the exchange).
            let mut r = lock(&ctx);
            if r.buf.is_empty() {
                fill::give_back(std::mem::take(&mut r.buf), READ_BUF);
            }
        }
    }
}

/// A request head the native server read, made into its request by the listener where it
/// keeps it ([`NativeHead::into_request`], usually in the handler's future): a request built
/// here (~300 bytes) was copied into the handler's future, again into its state when it
/// first ran, and once per step between.
pub struct NativeHead {
    head: Recycled<codec::RequestHead>,
    conn: Arc<ConnCtx>,
    /// What the server's body decoder says of the body (read once, when the exchange begins).
    hint: Option<u64>,
    done: bool,
}

impl NativeHead {
    /// Whether the request has an `X-Request-ID` header (a request without one is given one;
    /// knowing it spares a lookup).
    pub fn has_request_id(&self) -> bool {
        self.head.request_id
    }

    /// The request, its body read by the native codec from the connection (as `wrap` makes
    /// it).
    pub fn into_request<B>(self, wrap: impl FnOnce(NativeBody) -> B) -> Request<B> {
        // Taken apart whole (not field by field from a local), so that no part of the head is
        // copied more than once. (Moving the parts one by one into a request made where the
        // handler keeps it, instead of returning one, cost 44 instructions more per request.)
        let codec::RequestHead {
            method,
            uri,
            headers,
            framing: _,
            close: _,
            request_id: _,
        } = self.head.into_inner();
        let body = NativeBody {
            conn: self.conn,
            hint: self.hint,
            done: self.done,
        };
        let mut req = Request::new(wrap(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        codec::put_map(req.headers_mut(), headers);
        req
    }
}

/// The boxed future that serves the request of `head` and writes its response (see
/// [`Exchange::run`]).
fn exchange<'a, L: Listener>(
    head: Recycled<codec::RequestHead>,
    ctx: &'a Arc<ConnCtx>,
    wr: &'a mut OwnedWriteHalf,
    listener: &'a L,
) -> Recycled<impl Future<Output = bool>> {
    let decoder = BodyDecoder::new(head.framing);
    let (hint, done) = (decoder.remaining(), decoder.is_done());
    let has_body = !done;
    if has_body {
        lock(ctx).body = decoder;
    }
    let exchange = Exchange {
        ctx,
        wr,
        has_body,
        client_close: head.close,
    };
    let method = head.method.clone();
    let head = NativeHead {
        head,
        conn: ctx.clone(),
        hint,
        done,
    };
    // The box is made first and the future written into it, so that it can be built in place
    // rather than on the stack and copied (it is several KiB).
    let slot = Slot::new();
    slot.write(exchange.run(listener, head, method))
}

/// What serving one request on a connection borrows from it.
struct Exchange<'a> {
    ctx: &'a Arc<ConnCtx>,
    wr: &'a mut OwnedWriteHalf,
    /// The request has a body (the connection ends if the handler left some of it unread).
    has_body: bool,
    /// The client asked to close after this exchange.
    client_close: bool,
}

impl Exchange<'_> {
    /// Serves the request of `head` and writes the response; whether the connection can carry
    /// another.
    async fn run<L: Listener>(self, listener: &L, head: NativeHead, method: Method) -> bool {
        let resp = listener.call(self.ctx, head).await;
        // A body the handler left unread ends the connection (there is no telling where the
        // next request starts without reading it).
        let body_left = self.has_body && !lock(self.ctx).body.is_done();
        let close = self.client_close || body_left || listener.idle().is_draining();
        // Only the body is kept across the writes (by reference, so it is not stored twice).
        let (parts, body) = resp.into_parts();
        // The write buffer is the request's, not the connection's: an idle connection holds
        // none (the thread keeps some for the next requests).
        let mut out = BytesMut::new();
        let beside = (L::extra_header(&body), L::raw_headers(&body));
        let framing = put_response_head(&mut out, &method, &parts, &body, beside, close);
        codec::give_back_head(parts);
        let mut body = Some(body);
        let written = write_body(self.wr, &mut out, &mut body, framing).await;
        drop(body);
        fill::give_back(out, READ_BUF);
        if written.is_err() || close {
            let _ = self.wr.shutdown().await;
            return false;
        }
        true
    }
}

/// Puts the response head into `out` and says how its body is framed.
fn put_response_head<B: Body>(
    out: &mut BytesMut,
    method: &Method,
    parts: &http::response::Parts,
    body: &B,
    (extra, raw): (Option<(&HeaderName, &[u8])>, Option<&RawHeaders>),
    close: bool,
) -> ResponseFraming {
    let status = parts.status;
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        ResponseFraming::Bodiless(body.size_hint().exact().filter(|n| *n > 0))
    } else {
        match body.size_hint().exact() {
            Some(n) => ResponseFraming::Body(Framing::Length(n)),
            None => ResponseFraming::Body(Framing::Chunked),
        }
    };
    *out = fill::take_buffer(READ_BUF);
    out.reserve(512);
    codec::put_response_head(
        out,
        status,
        &parts.headers,
        extra,
        raw,
        framing,
        close,
        http_date,
    );
    framing
}

/// Sends the head in `out` and streams the body after it, dropping the body once it has
/// ended (before the last write, so that what it finishes, such as the upstream connection's
/// return to its pool and the request's record, is done when the client has the response);
/// `Err` when the connection must be dropped (the client went away, or the body failed after
/// the head was sent).
async fn write_body<B>(
    wr: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    slot: &mut Option<B>,
    framing: ResponseFraming,
) -> io::Result<()>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let Some(body) = slot.as_mut() else {
        return Ok(());
    };
    if let ResponseFraming::Bodiless(_) = framing {
        *slot = None;
        return wr.write_all(out).await;
    }
    let chunked = framing == ResponseFraming::Body(Framing::Chunked);
    enum Next {
        Frame(Option<Result<Frame<Bytes>, BoxError>>),
        Flush,
    }
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
            Poll::Pending => Poll::Pending,
            Poll::Ready(f) => Poll::Ready(Next::Frame(f)),
        })
        .await;
        match next {
            Next::Flush => {
                wr.write_all(out).await?;
                out.clear();
            }
            Next::Frame(None) => {
                if chunked {
                    out.extend_from_slice(codec::LAST_CHUNK);
                }
                break;
            }
            Next::Frame(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // HTTP/1.1 trailers are not forwarded.
                };
                if out.len() + data.len() <= COALESCE {
                    if chunked {
                        codec::put_chunk(out, &data);
                    } else {
                        out.extend_from_slice(&data);
                    }
                } else {
                    if chunked {
                        codec::put_chunk_size(out, data.len());
                    }
                    wr.write_all(out).await?;
                    out.clear();
                    wr.write_all(&data).await?;
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            Next::Frame(Some(Err(e))) => {
                // The head is out: all that is left is to cut the connection, so the client
                // sees a truncated message rather than a complete wrong one.
                tracing::debug!(error = %e, "response body failed");
                let _ = wr.write_all(out).await;
                return Err(io::Error::other("response body failed"));
            }
        }
    }
    *slot = None;
    wr.write_all(out).await
}

/// Answers a refused request head and closes.
async fn reject(wr: &mut OwnedWriteHalf, why: Reject) {
    let status = why.status();
    let text = format!("{why}\n");
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        text.len()
    );
    let _ = wr.write_all(format!("{head}{text}").as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// The connection, with what was read of it put back, and its peer, for hyper.
fn handoff(ctx: Arc<ConnCtx>, wr: OwnedWriteHalf) -> Option<(Rewind<TcpStream>, SocketAddr)> {
    // A request still holding the connection leaves nothing sane to continue with.
    let ctx = Arc::try_unwrap(ctx).ok()?;
    let reader = ctx
        .native?
        .0
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let stream = reader.io.reunite(wr).ok()?;
    Some((Rewind::new(reader.buf.freeze(), stream), ctx.peer))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::stream;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::proxy::transport::ProxyBody;

    fn limits() -> ConnLimits {
        ConnLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 1024,
            body_read_timeout: None,
        }
    }

    /// A client socket and the served side of the same connection.
    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, peer) = l.accept().await.unwrap();
        (client, server, peer)
    }

    /// Answers `METHOD PATH len=N` where N is what it read of the body (or the read error).
    async fn echo(req: Request<NativeBody>) -> Response<ProxyBody> {
        let line = format!("{} {}", req.method(), req.uri());
        let read = match req.into_body().collect().await {
            Ok(b) => format!("len={}", b.to_bytes().len()),
            Err(e) => format!("error={e}"),
        };
        Response::new(ProxyBody::full(format!("{line} {read}")))
    }

    /// A listener serving requests with `service`, keeping what is handed over.
    struct TestListener<S> {
        limits: ConnLimits,
        idle: Arc<IdleSet>,
        service: S,
        handed_over: Mutex<Option<Rewind<TcpStream>>>,
    }

    impl<S, F, B> Listener for TestListener<S>
    where
        S: Fn(Request<NativeBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send,
        B: Body<Data = Bytes, Error = BoxError> + Unpin + Send,
    {
        type Body = B;
        fn limits(&self) -> &ConnLimits {
            &self.limits
        }
        fn idle(&self) -> &IdleSet {
            &self.idle
        }
        fn call(
            &self,
            _: &Arc<ConnCtx>,
            head: NativeHead,
        ) -> impl Future<Output = Response<B>> + Send {
            (self.service)(head.into_request(|b| b))
        }
        async fn hand_over(&self, io: Rewind<TcpStream>, _: SocketAddr) {
            *self.handed_over.lock().unwrap() = Some(io);
        }
    }

    /// Serves one connection with `service` in a task; returns the client side and the task
    /// (which ends with what was handed over).
    async fn served<S, F, B>(
        limits: ConnLimits,
        idle: Arc<IdleSet>,
        service: S,
    ) -> (
        TcpStream,
        tokio::task::JoinHandle<Option<Rewind<TcpStream>>>,
    )
    where
        S: Fn(Request<NativeBody>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send,
        B: Body<Data = Bytes, Error = BoxError> + Unpin + Send,
    {
        let (client, server, peer) = pair().await;
        let listener = Arc::new(TestListener {
            limits,
            idle,
            service,
            handed_over: Mutex::new(None),
        });
        let task = tokio::spawn(async move {
            let (ctx, wr) = accept(server, peer, Arc::new(Activity::untracked()));
            serve(ctx, wr, listener.clone(), ()).await;
            listener.handed_over.lock().unwrap().take()
        });
        (client, task)
    }

    async fn send_and_read_to_close(client: &mut TcpStream, bytes: &[u8]) -> String {
        client.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn keep_alive_serves_pipelined_requests_in_order_then_closes_on_request() {
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        let out = send_and_read_to_close(
            &mut c,
            b"GET /a HTTP/1.1\r\nhost: h\r\n\r\n\
              POST /b HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nhello\
              POST /c HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let answers: Vec<&str> = out.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
        assert_eq!(answers.len(), 3, "{out}");
        assert!(answers[0].ends_with("GET /a len=0"), "{out}");
        assert!(answers[1].ends_with("POST /b len=5"), "{out}");
        assert!(answers[2].ends_with("POST /c len=5"), "{out}");
        assert!(answers[0].contains("content-length: 12\r\n"), "{out}");
        assert!(answers[0].contains("date: "), "{out}");
        assert!(answers[2].contains("connection: close\r\n"), "{out}");
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_sent_chunked_and_head_gets_no_body() {
        let service = |req: Request<NativeBody>| async move {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"hello "))),
                Ok(Frame::data(Bytes::from_static(b"world"))),
            ];
            let body = StreamBody::new(stream::iter(frames));
            let mut r = Response::new(body);
            if req.method() == Method::HEAD {
                r.headers_mut()
                    .insert("x-head", http::HeaderValue::from_static("1"));
            }
            r
        };
        let (mut c, _task) = served(limits(), Arc::new(IdleSet::new()), service).await;
        let out = send_and_read_to_close(
            &mut c,
            b"GET / HTTP/1.1\r\nhost: h\r\n\r\nHEAD / HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
        )
        .await;
        let (get, head) = out
            .split_once("HTTP/1.1 200 OK\r\n")
            .unwrap()
            .1
            .split_once("HTTP/1.1 200 OK\r\n")
            .unwrap();
        assert!(get.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(
            get.ends_with("\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
            "one chunk per frame: {get:?}"
        );
        assert!(head.contains("x-head: 1\r\n"), "{out}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD answered with a body: {head:?}"
        );
    }

    #[tokio::test]
    async fn a_body_the_service_did_not_read_ends_the_connection() {
        let service = |_req: Request<NativeBody>| async { Response::new(ProxyBody::full("no")) };
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), service).await;
        // The second request would be read from inside the unread body: it must not be served.
        let out = send_and_read_to_close(
            &mut c,
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\n\r\n",
        )
        .await;
        assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refused_heads_get_their_status_and_the_connection_closes() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"GET / HTTP/1.1\r\nhost: h\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "HTTP/1.1 400 ",
            ),
            (
                b"POST / HTTP/1.1\r\nhost: h\r\ntransfer-encoding: gzip\r\n\r\n",
                "HTTP/1.1 501 ",
            ),
            (&[b'a'; 2048], "HTTP/1.1 431 "),
        ];
        for (request, status) in cases {
            let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
            let out = send_and_read_to_close(&mut c, request).await;
            assert!(out.starts_with(status), "{status}: {out}");
            assert!(out.contains("connection: close\r\n"), "{out}");
            assert!(task.await.unwrap().is_none());
        }
        // Too large once complete, though it arrived in one piece.
        let big = format!(
            "GET / HTTP/1.1\r\nhost: h\r\nx: {}\r\n\r\n",
            "a".repeat(1100)
        );
        let (mut c, _task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        let out = send_and_read_to_close(&mut c, big.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_mid_body_fails_the_body_not_the_server() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let service = move |req: Request<NativeBody>| {
            let tx = tx.lock().unwrap().take();
            async move {
                let r = req
                    .into_body()
                    .collect()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if let Some(tx) = tx {
                    let _ = tx.send(r);
                }
                Response::new(ProxyBody::empty())
            }
        };
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), service).await;
        c.write_all(b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 10\r\n\r\nabc")
            .await
            .unwrap();
        drop(c);
        let read = rx.await.unwrap();
        assert_eq!(
            read,
            Err("the client closed the connection mid-body".to_owned())
        );
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_response_body_that_fails_cuts_the_connection_after_what_was_sent() {
        let service = |_req: Request<NativeBody>| async {
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(Bytes::from_static(b"partial"))),
                Err("upstream broke".into()),
            ];
            Response::new(StreamBody::new(stream::iter(frames)))
        };
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), service).await;
        let out = send_and_read_to_close(&mut c, b"GET / HTTP/1.1\r\nhost: h\r\n\r\n").await;
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(
            out.ends_with("7\r\npartial\r\n"),
            "no last chunk may follow: {out:?}"
        );
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_http2_preface_hands_the_connection_over_with_its_bytes() {
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        // In two writes: a partial preface is waited for, not parsed as HTTP/1.1.
        c.write_all(&H2_PREFACE[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(&H2_PREFACE[10..]).await.unwrap();
        c.write_all(b"more").await.unwrap();
        let mut rewound = task.await.unwrap().expect("handed over");
        let mut got = vec![0u8; H2_PREFACE.len() + 4];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..H2_PREFACE.len()], H2_PREFACE);
        assert_eq!(&got[H2_PREFACE.len()..], b"more");
    }

    #[tokio::test]
    async fn http_1_0_is_handed_over_untouched() {
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut rewound = task.await.unwrap().expect("handed over");
        let mut got = vec![0u8; 18];
        rewound.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.0\r\n\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_does_not_complete_in_time_is_dropped() {
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        let started = Instant::now();
        assert!(task.await.unwrap().is_none());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (mut c, task) = served(limits(), Arc::new(IdleSet::new()), echo).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let started = Instant::now();
        assert!(task.await.unwrap().is_none());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn draining_closes_an_idle_connection_but_finishes_a_request_in_flight() {
        // Idle: closed at once.
        let draining = Arc::new(IdleSet::new());
        let (_c, task) = served(limits(), draining.clone(), echo).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        draining.drain();
        assert!(task.await.unwrap().is_none());

        // In flight: answered, with `connection: close`.
        let draining = Arc::new(IdleSet::new());
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let hooks = std::sync::Mutex::new(Some((started_tx, wait)));
        let service = move |_req: Request<NativeBody>| {
            let hooks = hooks.lock().unwrap().take();
            async move {
                if let Some((started, wait)) = hooks {
                    let _ = started.send(());
                    let _ = wait.await;
                }
                Response::new(ProxyBody::full("done"))
            }
        };
        let (mut c, task) = served(limits(), draining.clone(), service).await;
        c.write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
            .await
            .unwrap();
        started.await.unwrap();
        draining.drain();
        release.send(()).unwrap();
        let out = send_and_read_to_close(&mut c, b"").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(out.ends_with("done"), "{out}");
        assert!(task.await.unwrap().is_none());
    }
}
