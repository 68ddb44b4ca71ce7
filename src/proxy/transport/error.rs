//! What can go wrong talking to an upstream: one error type for both HTTP/1.1 clients (the
//! native one and hyper's) and h2c, typed where the failure happens, so the request layer
//! decides on retries and answers from the kind and never by downcasting.

use std::fmt;

/// The error type of bodies on the request path.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which part of the exchange with the upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection could be made: nothing was sent.
    Connect,
    /// The TLS handshake with the upstream failed (its certificate did not verify, no common
    /// version or cipher, a refused client certificate): nothing was sent.
    Tls,
    /// The connection broke, or the upstream spoke invalid HTTP, once the request was on its
    /// way: the upstream may have acted on it.
    Broken,
    /// The upstream did not answer within the attempt's time limit.
    Timeout,
    /// The client's request body failed (malformed chunking, or the client went away mid-body):
    /// the client's fault, never counted against the upstream.
    ClientBody,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Connect => "cannot connect to upstream",
            ErrorKind::Tls => "TLS handshake with upstream failed",
            ErrorKind::Broken => "upstream connection failed",
            ErrorKind::Timeout => "upstream timed out",
            ErrorKind::ClientBody => "reading the client's request body failed",
        })
    }
}

/// One failed exchange with an upstream: its kind, whether sending it again is safe whatever
/// the method, and the cause.
#[derive(Debug)]
pub struct UpstreamError {
    kind: ErrorKind,
    source: Option<BoxError>,
}

impl UpstreamError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: ErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// The attempt ran out of time.
    pub fn timeout() -> Self {
        Self {
            kind: ErrorKind::Timeout,
            source: None,
        }
    }

    /// Which part failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the request provably never reached the upstream, so sending it again cannot do
    /// it twice, whatever its method.
    pub fn retry_safe(&self) -> bool {
        matches!(self.kind, ErrorKind::Connect | ErrorKind::Tls)
    }

    /// Whether the failure is the upstream's (counts for passive health and the breaker).
    pub fn is_upstream_fault(&self) -> bool {
        self.kind != ErrorKind::ClientBody
    }

    /// Whether the client's body failed because it stalled past the body read timeout.
    pub fn client_body_timed_out(&self) -> bool {
        self.caused_by::<BodyReadTimeout>()
    }

    /// Whether the client's body passed its rule's limit ([`BodyTooLarge`]).
    pub fn client_body_too_large(&self) -> bool {
        self.caused_by::<BodyTooLarge>()
    }

    fn caused_by<T: std::error::Error + 'static>(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(err) = cur {
            if err.is::<T>() {
                return true;
            }
            cur = err.source();
        }
        false
    }

    /// Classifies an error of hyper's pooled client. hyper reports a failing request body as
    /// its own error, so that case is found by walking the sources for [`ClientBodyError`].
    pub fn from_hyper(e: hyper_util::client::legacy::Error) -> Self {
        let kind = if e.is_connect() && is_tls_failure(&e) {
            ErrorKind::Tls
        } else if e.is_connect() {
            ErrorKind::Connect
        } else if ClientBodyError::is_cause_of(&e) {
            ErrorKind::ClientBody
        } else {
            ErrorKind::Broken
        };
        Self::new(kind, e)
    }
}

/// Whether a rustls error is among the causes of `e` (a TLS connector reports it inside an
/// `io::Error`, whose `source` skips it: `get_ref` finds it).
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if err.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cur = inner.or_else(|| err.source());
    }
    false
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// The client's request body failed while it was sent upstream: marks the error so that a
/// client that hides it (hyper) can still be told apart from an upstream failure.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// The request body passed its rule's `maxRequestBodyBytes` (this many bytes).
#[derive(Debug, thiserror::Error)]
#[error("the request body is longer than {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client sent nothing of its request body for this long (the body read timeout).
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes arrived for {0:?}")]
pub struct BodyReadTimeout(pub std::time::Duration);

impl ClientBodyError {
    /// Whether `e` or one of its sources is a client body error.
    pub fn is_cause_of(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if err.is::<ClientBodyError>() {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_connect_is_safe_to_retry_whatever_the_method() {
        let connect = UpstreamError::new(ErrorKind::Connect, "refused");
        assert!(connect.retry_safe() && connect.is_upstream_fault());
        let broken = UpstreamError::new(ErrorKind::Broken, "reset");
        assert!(!broken.retry_safe() && broken.is_upstream_fault());
        assert!(!UpstreamError::timeout().retry_safe());
        let body = UpstreamError::new(ErrorKind::ClientBody, "cut off");
        assert!(!body.retry_safe() && !body.is_upstream_fault());
    }

    #[test]
    fn a_client_body_error_is_found_through_its_wrappers() {
        let inner: BoxError = Box::new(ClientBodyError("cut".into()));
        let wrapped = UpstreamError::new(ErrorKind::Broken, inner);
        assert!(ClientBodyError::is_cause_of(&wrapped));
        assert!(!ClientBodyError::is_cause_of(&UpstreamError::timeout()));
    }
}
