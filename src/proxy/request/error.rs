//! Errors on the request path, and the one place they become HTTP responses.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use super::rate_limit::Limited;
use super::{headers, reason};
use crate::model::NoBackend;
use crate::proxy::transport::{ErrorKind, ProxyBody, UpstreamError};

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
    NoEndpoints {
        /// The backend's label.
        backend: Arc<str>,
    },
    /// Every endpoint of the chosen backend is unhealthy or ejected.
    #[error("backend {backend} has no healthy endpoints")]
    NoHealthyEndpoints {
        /// The backend's label.
        backend: Arc<str>,
    },
    /// The backend's circuit breaker is open.
    #[error("circuit breaker open for backend {backend}")]
    CircuitOpen {
        /// The backend's label.
        backend: Arc<str>,
    },
    /// The backend's connection limit and queue are full.
    #[error("backend {backend} is at its connection limit")]
    Overloaded {
        /// The backend's label.
        backend: Arc<str>,
    },
    /// The exchange with the upstream failed (connect, reset, timeout) or the client's body
    /// failed while it was sent.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A protocol upgrade cannot be proxied to this backend.
    #[error("upgrade not possible: {0}")]
    UpgradeUnsupported(&'static str),
    /// A rate limit refused the request (429 unless the policy says otherwise).
    #[error("rate limited by {}", .0.violated.join(", "))]
    RateLimited(Box<Limited>),
    /// A Global limit with failureMode Closed could not ask Redis (503).
    #[error("rate limiter unavailable")]
    RateLimitUnavailable,
    /// The rule requires a client certificate its CA verified, and the connection has none
    /// (plain HTTP, none sent, or one verified for another host) (403).
    #[error("a valid client certificate is required")]
    ClientCertificateRequired,
    /// An access policy refused the request: an IP list (403), authentication (401).
    #[error("access denied ({0})")]
    AccessDenied(Box<Denied>),
    /// The request's `Content-Length` is over the rule's `maxRequestBodyBytes` (413).
    #[error("request body longer than {0} bytes")]
    BodyTooLarge(u64),
}

/// A refusal by an access policy: its status, reason and headers (`WWW-Authenticate`, CORS).
#[derive(Debug)]
pub struct Denied {
    /// 401 or 403 (503: the keys to decide with are unavailable).
    pub status: StatusCode,
    /// One of [`reason`]'s access reasons.
    pub reason: &'static str,
    /// Headers of the answer.
    pub headers: http::HeaderMap,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NoBackend(NoBackend::NoBackendRefs | NoBackend::Unresolved) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ProxyError::NoBackend(NoBackend::ZeroWeights)
            | ProxyError::NoEndpoints { .. }
            | ProxyError::NoHealthyEndpoints { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(e) => match e.kind() {
                ErrorKind::Connect | ErrorKind::Tls | ErrorKind::Broken => StatusCode::BAD_GATEWAY,
                ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
                ErrorKind::ClientBody if e.client_body_timed_out() => StatusCode::REQUEST_TIMEOUT,
                ErrorKind::ClientBody if e.client_body_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::ClientBody => StatusCode::BAD_REQUEST,
            },
            ProxyError::UpgradeUnsupported(_) => StatusCode::BAD_GATEWAY,
            ProxyError::RateLimited(l) => l.status,
            ProxyError::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ClientCertificateRequired => StatusCode::FORBIDDEN,
            ProxyError::AccessDenied(d) => d.status,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The machine-readable reason (see [`reason`]).
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => reason::NO_ROUTE,
            ProxyError::BadRequest(_) => reason::BAD_REQUEST,
            ProxyError::NoBackend(NoBackend::ZeroWeights) => reason::NO_BACKEND,
            ProxyError::NoBackend(NoBackend::NoBackendRefs) => reason::NO_BACKEND_REFS,
            ProxyError::NoBackend(NoBackend::Unresolved) => reason::UNRESOLVED_BACKEND,
            ProxyError::NoEndpoints { .. } => reason::NO_ENDPOINTS,
            ProxyError::NoHealthyEndpoints { .. } => reason::NO_HEALTHY_ENDPOINTS,
            ProxyError::CircuitOpen { .. } => reason::BREAKER_OPEN,
            ProxyError::Overloaded { .. } => reason::OVERLOADED,
            ProxyError::Upstream(e) => match e.kind() {
                ErrorKind::Connect => reason::CONNECT_FAILED,
                ErrorKind::Tls => reason::UPSTREAM_TLS,
                ErrorKind::Broken => reason::UPSTREAM_RESET,
                ErrorKind::Timeout => reason::TIMEOUT,
                ErrorKind::ClientBody if e.client_body_timed_out() => reason::CLIENT_BODY_TIMEOUT,
                ErrorKind::ClientBody if e.client_body_too_large() => reason::BODY_TOO_LARGE,
                ErrorKind::ClientBody => reason::CLIENT_BODY,
            },
            ProxyError::UpgradeUnsupported(_) => reason::UPGRADE_FAILED,
            ProxyError::RateLimited(_) => reason::RATE_LIMITED,
            ProxyError::RateLimitUnavailable => reason::RATE_LIMIT_UNAVAILABLE,
            ProxyError::ClientCertificateRequired => reason::CLIENT_CERTIFICATE_REQUIRED,
            ProxyError::AccessDenied(d) => d.reason,
            ProxyError::BodyTooLarge(_) => reason::BODY_TOO_LARGE,
        }
    }

    /// A short plain-text answer that says what happened without leaking internals (a rate
    /// limit's answer is the IETF draft's `quota-exceeded` problem, with its headers).
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = match self {
            ProxyError::RateLimited(limited) => return limited_response(*limited),
            ProxyError::RateLimitUnavailable => {
                let mut resp = text(status, "rate limiter unavailable\n".to_owned());
                headers::response_headers(&mut resp)
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return resp;
            }
            ProxyError::AccessDenied(d) => {
                let body = match d.status {
                    StatusCode::UNAUTHORIZED => "unauthorized\n",
                    StatusCode::SERVICE_UNAVAILABLE => "authentication unavailable\n",
                    StatusCode::PAYLOAD_TOO_LARGE => "request body too large to authorize\n",
                    StatusCode::INTERNAL_SERVER_ERROR => {
                        "the authentication of this route does not resolve\n"
                    }
                    _ => "forbidden\n",
                };
                let mut resp = text(status, body.to_owned());
                headers::response_headers(&mut resp).extend(d.headers);
                return resp;
            }
            other => other,
        };
        let body = match &body {
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
            ProxyError::Upstream(e) => match e.kind() {
                ErrorKind::Connect => "upstream connect error\n".to_owned(),
                ErrorKind::Tls => "upstream TLS handshake failed\n".to_owned(),
                ErrorKind::Broken => "upstream connection failed\n".to_owned(),
                ErrorKind::Timeout => "upstream timed out\n".to_owned(),
                ErrorKind::ClientBody if e.client_body_timed_out() => {
                    "request timeout: the request body stopped arriving\n".to_owned()
                }
                ErrorKind::ClientBody if e.client_body_too_large() => {
                    "request body too large\n".to_owned()
                }
                ErrorKind::ClientBody => {
                    "bad request: the request body could not be read\n".to_owned()
                }
            },
            ProxyError::BodyTooLarge(_) => "request body too large\n".to_owned(),
            ProxyError::UpgradeUnsupported(why) => format!("cannot upgrade: {why}\n"),
            ProxyError::RateLimited(_)
            | ProxyError::RateLimitUnavailable
            | ProxyError::AccessDenied(_) => String::new(),
            ProxyError::ClientCertificateRequired => {
                "forbidden: a valid client certificate is required\n".to_owned()
            }
        };
        text(status, body)
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    headers::response_headers(&mut resp).insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The problem type of the IETF RateLimit draft for an exceeded quota.
pub const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

fn limited_response(limited: Limited) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "type": QUOTA_EXCEEDED,
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": limited.status.as_u16(),
        "violated-policies": limited.violated.iter().map(|n| &**n).collect::<Vec<_>>(),
    });
    let mut resp = Response::new(ProxyBody::full(format!("{body}\n")));
    *resp.status_mut() = limited.status;
    *headers::response_headers(&mut resp) = limited.headers;
    headers::response_headers(&mut resp).insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::transport::error::{BodyReadTimeout, BodyTooLarge, ClientBodyError};

    /// Every answer the proxy makes itself names a reason from the list, and the 503s tell
    /// their causes apart.
    #[test]
    fn every_error_names_a_distinct_reason() {
        let b: Arc<str> = "default/api".into();
        let errors = [
            ProxyError::NoRoute,
            ProxyError::BadRequest("x"),
            NoBackend::ZeroWeights.into(),
            NoBackend::NoBackendRefs.into(),
            NoBackend::Unresolved.into(),
            ProxyError::NoEndpoints { backend: b.clone() },
            ProxyError::NoHealthyEndpoints { backend: b.clone() },
            ProxyError::CircuitOpen { backend: b.clone() },
            ProxyError::Overloaded { backend: b },
            UpstreamError::new(ErrorKind::Connect, "refused").into(),
            UpstreamError::new(ErrorKind::Tls, "bad certificate").into(),
            UpstreamError::new(ErrorKind::Broken, "reset").into(),
            UpstreamError::timeout().into(),
            UpstreamError::new(ErrorKind::ClientBody, "cut").into(),
            // As the native client reports a stalled body: the timeout under the marker.
            UpstreamError::new(
                ErrorKind::ClientBody,
                ClientBodyError(Box::new(BodyReadTimeout(std::time::Duration::from_secs(1)))),
            )
            .into(),
            ProxyError::UpgradeUnsupported("x"),
            ProxyError::RateLimited(Box::new(Limited {
                status: StatusCode::TOO_MANY_REQUESTS,
                headers: http::HeaderMap::new(),
                violated: vec!["per-client".into()],
            })),
            ProxyError::RateLimitUnavailable,
            ProxyError::ClientCertificateRequired,
            ProxyError::BodyTooLarge(8),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for e in &errors {
            assert!(reason::ALL.contains(&e.reason()), "{e}");
            assert!(seen.insert(e.reason()), "{} named twice", e.reason());
        }
        let codes: Vec<u16> = errors.iter().map(|e| e.status().as_u16()).collect();
        assert_eq!(
            codes,
            [
                404, 400, 503, 500, 500, 503, 503, 503, 503, 502, 502, 502, 504, 400, 408, 502,
                429, 503, 403, 413
            ]
        );
        // A body cut by the limit while it was sent says the same as a declared length over it.
        let cut: ProxyError = UpstreamError::new(
            ErrorKind::ClientBody,
            ClientBodyError(Box::new(BodyTooLarge(8))),
        )
        .into();
        assert_eq!(
            (cut.status().as_u16(), cut.reason()),
            (413, reason::BODY_TOO_LARGE)
        );
    }
}
