//! A rule's `errorResponses` (ingress-nginx's `custom-http-errors`): an upstream answer with
//! one of its statuses is replaced by the answer of the error-page backend, asked as
//! ingress-nginx asks its default backend: `GET /` and the request's query (`HEAD` for a
//! HEAD request; nginx keeps the client's method and body) with the client's headers (its
//! `Host`, `Accept`, `X-Request-ID`…), and `X-Code`, `X-Format`, `X-Original-URI`,
//! `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Forwarded-For`.
//!
//! The client gets that backend's status, headers and body (nginx's `error_page CODE =
//! @location` keeps the named location's status). When it cannot answer (no endpoint, connect
//! failure, timeout, a body over [`MAX_BODY`]) the upstream's own answer is sent, untouched.
//! The error page's own answer is never intercepted again. The replaced answer's body is
//! drained when it is short and already complete enough to keep its connection, else dropped
//! (the connection is closed rather than reused with unread bytes).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};

use super::error::ProxyError;
use super::exchange::Exchange;
use super::headers::{X_FORWARDED_FOR, strip_hop_by_hop};
use super::reason;
use super::service::Service;
use super::{forward, headers};
use crate::model::{BackendIdx, ErrorResponses, Kind, Rule};
use crate::proxy::transport::{ClientBody, ConnCtx, ProxyBody};
use crate::proxy::upstream::Router;
use crate::proxy::upstream::balance::PickContext;

/// The longest error page sent (a longer one is a failure: the upstream's answer is sent).
pub const MAX_BODY: usize = 1024 * 1024;

/// The longest replaced body read to the end so its connection can be reused.
const DRAIN_MAX: u64 = 16 * 1024;

/// How long the error-page backend may take when neither the rule nor the gateway sets a
/// request timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

static X_CODE: HeaderName = HeaderName::from_static("x-code");
static X_FORMAT: HeaderName = HeaderName::from_static("x-format");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_NAMESPACE: HeaderName = HeaderName::from_static("x-namespace");
static X_INGRESS_NAME: HeaderName = HeaderName::from_static("x-ingress-name");
static X_SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
static X_SERVICE_PORT: HeaderName = HeaderName::from_static("x-service-port");

/// What the error page is told about the request, taken before the request is forwarded
/// (only for rules with `errorResponses`).
struct Asked {
    head: bool,
    /// The client's headers (not hop-by-hop or body ones), with its `Host`.
    headers: HeaderMap,
    uri: Option<HeaderValue>,
    client: IpAddr,
}

/// Request headers the error page does not get from the client: hop-by-hop ones, those of the
/// request's body (it gets none), and the ones the gateway sets.
const NOT_PASSED: [&HeaderName; 16] = [
    &header::CONNECTION,
    &header::CONTENT_LENGTH,
    &header::TRANSFER_ENCODING,
    &header::TE,
    &header::TRAILER,
    &header::UPGRADE,
    &header::EXPECT,
    &header::PROXY_AUTHORIZATION,
    &X_CODE,
    &X_FORMAT,
    &X_ORIGINAL_URI,
    &X_NAMESPACE,
    &X_INGRESS_NAME,
    &X_SERVICE_NAME,
    &X_SERVICE_PORT,
    &X_FORWARDED_FOR,
];

impl Asked {
    /// The request's method, headers, URI as sent, and client address.
    fn of(req: &Request<ClientBody>, service: &Service, conn: &ConnCtx) -> Self {
        let uri = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        let mut headers = HeaderMap::with_capacity(req.headers().len() + 10);
        for (name, v) in req.headers() {
            if !NOT_PASSED.contains(&name) && name.as_str() != "keep-alive" {
                headers.append(name.clone(), v.clone());
            }
        }
        if let Some(host) = super::headers::host_value(req) {
            headers.insert(header::HOST, host);
        }
        Self {
            head: req.method() == Method::HEAD,
            headers,
            uri: HeaderValue::from_str(uri).ok(),
            client: service.client_ip.resolve(conn.peer.ip(), req.headers()),
        }
    }
}

/// Forwards as [`forward::forward`] does; an answer with one of `errors`' statuses is replaced
/// by the error page's, where it was written.
pub(super) async fn forward<'o>(
    t: forward::Target<'_>,
    errors: &ErrorResponses,
    req: &mut Request<ClientBody>,
    normalized: Option<String>,
    ex: &mut Exchange,
    out: &'o mut Option<Response<ProxyBody>>,
) -> Result<&'o mut Response<ProxyBody>, ProxyError> {
    let asked = Asked::of(req, t.service, t.conn);
    let r = Replace {
        service: t.service,
        router: t.router,
        rule: t.rule,
        errors,
        answered_by: t.picked.backend,
    };
    let resp = forward::forward(t, req, normalized, ex, out).await?;
    if errors.intercepts(resp.status().as_u16()) {
        replace(r, asked, resp, ex).await;
    }
    Ok(resp)
}

/// Where the error page is asked from, and about which answer.
struct Replace<'a> {
    pub service: &'a Service,
    pub router: &'a Router,
    pub rule: &'a Rule,
    pub errors: &'a ErrorResponses,
    /// The backend that answered (its Service is named to the error page).
    pub answered_by: BackendIdx,
}

/// Puts the error page's answer in place of `resp`, which stays when the error page fails.
async fn replace(r: Replace<'_>, asked: Asked, resp: &mut Response<ProxyBody>, ex: &mut Exchange) {
    let timeout = r
        .rule
        .timeouts
        .backend_request
        .or(r.rule.timeouts.request)
        .or(r.service.settings.default_request_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let code = resp.status();
    match tokio::time::timeout_at(deadline, ask(&r, asked, code, deadline)).await {
        Ok(Ok(page)) => {
            ex.reason = reason::ERROR_PAGE;
            discard(std::mem::replace(resp, page).into_body());
        }
        Ok(Err(why)) => {
            tracing::debug!(route = %r.rule.label, %why, "the error page failed; the upstream's answer is sent");
            ex.reason = reason::ERROR_PAGE_FAILED;
        }
        Err(_) => {
            tracing::debug!(route = %r.rule.label, ?timeout, "the error page did not answer in time; the upstream's answer is sent");
            ex.reason = reason::ERROR_PAGE_FAILED;
        }
    }
}

/// Asks the error page and reads its answer.
async fn ask(
    r: &Replace<'_>,
    asked: Asked,
    code: http::StatusCode,
    deadline: tokio::time::Instant,
) -> Result<Response<ProxyBody>, String> {
    // nginx's `rewrite (.*) / break` keeps the query.
    let query = asked
        .uri
        .as_ref()
        .and_then(|u| u.to_str().ok()?.split_once('?'))
        .map(|(_, q)| q);
    let path_and_query = match query {
        Some(q) => PathAndQuery::try_from(format!("/?{q}")).map_err(|e| e.to_string())?,
        None => PathAndQuery::from_static("/"),
    };
    let sub = forward::Subrequest {
        service: r.service,
        router: r.router,
        backend: r.errors.backend.index,
        ctx: PickContext {
            client: asked.client,
            hash: None,
        },
        method: if asked.head {
            Method::HEAD
        } else {
            Method::GET
        },
        path_and_query,
        headers: headers(r, asked, code),
        body: Bytes::new(),
        deadline,
    };
    let (resp, held) = forward::subrequest(sub).await.map_err(|e| e.to_string())?;
    let (mut parts, body) = headers::response_into_parts(resp);
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("its body: {e}"))?
        .to_bytes();
    drop(held);
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, ProxyBody::full(body)))
}

/// The error page's request headers: the client's, and what ingress-nginx adds.
fn headers(r: &Replace<'_>, asked: Asked, code: http::StatusCode) -> HeaderMap {
    let mut h = asked.headers;
    h.insert(X_CODE.clone(), HeaderValue::from(code.as_u16()));
    if let Some(accept) = h.get(header::ACCEPT).cloned() {
        h.insert(X_FORMAT.clone(), accept);
    }
    if let Some(uri) = asked.uri {
        h.insert(X_ORIGINAL_URI.clone(), uri);
    }
    let route = &r.rule.route;
    if let Ok(v) = HeaderValue::from_str(&route.namespace) {
        h.insert(X_NAMESPACE.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&route.name) {
        h.insert(X_INGRESS_NAME.clone(), v);
    }
    let (name, port) = service_of(&r.router.table.backends[r.answered_by]);
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert(X_SERVICE_NAME.clone(), v);
    }
    if let Some(v) = port.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert(X_SERVICE_PORT.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&asked.client.to_canonical().to_string()) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h
}

/// The Service name and port number of a backend: a Service port's backend is named
/// `name:port[/settings]`; a Backend names its Service (without a port number) or itself.
fn service_of(b: &crate::model::Backend) -> (&str, Option<&str>) {
    if b.id.kind == Kind::Service {
        let (name, rest) = b.id.name.split_once(':').unwrap_or((&b.id.name, ""));
        let port = rest.split('/').next().filter(|p| !p.is_empty());
        return (name, port);
    }
    match &b.service {
        Some(s) => (&s.name, None),
        None => (&b.id.name, None),
    }
}

/// Lets go of a replaced answer's body: a short one is read to its end in the background, so
/// that its connection goes back to the pool; a long or unknown one is dropped, which closes
/// the connection.
fn discard(body: ProxyBody) {
    if body.is_end_stream() {
        return;
    }
    if body.size_hint().upper().is_some_and(|n| n <= DRAIN_MAX) {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, ObjectRef, UpstreamProtocol};

    #[test]
    fn the_service_and_port_of_a_service_backend_come_from_its_id() {
        let b = |kind, name: &str| {
            Backend::new(
                ObjectRef::new(kind, "shop", name),
                UpstreamProtocol::Http1,
                Vec::new(),
            )
        };
        assert_eq!(
            service_of(&b(Kind::Service, "web:8080")),
            ("web", Some("8080"))
        );
        assert_eq!(
            service_of(&b(Kind::Service, "web:80/h2c/lb=ewma")),
            ("web", Some("80"))
        );
        assert_eq!(service_of(&b(Kind::Backend, "api")), ("api", None));
    }
}
