//! The response body the proxy sends: an upstream's stream or a small fixed answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::conn::ActivityGuard;

/// A response body; it holds the connection's in-flight guard until it is fully sent.
pub struct ProxyBody {
    inner: Inner,
    _guard: Option<ActivityGuard>,
}

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// The upstream's body, streamed through.
    pub fn upstream(body: Incoming) -> Self {
        Self {
            inner: Inner::Upstream(body),
            _guard: None,
        }
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            _guard: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
            _guard: None,
        }
    }

    /// Keeps `guard` alive until the body is done.
    pub fn with_guard(mut self, guard: ActivityGuard) -> Self {
        self._guard = Some(guard);
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
