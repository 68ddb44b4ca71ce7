//! Errors on the request path, and the one place they become HTTP responses.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;
use crate::model::NoBackend;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No rule matches the host and path.
    #[error("no route matches this request")]
    NoRoute,
    /// The request cannot be routed as sent.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The rule sends this request to no backend: every weight is 0 (503), it has no
    /// backendRefs or the chosen one does not resolve (500, as Gateway API asks).
    #[error("no backend: {0}")]
    NoBackend(#[from] NoBackend),
    /// The chosen backend has no endpoint to send to.
    #[error("backend {backend} has no endpoints")]
    NoEndpoints { backend: std::sync::Arc<str> },
    /// Every endpoint of the chosen backend is unhealthy or ejected.
    #[error("backend {backend} has no healthy endpoints")]
    NoHealthyEndpoints { backend: std::sync::Arc<str> },
    /// The backend's circuit breaker is open.
    #[error("circuit breaker open for backend {backend}")]
    CircuitOpen { backend: std::sync::Arc<str> },
    /// The backend's connection limit and queue are full.
    #[error("backend {backend} is at its connection limit")]
    Overloaded { backend: std::sync::Arc<str> },
    /// Connecting to the endpoint failed.
    #[error("cannot connect to upstream")]
    UpstreamConnect(#[source] super::body::BoxError),
    /// The upstream reset the connection or spoke invalid HTTP.
    #[error("upstream failed")]
    UpstreamFailed(#[source] super::body::BoxError),
    /// The client's request body was malformed or cut off.
    #[error("the request body could not be read")]
    ClientBody,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// A protocol upgrade cannot be proxied to this backend.
    #[error("upgrade not possible: {0}")]
    UpgradeUnsupported(&'static str),
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) | ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::NoBackend(NoBackend::NoBackendRefs | NoBackend::Unresolved) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ProxyError::NoBackend(NoBackend::ZeroWeights)
            | ProxyError::NoEndpoints { .. }
            | ProxyError::NoHealthyEndpoints { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamFailed(_)
            | ProxyError::UpgradeUnsupported(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short plain-text answer that says what happened without leaking internals.
    pub fn into_response(self) -> Response<ProxyBody> {
        let body = match &self {
            ProxyError::NoRoute => "no route matches this host and path\n".to_owned(),
            ProxyError::BadRequest(why) => format!("bad request: {why}\n"),
            ProxyError::NoBackend(NoBackend::ZeroWeights) => {
                "no backend available for this route\n".to_owned()
            }
            ProxyError::NoBackend(NoBackend::NoBackendRefs) => {
                "this route has no backend configured\n".to_owned()
            }
            ProxyError::NoBackend(NoBackend::Unresolved) => {
                "the backend reference of this route does not resolve\n".to_owned()
            }
            ProxyError::NoEndpoints { backend } => {
                format!("no endpoints available for backend {backend}\n")
            }
            ProxyError::NoHealthyEndpoints { backend } => {
                format!("no healthy endpoints for backend {backend}\n")
            }
            ProxyError::CircuitOpen { backend } => {
                format!("circuit breaker open for backend {backend}\n")
            }
            ProxyError::Overloaded { backend } => {
                format!("backend {backend} is at its connection limit\n")
            }
            ProxyError::UpstreamConnect(_) => "upstream connect error\n".to_owned(),
            ProxyError::UpstreamFailed(_) => "upstream connection failed\n".to_owned(),
            ProxyError::Timeout => "upstream timed out\n".to_owned(),
            ProxyError::ClientBody => {
                "bad request: the request body could not be read\n".to_owned()
            }
            ProxyError::UpgradeUnsupported(why) => format!("cannot upgrade: {why}\n"),
        };
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}
