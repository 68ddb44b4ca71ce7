//! One request: lookup, access policies (rate limits), filters, then a direct answer, a
//! redirect, or a forward to an upstream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, header};
use http_body::Body as _;

use super::error::ProxyError;
use super::exchange::{Exchange, ResponseBody};
use super::middleware::Middleware;
use super::request_id::{self, RequestId, X_REQUEST_ID};
use super::service::Service;
use super::{access, error_page, forward, headers, path, rate_limit, reason};
use crate::model::{Action, Answer, DirectResponse, PathMatcher, Redirect, RequestView};
use crate::proxy::transport::h1::{NativeHead, RawHeaders};
use crate::proxy::transport::{self, ClientBody, ConnCtx, ProxyBody};
use crate::proxy::upstream::Router;

impl transport::Handler for Service {
    type Body = ResponseBody;

    fn handle(
        self: Arc<Self>,
        conn: Arc<ConnCtx>,
        req: Request<ClientBody>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        handle(self, conn, req)
    }

    // The request is made in the request's future, where it stays (see `NativeHead`).
    fn handle_native(
        self: Arc<Self>,
        conn: Arc<ConnCtx>,
        head: NativeHead,
        stall: Option<Duration>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        handle(self, conn, Native { head, stall })
    }

    fn raw_headers(body: &ResponseBody) -> Option<&RawHeaders> {
        body.raw_headers()
    }

    fn extra_header(body: &ResponseBody) -> Option<(&HeaderName, &[u8])> {
        body.request_id().map(|id| (&X_REQUEST_ID, id.as_bytes()))
    }

    // The one place the request layer hands a response to a writer that knows only the map.
    #[allow(clippy::disallowed_methods)]
    fn headers_into_map(resp: &mut Response<ResponseBody>) {
        if let Some(raw) = resp.body_mut().take_raw_headers() {
            raw.into_map(resp.headers_mut());
        }
        if let Some(id) = resp.body_mut().take_request_id() {
            resp.headers_mut()
                .insert(X_REQUEST_ID.clone(), id.into_value());
        }
    }
}

/// What a request is made from: the request (hyper's), or the head the native server read,
/// made into the request in the request's future.
trait Source {
    /// Whether the request is known to have no `X-Request-ID`.
    fn without_id(&self) -> bool;
    fn into_request(self) -> Request<ClientBody>;
}

impl Source for Request<ClientBody> {
    fn without_id(&self) -> bool {
        false
    }
    fn into_request(self) -> Request<ClientBody> {
        self
    }
}

/// A head the native server read, and the body read timeout.
struct Native {
    head: NativeHead,
    stall: Option<Duration>,
}

impl Source for Native {
    fn without_id(&self) -> bool {
        !self.head.has_request_id()
    }
    fn into_request(self) -> Request<ClientBody> {
        let stall = self.stall;
        self.head.into_request(|b| ClientBody::native(b, stall))
    }
}

/// Serves one request; never fails (errors become responses here, and only here).
async fn handle(
    service: Arc<Service>,
    conn: Arc<ConnCtx>,
    source: impl Source,
) -> Response<ResponseBody> {
    let without_id = source.without_id();
    let mut request = source.into_request();
    let req = &mut request;
    let (service, conn) = (&*service, &*conn);
    let guard = conn.activity.begin();
    // A request without an id gets one, put in its map only for the steps that read the map
    // whole (a middleware, access policies, rate limits, error pages, header filters,
    // hashing), else sent upstream beside it (`Record::unsent_request_id`). Routes are
    // matched on the client's own headers either way.
    let unsent = without_id && service.middleware.is_none();
    let mut made_in_map = None;
    let id = if unsent {
        RequestId::Made(request_id::new_id())
    } else {
        let (id, made) = request_id::ensure(req.headers_mut());
        made_in_map = made;
        RequestId::Given(id)
    };
    let mut exchange = Exchange::start(&service.telemetry, req, conn.peer.ip(), &id, guard);
    // An id made here is the trace id too, unless the client's `traceparent` names one (see
    // `trace::propagate`).
    match (&id, made_in_map) {
        (RequestId::Made(digits), _) => exchange.made_request_id(*digits, false),
        (_, Some(digits)) => exchange.made_request_id(digits, true),
        _ => {}
    }
    let router = service.router.load_full();
    let answered = match &service.middleware {
        Some(m) => before(m.as_ref(), req),
        None => None,
    };
    // The response is written here by the step that makes it (see `forward::attempt::run`).
    let mut out = None;
    let resp = match answered {
        Some(resp) => {
            exchange.reason = reason::MIDDLEWARE;
            out.insert(resp)
        }
        None => match serve(service, &router, conn, req, &mut exchange, &mut out).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "request answered by the proxy");
                exchange.reason = e.reason();
                out.insert(e.into_response())
            }
        },
    };
    if let Some(m) = &service.middleware {
        after(m.as_ref(), resp);
    }
    exchange.status = resp.status().as_u16();
    let id = headers::set_request_id_or_beside(resp, id);
    // Forwarded, it gave its map to the attempts: what is left is dropped without an empty
    // map's drop glue (see `discard_map`).
    transport::h1::discard_request(request, ClientBody::empty());
    let Some(resp) = out else {
        unreachable!("every answer was written above");
    };
    resp.map(|b| ResponseBody::new(b, exchange, id))
}

/// A rule with client validation refuses a request without a certificate its CA verified
/// when that is required. (The verified identity is set upstream by `forward::prepare`, which
/// removes a client's own copy with the hop-by-hop headers.)
fn client_certificate(rule: &crate::model::Rule, conn: &ConnCtx) -> Result<(), ProxyError> {
    match &rule.client_validation {
        Some(v) if v.required && headers::verified_client_cert(v, conn).is_none() => {
            Err(ProxyError::ClientCertificateRequired)
        }
        _ => Ok(()),
    }
}

/// The middleware's look at the request head; its answer, if it gives one.
fn before(m: &dyn Middleware, req: &mut Request<ClientBody>) -> Option<Response<ProxyBody>> {
    let (mut parts, body) = std::mem::replace(req, Request::new(ClientBody::empty())).into_parts();
    let answer = m.on_request(&mut parts);
    *req = Request::from_parts(parts, body);
    answer.map(|r| r.map(ProxyBody::full))
}

fn after(m: &dyn Middleware, resp: &mut Response<ProxyBody>) {
    let taken = std::mem::replace(resp, Response::new(ProxyBody::empty()));
    let (mut parts, body) = headers::response_into_parts(taken);
    m.on_response(&mut parts);
    *resp = Response::from_parts(parts, body);
}

/// Serves `req`: its answer is written into `out` and returned there.
async fn serve<'o>(
    service: &Service,
    router: &Router,
    conn: &ConnCtx,
    req: &mut Request<ClientBody>,
    ex: &mut Exchange,
    out: &'o mut Option<Response<ProxyBody>>,
) -> Result<&'o mut Response<ProxyBody>, ProxyError> {
    let started = ex.started();
    let normalized = path::normalize(req.uri().path());
    // (Errors made only when returned: one made eagerly for `ok_or` is dropped on every
    // request, ~20 instructions each.)
    let hit = {
        let Some((host, _)) = headers::request_host(req) else {
            return Err(ProxyError::BadRequest("missing or invalid Host header"));
        };
        let view = RequestView {
            method: req.method(),
            path: normalized.as_deref().unwrap_or(req.uri().path()),
            query: req.uri().query(),
            headers: req.headers(),
        };
        let Some(hit) = router.table.lookup(&host, &view) else {
            return Err(ProxyError::NoRoute);
        };
        hit
    };
    let rule = hit.rule;
    ex.route = rule.label.clone();
    if rule.access.is_some() || !rule.rate_limits.is_empty() || rule.error_responses.is_some() {
        ex.request_id_into(req.headers_mut());
    }
    if rule.https_redirect && conn.scheme == "http" {
        ex.reason = reason::HTTPS_REDIRECT;
        return Ok(out.insert(https_redirect(service, rule, req, normalized.as_deref())?));
    }
    client_certificate(rule, conn)?;
    if let Some(max) = rule.max_request_body_bytes {
        limit_body(req, max)?;
    }
    let matched = &hit.matched.path;

    // Access policies, in this order: IP lists, CORS preflight, authentication, authorization
    // (model::access::ORDER), then rate limits. The route's filters run after them. A rule
    // without access policies pays this one branch.
    let mut cors_origin = None;
    let mut set_cookies = None;
    if let Some(access) = &rule.access {
        match access::check(service, router, rule, access, conn, req).await? {
            access::Passed::On(origin, cookies) => (cors_origin, set_cookies) = (origin, cookies),
            access::Passed::Answered(resp, why) => {
                ex.reason = why;
                return Ok(out.insert(*resp));
            }
        }
    }
    let admitted = rate_limit::check(service, router, rule, conn, req).await?;

    let resp = match &rule.action {
        Action::DirectResponse(d) => {
            ex.reason = reason::DIRECT_RESPONSE;
            out.insert(direct_response(d))
        }
        Action::Redirect(r) => {
            ex.reason = reason::REDIRECT;
            out.insert(redirect(
                r,
                service,
                conn,
                req,
                normalized.as_deref(),
                matched,
            )?)
        }
        Action::Forward { .. } => {
            let mut picked = router.pick_backend(hit.index, rule, req.headers())?;
            // `fallbackBackendRef`: a backend without an endpoint to send to hands its
            // requests over (one branch for rules without it).
            if let Some(fallback) = &rule.fallback_backend
                && !router.backends[picked.backend].has_available_endpoint()
            {
                picked.backend = fallback.index;
            }
            let filters = picked.backend_ref.filters();
            match &filters.answer {
                Some(answer) => {
                    let mut resp = match answer {
                        Answer::DirectResponse(d) => {
                            ex.reason = reason::DIRECT_RESPONSE;
                            direct_response(d)
                        }
                        Answer::Redirect(r) => {
                            ex.reason = reason::REDIRECT;
                            redirect(r, service, conn, req, normalized.as_deref(), matched)?
                        }
                    };
                    for m in &filters.response {
                        m.apply(headers::response_headers(&mut resp));
                    }
                    out.insert(resp)
                }
                None => {
                    let target = forward::Target {
                        service,
                        router,
                        conn,
                        rule,
                        picked,
                        matched,
                        started,
                    };
                    match &rule.error_responses {
                        None => forward::forward(target, req, normalized, ex, out).await?,
                        // Boxed: every rule's request future would carry its state.
                        Some(errors) => {
                            let with_pages = Box::pin(error_page::forward(
                                target, errors, req, normalized, ex, out,
                            ));
                            with_pages.await?
                        }
                    }
                }
            }
        }
    };
    for m in &rule.response_filters {
        m.apply(headers::response_headers(resp));
    }
    if let Some(admitted) = admitted {
        ex.hold_slots(admitted.apply(headers::response_headers(resp)));
    }
    if let Some(access) = &rule.access
        && let Some(cors) = &access.cors
    {
        access::respond(cors, cors_origin.as_ref(), headers::response_headers(resp));
    }
    if let Some(cookies) = set_cookies {
        cookies.apply(resp);
    }
    if let Some(hsts) = &rule.hsts
        && conn.scheme == "https"
    {
        headers::response_headers(resp).insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    Ok(resp)
}

/// `maxRequestBodyBytes`: a longer declared length is refused before anything is asked (as
/// nginx's `client_max_body_size`); a body of unknown length is counted as it is read.
fn limit_body(req: &mut Request<ClientBody>, max: u64) -> Result<(), ProxyError> {
    let hint = req.body().size_hint();
    if hint.lower() > max {
        return Err(ProxyError::BodyTooLarge(max));
    }
    if hint.upper().is_none_or(|n| n > max) {
        let body = std::mem::replace(req.body_mut(), ClientBody::empty());
        *req.body_mut() = ClientBody::limited(body, max);
    }
    Ok(())
}

fn direct_response(d: &DirectResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(d.body.clone()));
    *resp.status_mut() = d.status;
    if !d.body.is_empty() {
        headers::response_headers(&mut resp).insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

fn redirect(
    r: &Redirect,
    service: &Service,
    conn: &ConnCtx,
    req: &Request<ClientBody>,
    normalized: Option<&str>,
    matched: &PathMatcher,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some((host, _)) = headers::request_host(req) else {
        return Err(ProxyError::BadRequest("missing or invalid Host header"));
    };
    let path = normalized.unwrap_or(req.uri().path());
    // The port clients reached the listener on (Gateway API), not the one in their Host header.
    let listener_port = match conn.scheme {
        "https" => service.settings.https_port,
        _ => service.settings.http_port,
    };
    let location = r.location(
        conn.scheme,
        &host,
        listener_port,
        path,
        Some(matched),
        req.uri().query(),
    );
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("cannot build a redirect"))?;
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = r.status;
    headers::response_headers(&mut resp).insert(header::LOCATION, location);
    Ok(resp)
}

/// 308 to the same URL on the HTTPS listener (a rule of a host served over HTTPS that asks for
/// it: `spec.tls.httpsRedirect`, an Ingress's `tls`). An Ingress's drops one trailing `/` of
/// the path and query, as ingress-nginx's does (`/docs/` → `/docs`, `/` → nothing).
fn https_redirect(
    service: &Service,
    rule: &crate::model::Rule,
    req: &Request<ClientBody>,
    normalized: Option<&str>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some((host, _)) = headers::request_host(req) else {
        return Err(ProxyError::BadRequest("missing or invalid Host header"));
    };
    let to = Redirect {
        scheme: Some("https".to_owned()),
        hostname: None,
        port: Some(service.settings.https_port),
        path: None,
        status: http::StatusCode::PERMANENT_REDIRECT,
    };
    let mut path = normalized.unwrap_or(req.uri().path());
    let mut query = req.uri().query();
    if rule.https_redirect_strips_slash {
        match query {
            Some(q) => query = Some(q.strip_suffix('/').unwrap_or(q)),
            None => path = path.strip_suffix('/').unwrap_or(path),
        }
    }
    let location = to.location("http", &host, 0, path, None, query);
    let location = HeaderValue::try_from(location)
        .map_err(|_| ProxyError::BadRequest("cannot build a redirect"))?;
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = to.status;
    headers::response_headers(&mut resp).insert(header::LOCATION, location);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<A, B, C, D, R>(_: fn(A, B, C, D) -> R) -> usize {
        size_of::<R>()
    }

    /// Every open plain connection's task holds this state for its whole life, idle or not
    /// (`bench/scale.sh` measures the memory of idle connections): 8,592 bytes when the TLS
    /// handshake was part of it, 2,888 since, 2,504 with the access log's fields boxed, 1,320
    /// since the response is written from the request's own boxed future, 768 since the
    /// request is built outside the connection's async code and no async fn on the way keeps a
    /// second copy of its arguments, 272 since the idle timer and the drain signal are shared
    /// by the listener's connections and the native server's future is the task's own, 136
    /// since no step of the head reader and no stream handed over is kept beside the wait
    /// (issue #16 aims at 1 KiB for a whole idle connection). tokio allocates the task in
    /// steps of 128 bytes, the future plus 96 bytes of its own plus 8 for the connection
    /// tracker's token: up to 152 bytes, a 256-byte task (280 was a 384-byte one, and ~1,050
    /// bytes of RSS per idle connection instead of ~900).
    #[test]
    fn a_connection_carries_bounded_state() {
        let bytes = transport::Server::<Service>::connection_state_bytes();
        println!("connection state: {bytes} bytes");
        assert!(bytes <= 152, "a connection's future is {bytes} bytes");
    }

    /// The per-request future is boxed, and the box is moved (copied) on every request: its
    /// size is paid in instructions per request (a ClientBody grown by 80 bytes once cost 8,000).
    /// 7,392 → 7,960 bytes (this debug build's layout) when the forwarding headers moved out
    /// of the map into `headers::Added`: −1,500 instructions per request for them, memcpy
    /// included (`bench/callgrind.sh`, release build); 7,656 since the upstream connection in
    /// a response body is a pointer to its state (with 40 bytes of raw header lines added);
    /// 6,152 since the request stays in this future and the steps that need it whole borrow it
    /// (`serve`, `forward`, `prepare`: each kept a moved copy of its own); 4,472 since the
    /// response is written where `handle` keeps it rather than returned through each step
    /// (each kept a copy of its own there too); 4,288 as the native path's (`handle_native`),
    /// which makes the request in this future from the head the server read.
    #[test]
    fn a_request_future_stays_within_its_size() {
        let handle = <Service as transport::Handler>::handle_native;
        let bytes = output_size(
            handle
                as fn(Arc<Service>, Arc<ConnCtx>, transport::h1::NativeHead, Option<Duration>) -> _,
        );
        println!("request future: {bytes} bytes");
        assert!(bytes <= 4_800, "a request's future is {bytes} bytes");
    }
}
