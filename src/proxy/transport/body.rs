//! Bodies on both sides of the proxy.
//!
//! [`ClientBody`] is what the client sends, read by hyper or by the native codec.
//! [`ProxyBody`] is what the client receives: an upstream's stream or a small fixed answer.
//! [`RequestBody`] is what the upstream receives: the client's stream, counted when asked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::error::{BodyReadTimeout, BodyTooLarge, BoxError, ClientBodyError};
use super::h1::{NativeBody, RawHeaders, UpstreamBody};

/// A request body as the client sends it, through hyper or through the native HTTP/1.1 codec,
/// cut with [`BodyReadTimeout`] when its next bytes take longer than the body read timeout.
pub struct ClientBody {
    source: Source,
    stall: Option<Stall>,
}

enum Source {
    /// Read by hyper (HTTP/2, and HTTP/1.1 connections handed to hyper).
    Hyper(Incoming),
    /// Read by the native HTTP/1.1 codec.
    Native(NativeBody),
    /// Read already (a step that needed the whole body, e.g. external authorization): what is
    /// left to give. The trailers are boxed: a `HeaderMap` inline doubled the size of every
    /// `ClientBody`, which every request's future holds in several of its states.
    Buffered(Option<Bytes>, Option<Box<http::HeaderMap>>),
    /// Counted against a rule's `maxRequestBodyBytes` (boxed: only such rules pay for it).
    Limited(Box<Limit>),
}

/// A body of unknown length under a limit: cut, for good, with [`BodyTooLarge`] when its data
/// passes `max` bytes.
struct Limit {
    inner: ClientBody,
    left: u64,
    max: u64,
    passed: bool,
}

impl Limit {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.passed {
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.max)))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            match self.left.checked_sub(data.len() as u64) {
                Some(left) => self.left = left,
                None => {
                    self.passed = true;
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.max)))));
                }
            }
        }
        polled
    }
}

/// The body read timeout: armed when the body has nothing to give, disarmed by every frame.
struct Stall {
    limit: Duration,
    /// Allocated the first time the body waits (most bodies never do).
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    expired: bool,
}

impl ClientBody {
    /// A body read by hyper; `stall`: the body read timeout (`None`: none).
    pub fn hyper(body: Incoming, stall: Option<Duration>) -> Self {
        Self::new(Source::Hyper(body), stall)
    }

    /// A body read by the native codec; `stall`: the body read timeout (`None`: none).
    pub fn native(body: NativeBody, stall: Option<Duration>) -> Self {
        Self::new(Source::Native(body), stall)
    }

    /// The body of a request the native HTTP/1.1 server read. That server hands a request
    /// asking to upgrade to hyper, so such a request has no `Upgrade` header.
    pub fn read_natively(&self) -> bool {
        matches!(self.source, Source::Native(_))
    }

    /// A body read already: `data`, then `trailers`.
    pub fn buffered(data: Bytes, trailers: Option<http::HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self::new(Source::Buffered(data, trailers.map(Box::new)), None)
    }

    /// No body (what is left where a body was taken).
    pub fn empty() -> Self {
        Self::new(Source::Buffered(None, None), None)
    }

    /// `body` cut with [`BodyTooLarge`] once its data passes `max` bytes.
    pub fn limited(body: ClientBody, max: u64) -> Self {
        Self::new(
            Source::Limited(Box::new(Limit {
                inner: body,
                left: max,
                max,
                passed: false,
            })),
            None,
        )
    }

    fn new(source: Source, stall: Option<Duration>) -> Self {
        Self {
            source,
            stall: stall.map(|limit| Stall {
                limit,
                timer: None,
                armed: false,
                expired: false,
            }),
        }
    }
}

impl Stall {
    /// Called when the body has nothing to give: whether the timeout has passed since the
    /// last frame (the timer is armed here and wakes `cx` when it passes).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let fired = self
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready());
        self.expired |= fired;
        fired
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(stall) = &this.stall
            && stall.expired
        {
            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout(stall.limit)))));
        }
        let polled = match &mut this.source {
            Source::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Source::Native(b) => Pin::new(b).poll_frame(cx),
            Source::Buffered(data, trailers) => Poll::Ready(match (data.take(), trailers.take()) {
                (Some(d), t) => {
                    *trailers = t;
                    Some(Ok(Frame::data(d)))
                }
                (None, Some(t)) => Some(Ok(Frame::trailers(*t))),
                (None, None) => None,
            }),
            Source::Limited(l) => l.poll_frame(cx),
        };
        match (polled, &mut this.stall) {
            (Poll::Pending, Some(stall)) => {
                if stall.expired(cx) {
                    Poll::Ready(Some(Err(Box::new(BodyReadTimeout(stall.limit)))))
                } else {
                    Poll::Pending
                }
            }
            (Poll::Pending, None) => Poll::Pending,
            (ready, stall) => {
                if let Some(stall) = stall {
                    stall.armed = false;
                }
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Hyper(b) => b.is_end_stream(),
            Source::Native(b) => b.is_end_stream(),
            Source::Buffered(d, t) => d.is_none() && t.is_none(),
            Source::Limited(l) => !l.passed && l.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Hyper(b) => b.size_hint(),
            Source::Native(b) => b.size_hint(),
            Source::Buffered(d, _) => {
                SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64))
            }
            Source::Limited(l) => l.inner.size_hint(),
        }
    }
}

/// A response body.
pub struct ProxyBody {
    inner: Inner,
}

enum Inner {
    Upstream(Incoming),
    Native(UpstreamBody),
    Full(Option<Bytes>),
}

/// An upstream's body read by the native HTTP/1.1 client.
impl From<UpstreamBody> for ProxyBody {
    fn from(body: UpstreamBody) -> Self {
        Self {
            inner: Inner::Native(body),
        }
    }
}

impl ProxyBody {
    /// The response's header lines as the upstream wrote them, when the native client kept
    /// them raw (the response's map does not hold them then: see
    /// `request::headers::response_headers`).
    pub(crate) fn raw_headers(&self) -> Option<&RawHeaders> {
        match &self.inner {
            Inner::Native(b) => b.raw_headers(),
            _ => None,
        }
    }

    /// Takes the raw header lines out, to put them in the response's map.
    pub(crate) fn take_raw_headers(&mut self) -> Option<RawHeaders> {
        match &mut self.inner {
            Inner::Native(b) => b.take_raw_headers(),
            _ => None,
        }
    }

    /// The upstream's body, streamed through.
    pub fn upstream(body: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(body),
        }
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Native(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Native(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Native(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A request body on its way upstream.
pub struct RequestBody {
    prefix: Option<Bytes>,
    rest: Option<ClientBody>,
    counted: Option<Arc<AtomicU64>>,
}

impl RequestBody {
    /// The client's body, counting its bytes into `counted` when given.
    pub fn new(inner: ClientBody, counted: Option<Arc<AtomicU64>>) -> Self {
        Self {
            prefix: None,
            rest: Some(inner),
            counted,
        }
    }

    /// No body (what is left where a body was taken).
    pub fn empty() -> Self {
        Self {
            prefix: None,
            rest: None,
            counted: None,
        }
    }

    /// A body kept in memory (a replayable retry body; already counted).
    pub fn full(bytes: Bytes) -> Self {
        Self {
            prefix: (!bytes.is_empty()).then_some(bytes),
            rest: None,
            counted: None,
        }
    }

    /// What was already read, then the rest of the client's body.
    pub fn chained(prefix: Bytes, rest: ClientBody, counted: Option<Arc<AtomicU64>>) -> Self {
        if let Some(c) = &counted {
            c.fetch_add(prefix.len() as u64, Ordering::Relaxed);
        }
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest: Some(rest),
            counted,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(rest) = &mut this.rest else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest)
            .poll_frame(cx)
            .map_err(|e| -> BoxError { Box::new(ClientBodyError(e)) });
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &this.counted)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(r) => {
                let h = r.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + prefix);
                if let Some(upper) = h.upper() {
                    out.set_upper(upper + prefix);
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every request's future holds the body in several of its states and is moved into a box
    /// per request: a larger body costs a larger copy on every request (callgrind saw 8,500
    /// instructions when an inline `HeaderMap` made it 160 bytes).
    #[test]
    fn a_client_body_stays_small() {
        assert!(std::mem::size_of::<super::ClientBody>() <= 80);
    }

    #[tokio::test]
    async fn a_buffered_body_gives_its_data_then_its_trailers() {
        use http_body_util::BodyExt;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut body =
            super::ClientBody::buffered(bytes::Bytes::from_static(b"abc"), Some(trailers));
        assert!(!hyper::body::Body::is_end_stream(&body));
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"abc");
        let t = body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert!(body.frame().await.is_none());
        assert!(hyper::body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn a_limited_body_is_cut_for_good_once_past_its_limit() {
        use http_body_util::BodyExt;
        let data = |n: usize| bytes::Bytes::from(vec![b'x'; n]);
        // At the limit: all of it.
        let inner = super::ClientBody::buffered(data(4), None);
        let mut body = super::ClientBody::limited(inner, 4);
        assert_eq!(
            body.frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len(),
            4
        );
        assert!(body.frame().await.is_none());
        // One byte over: an error naming the limit, then the same error again.
        let inner = super::ClientBody::buffered(data(5), None);
        let mut body = super::ClientBody::limited(inner, 4);
        for _ in 0..2 {
            let e = body.frame().await.unwrap().unwrap_err();
            assert!(e.is::<super::BodyTooLarge>(), "{e}");
        }
        assert!(!hyper::body::Body::is_end_stream(&body));
    }
}
