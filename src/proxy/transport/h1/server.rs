//! The native HTTP/1.1 connection: reads request heads, hands each request to the service the
//! listener gives it, and writes the response, all in the connection's own task.
//!
//! The service is the same handler hyper's connections use, so routing, filters, retries,
//! limits, metrics and the access log behave identically; only the framing differs. A
//! connection whose next request the codec leaves to hyper (see [`codec`]) is handed back
//! whole, with the bytes already read, and hyper serves it from there on.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::super::conn::ConnLimits;
use super::super::error::BoxError;
use super::codec::{self, BodyDecoder, Chunk, Framing, Parsed, Reject, ResponseFraming};
use super::fill;
use super::rewind::Rewind;

/// Initial read buffer of a client connection.
const READ_BUF: usize = 8 * 1024;
/// Response bytes gathered before a write; larger body frames are written on their own.
const COALESCE: usize = 64 * 1024;
/// The HTTP/2 connection preface: such a connection goes to hyper.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The read side of a client connection, shared with the request body while one is read.
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
        }
        fill::poll_fill(&mut self.io, &mut self.buf, READ_BUF, cx)
    }
}

type SharedReader = Arc<Mutex<Reader>>;

fn lock(r: &SharedReader) -> MutexGuard<'_, Reader> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body read by the native codec from the client connection.
pub struct NativeBody {
    reader: SharedReader,
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
        let mut r = lock(&this.reader);
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
        let mut value = [0u8; 29];
        let s = httpdate::fmt_http_date(now);
        if s.len() == value.len() {
            value.copy_from_slice(s.as_bytes());
        }
        c.set((secs, value));
        value
    })
}

/// What the head reader does next.
enum Step {
    Read,
    Started,
    Head(Box<codec::RequestHead>),
    Handoff,
    Reject(Reject),
}

/// Serves one client connection until it closes, fails, idles out or the gateway drains;
/// returns it, with the bytes already read put back, when hyper must serve the rest.
pub async fn serve<S, F, B>(
    stream: TcpStream,
    peer: SocketAddr,
    config: &ConnLimits,
    draining: &CancellationToken,
    service: S,
) -> Option<Rewind<TcpStream>>
where
    S: Fn(Request<NativeBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let reader: SharedReader = Arc::new(Mutex::new(Reader {
        io: rd,
        buf: BytesMut::new(),
        body: BodyDecoder::Done,
    }));
    let drained = draining.cancelled();
    tokio::pin!(drained);
    // One timer for the connection's life, re-armed only when it fires early or must fire
    // sooner: keep-alive requests do not touch the timer wheel.
    let timer = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(timer);
    let mut idle_since = Instant::now();
    let mut first = true;
    let mut out = BytesMut::new();

    loop {
        // Read one request head.
        let mut head_started: Option<Instant> = None;
        let head = loop {
            let step = {
                let mut r = lock(&reader);
                if r.buf.is_empty() {
                    Step::Read
                } else if first
                    && H2_PREFACE.starts_with(&r.buf[..r.buf.len().min(H2_PREFACE.len())])
                {
                    if r.buf.len() >= H2_PREFACE.len() {
                        Step::Handoff
                    } else {
                        Step::Started
                    }
                } else {
                    let buffered = r.buf.len();
                    match codec::parse_request(&mut r.buf) {
                        Ok(Parsed::Done(_)) if buffered - r.buf.len() > config.max_header_bytes => {
                            Step::Reject(Reject::TooLarge)
                        }
                        Ok(Parsed::Done(head)) => Step::Head(Box::new(head)),
                        Ok(Parsed::Partial) if r.buf.len() > config.max_header_bytes => {
                            Step::Reject(Reject::TooLarge)
                        }
                        Ok(Parsed::Partial) => Step::Started,
                        Ok(Parsed::Handoff) => Step::Handoff,
                        Err(why) => Step::Reject(why),
                    }
                }
            };
            match step {
                Step::Head(head) => break *head,
                Step::Handoff => return handoff(reader, wr),
                Step::Reject(why) => {
                    tracing::debug!(%peer, error = %why, "request refused");
                    reject(&mut wr, why).await;
                    return None;
                }
                Step::Started => {
                    head_started.get_or_insert_with(Instant::now);
                }
                Step::Read => {}
            }
            let deadline = match head_started {
                Some(t) => t + config.header_read_timeout,
                None => idle_since + config.idle_timeout,
            };
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            let waiting_for_first_byte = head_started.is_none();
            tokio::select! {
                biased;
                r = poll_fn(|cx| lock(&reader).poll_fill(cx)) => match r {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
                () = &mut drained, if waiting_for_first_byte => return None,
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        if !waiting_for_first_byte {
                            tracing::debug!(%peer, "request head not received in time");
                        }
                        return None;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        };
        first = false;

        // Serve it.
        let method = head.method.clone();
        let decoder = BodyDecoder::new(head.framing);
        let body = NativeBody {
            reader: reader.clone(),
            hint: decoder.remaining(),
            done: decoder.is_done(),
        };
        let has_body = !decoder.is_done();
        if has_body {
            lock(&reader).body = decoder;
        }
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = head.headers;
        // Boxed: the request future is large, and an idle connection should not carry it.
        let resp = Box::pin(service(req)).await;

        // A body the handler left unread ends the connection (there is no telling where the
        // next request starts without reading it).
        let body_left = has_body && !lock(&reader).body.is_done();
        let close = head.close || body_left || draining.is_cancelled();
        if write_response(&mut wr, &mut out, &method, resp, close)
            .await
            .is_err()
            || close
        {
            let _ = wr.shutdown().await;
            return None;
        }
        idle_since = Instant::now();
        // An idle keep-alive connection holds no buffers (10k idle connections would otherwise
        // pin ~16 KiB each).
        out = BytesMut::new();
        let mut r = lock(&reader);
        if r.buf.is_empty() {
            r.buf = BytesMut::new();
        }
    }
}

/// Writes the response head and streams its body; `Err` when the connection must be dropped
/// (the client went away, or the body failed after the head was sent).
async fn write_response<B>(
    wr: &mut OwnedWriteHalf,
    out: &mut BytesMut,
    method: &Method,
    resp: Response<B>,
    close: bool,
) -> io::Result<()>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    let (parts, mut body) = resp.into_parts();
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
    out.clear();
    out.reserve(512);
    codec::put_response_head(out, status, &parts.headers, framing, close, &http_date());
    drop(parts);
    if bodiless {
        drop(body);
        return wr.write_all(out).await;
    }
    let chunked = framing == ResponseFraming::Body(Framing::Chunked);
    enum Next {
        Frame(Option<Result<Frame<Bytes>, BoxError>>),
        Flush,
    }
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
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
    drop(body);
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

/// The connection, with what was read of it put back, for hyper.
fn handoff(reader: SharedReader, wr: OwnedWriteHalf) -> Option<Rewind<TcpStream>> {
    // A request body still holding the reader leaves nothing sane to continue with.
    let reader = Arc::try_unwrap(reader).ok()?;
    let reader = reader.into_inner().unwrap_or_else(|e| e.into_inner());
    let stream = reader.io.reunite(wr).ok()?;
    Some(Rewind::new(reader.buf.freeze(), stream))
}
